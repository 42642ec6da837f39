//! The edge (`pushfleet-server`): accepts WebSocket clients, subscribes upstream over
//! ZeroMQ to exactly the channels they hold, and fans each publish out to them,
//! encoded, framed and compressed once. A publish's way through, folder by folder:
//!
//! 1. [`ingress`]: the ZeroMQ SUB socket's owner thread (publishes enter here);
//! 2. [`fanout`]: the hub (validation, sequence numbers, latest values, encode once)
//!    and the worker threads holding each channel's local subscribers;
//! 3. [`connection`]: one socket's upgrade, session, bounded outbox and I/O task;
//! 4. [`codec`]: RFC 6455 frames and RFC 7692 permessage-deflate on the wire.
//!
//! Around it: [`http`] (routes, demo page), [`telemetry`] (counters, latency,
//! StatsD, the load report herald balances on), [`orders`] (drain orders from etcd),
//! [`config`] (flags), [`state`] (what threads share), [`mod@run`] (wiring and shutdown).

pub mod codec;
pub mod config;
pub mod connection;
pub mod fanout;
pub mod http;
pub mod ingress;
pub mod orders;
pub mod run;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use run::run;
