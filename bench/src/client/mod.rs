//! The WebSocket subscribers: one lightweight task per connection on the
//! single-threaded reader runtime, all sharing one [`Shared`] through an `Rc`
//! (no locks, no atomics: everything runs on one thread).
//!
//! Each task connects (retrying a few times), does the handshake, sends one
//! subscribe, then loops: read into an 8 KiB buffer (grown only if a frame
//! needs it), decode every complete frame in place, answer pings, and hand
//! text messages to [`Shared::on_message`]. That classifies a message with a
//! few byte searches (no JSON parse): subscribe ack, error reply, probe, or
//! a tick whose `"t":` (publish time) and `"n":` (publish index) are read
//! directly. The receive time is taken once per `read()`, so latency is
//! publish → bytes read by the load tool.
//!
//! Modules:
//! * [`round`]: the counters of one measurement round ([`Round`], [`Counts`]).
//! * [`shared`]: the state all tasks share ([`Shared`]) and [`quiesce`].
//! * [`message`]: classifying and counting one data message.
//! * [`handshake`]: connect + HTTP upgrade, with retries.
//! * [`conn`]: one connection's task: subscribe, read loop, frame handling.
//! * [`connect`]: opening every connection, paced ([`open_all`]).

mod conn;
mod connect;
mod handshake;
mod message;
mod round;
mod shared;

pub use connect::open_all;
pub use round::{Counts, Round};
pub use shared::{quiesce, Shared};

use crate::ws::WsUrl;
use std::net::SocketAddr;
use std::time::Duration;

/// Size of a connection's read buffer; it grows only for bigger frames.
const READ_BUF: usize = 8 * 1024;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// The `ws://` URL.
    pub url: WsUrl,
    /// Ask for permessage-deflate.
    pub compress: bool,
    /// Number of channels; connection `i` subscribes to `i % channels`.
    pub channels: usize,
    /// Channel name prefix.
    pub prefix: String,
    /// Connect + handshake attempts per connection.
    pub attempts: u32,
    /// Timeout of one connect + handshake attempt.
    pub handshake_timeout: Duration,
}

/// A tick envelope as the server sends it, on channel `bench-3`.
#[cfg(test)]
fn test_tick(n: u64, t: u64) -> Vec<u8> {
    format!(
        "{{\"channel\":\"bench-3\",\"event\":\"tick\",\"data\":{{\"t\":{t},\"n\":{n},\"p\":\"AAPL b=1.2\"}},\"seq\":{n}}}"
    )
    .into_bytes()
}
