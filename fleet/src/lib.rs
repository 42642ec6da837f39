//! pushfleet-fleet: the plumbing every pushfleet binary shares (edge, relay,
//! publisher CLI and herald), kept apart from the data path so herald links none of
//! the edge's WebSocket or ZeroMQ stack.
//!
//! - [`etcd`]: the fleet's directory: keep a record registered under a lease, follow
//!   every record under a prefix;
//! - [`orders`]: drain orders herald writes and edges follow;
//! - [`catalogue`]: one table of metrics per binary, rendered as `/stats` JSON,
//!   Prometheus text and StatsD; [`statsd`]: the StatsD client;
//!   [`prometheus`]: the text exposition format;
//! - [`cli`]: flags to a typed config, exit codes, logging; [`flags`]: value parsers
//!   flags share; [`signals`]: SIGTERM and SIGINT.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod catalogue;
pub mod cli;
pub mod etcd;
pub mod flags;
pub mod orders;
pub mod prometheus;
pub mod signals;
pub mod statsd;
