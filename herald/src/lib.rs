//! herald: feedback load balancing for pushfleet edges.
//!
//! Edges keep their real load in etcd (`<prefix>/edges/<id>`, a
//! [`LoadReport`](pushfleet_protocol::registry::LoadReport)). herald follows those
//! reports, scores each edge from several signals, and turns the scores into HAProxy
//! weights: a hot edge gets less new traffic, a cool one more. It also decides when
//! the fleet grows or shrinks, and drains the edges it releases.
//!
//! Two folders, so the decisions can be read and tested without any I/O:
//! - [`policy`] (pure): the fleet as etcd shows it, the score from reports to weights,
//!   when to scale, and which HAProxy slot holds which edge;
//! - [`io`]: everything that talks to the world: the HAProxy runtime API and agent
//!   checks, the etcd election, drain orders' actuation, EC2 Auto Scaling, the
//!   lifecycle hook, and the status page;
//!
//! and around them [`state`] (what the tasks share), [`metrics`] (the catalogue of
//! what herald exports), [`config`] (flags) and [`run`] (wiring and the evaluate loop).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod io;
pub mod metrics;
pub mod policy;
pub mod run;
pub mod state;
