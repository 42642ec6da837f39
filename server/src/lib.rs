//! pushfleet-server: the data path's binaries, one folder per part. A publish goes
//!
//! ```text
//! publisher ──ZeroMQ PUSH / HTTP──► relay ──XPUB, per channel──► edge ──WebSocket──► client
//! ```
//!
//! - [`publisher`]: the Rust publishing library and the `pushfleet-publish` command;
//! - [`relay`]: `pushfleet-relay`, which validates, numbers and forwards each publish
//!   to exactly the edges that hold its channel;
//! - [`edge`]: `pushfleet-server`, which takes publishes off ZeroMQ, encodes each
//!   once and writes the same bytes to every subscribed WebSocket.
//!
//! What every binary shares with herald (etcd, drain orders, StatsD, Prometheus text,
//! metric catalogues, CLI and signals) is the `pushfleet-fleet` crate; wire formats
//! are `pushfleet-protocol`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod edge;
pub mod publisher;
pub mod relay;
