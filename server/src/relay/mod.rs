//! pushfleet-relay, the publish tier between backends and edges.
//!
//! Publishers push `[channel, event, data]` over ZeroMQ, or POST JSON over HTTP. The
//! relay validates each publish, numbers it within its channel, and forwards it on
//! one XPUB socket to exactly the edges whose clients hold the channel (edges
//! subscribe upstream per channel). Channels are sharded over relays by a stable
//! hash of their name; a publish that reaches a relay not owning its channel is
//! handed to the owner once.
//!
//! - [`core`]: the thread that owns every ZeroMQ socket and routes each message;
//! - [`interest`]: which channels edges hold, and their sequence counters;
//! - [`shards`]: the relay set and who owns a channel;
//! - [`http`]: the HTTP publish API; [`metrics`]: `/stats` and StatsD;
//! - [`config`]: flags; [`mod@run`]: wiring, etcd registration and shutdown.

pub mod config;
pub mod core;
pub mod http;
pub mod interest;
pub mod metrics;
pub mod run;
pub mod shards;

pub use config::RelayConfig;
pub use run::run;
