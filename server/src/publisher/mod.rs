//! Publishing from Rust: [`Publisher`] sends each publish straight to the relay that
//! owns its channel (the shard rule in [`pushfleet_protocol::shard`]), over one
//! ZeroMQ PUSH socket per relay.
//!
//! ```no_run
//! use pushfleet_server::publisher::Publisher;
//! let mut publisher = Publisher::new(vec!["tcp://127.0.0.1:5560".into()])?;
//! publisher.wait_connected(std::time::Duration::from_secs(3))?;
//! publisher.publish("ticker_INR", "tick", r#"{"price":83.12}"#)?;
//! # Ok::<(), pushfleet_server::publisher::PublisherError>(())
//! ```
//!
//! PUSH, not PUB: a relay that is restarting or briefly unreachable makes the socket
//! queue (up to [`SEND_QUEUE`] messages) instead of dropping silently, and a full
//! queue is reported as [`PublisherError::Busy`]. The relay set can be fixed, or
//! followed in etcd with [`EtcdRelays`]; channels move with the set.

//!
//! - [`sender`]: [`Publisher`], the sockets and the shard rule;
//! - [`relays`]: [`EtcdRelays`], the relay set followed in etcd;
//! - [`cli`]: the `pushfleet-publish` command.

pub mod cli;
pub mod relays;
pub mod sender;

pub use relays::EtcdRelays;
pub use sender::{Publisher, PublisherError, LINGER, MAX_DATA, SEND_QUEUE};
