//! The edge's HTTP side: [`routes`] of the public and admin listeners, [`demo`] (the
//! demo page and browser client with `--demo`), and the JSON [`errors`] they answer.
//! WebSocket upgrades never reach these routes: [`super::connection::upgrade`] takes
//! them with the raw socket.

use std::sync::Arc;

use actix_web::web;

use super::state::Shared;

pub mod demo;
pub mod errors;
pub mod routes;

/// What every handler gets: the edge's shared state.
pub type SharedData = web::Data<Arc<Shared>>;
