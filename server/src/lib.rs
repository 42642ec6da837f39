//! pushfleet-server, the edge: accepts WebSocket clients, subscribes upstream over
//! ZeroMQ to exactly the channels they hold, and fans each publish out to them,
//! encoded, framed and compressed once.
//!
//! Where things happen:
//! - [`ingress`]: the ZeroMQ SUB socket's owner task (publishes enter here);
//! - [`hub`]: validation, sequence numbers, latest values, encode-once, hand-off to workers;
//! - [`worker`]: each worker thread's subscribers and its delivery, heartbeat and drain loops;
//! - [`upgrade`]: the WebSocket handshake on the raw socket;
//! - [`session`]: one connection's I/O task; [`outbox`]: its bounded send queue;
//! - [`codec`]: RFC 6455 frames and RFC 7692 permessage-deflate;
//! - [`http`]: routes, [`demo`]: the demo page; [`metrics`], [`histogram`], [`reporter`]: `/stats` and StatsD;
//!   [`prometheus`]: the text format of `GET /metrics` (edge admin, relay, herald);
//! - [`load`]: the load report kept in etcd for herald; [`orders`]: drain orders from etcd;
//! - [`config`]: flags; [`state`]: what threads share; [`run`]: wiring and shutdown.
//!
//! The same crate holds the relay ([`relay`], binary `pushfleet-relay`), the Rust
//! publishing API ([`publisher`], binary `pushfleet-publish`), and what they share:
//! [`etcd`] (registration and discovery), [`statsd`], [`cli`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod codec;
pub mod config;
pub mod demo;
pub mod etcd;
pub mod histogram;
pub mod http;
pub mod hub;
pub mod ingress;
pub mod load;
pub mod metrics;
pub mod orders;
pub mod outbox;
pub mod prometheus;
pub mod published;
pub mod publisher;
pub mod relay;
pub mod reporter;
pub mod run;
pub mod session;
pub mod state;
pub mod statsd;
pub mod upgrade;
pub mod worker;

pub use config::Config;
pub use run::run;
