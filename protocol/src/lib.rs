//! Wire formats shared by every pushfleet binary, with no I/O:
//!
//! - [`channel`]: what a channel name may look like;
//! - [`client`]: the JSON protocol between a WebSocket client and an edge
//!   (requests, acks, errors, hints) and the message envelope clients receive;
//! - [`publish`]: the ZeroMQ multipart publish format `[channel, event, data(, seq)]`;
//! - [`shard`]: which relay owns a channel;
//! - [`registry`]: the etcd key layout and the records under it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

/// The metric tags of an enum's variants, `[&str; N]` built at compile time from its
/// `ALL` array and its `const fn as_str`: one list of variants, never two to keep in
/// step.
#[macro_export]
macro_rules! tags_of {
    ($all:expr) => {{
        let mut tags = [""; $all.len()];
        let mut i = 0;
        while i < tags.len() {
            tags[i] = $all[i].as_str();
            i += 1;
        }
        tags
    }};
}

pub mod channel;
pub mod client;
pub mod publish;
pub mod registry;
pub mod shard;

pub use channel::{validate_channel, ChannelError, MAX_CHANNEL_LEN};
pub use client::{ErrorCode, Request, RequestError, RequestId};
pub use publish::{Publish, PublishError};
