//! Wire formats shared by every pushfleet binary, with no I/O:
//!
//! - [`channel`]: what a channel name may look like;
//! - [`client`]: the JSON protocol between a WebSocket client and an edge
//!   (requests, acks, errors, hints) and the message envelope clients receive;
//! - [`publish`]: the ZeroMQ multipart publish format `[channel, event, data(, seq)]`;
//! - [`shard`]: which relay owns a channel;
//! - [`registry`]: the etcd key layout and the records under it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod channel;
pub mod client;
pub mod publish;
pub mod registry;
pub mod shard;

pub use channel::{validate_channel, ChannelError, MAX_CHANNEL_LEN};
pub use client::{ErrorCode, Request, RequestError, RequestId};
pub use publish::{Publish, PublishError};
