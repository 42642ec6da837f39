//! The WebSocket wire codec, with no I/O, written from RFC 6455 and RFC 7692:
//!
//! - [`frame`]: encoding of server frames and a streaming decoder that turns client
//!   bytes into validated, reassembled (and inflated) messages;
//! - [`deflate`]: permessage-deflate compression of outgoing messages, done once per
//!   message so the bytes can be shared by every compressed socket, and bounded
//!   inflation of incoming ones;
//! - [`extension`]: negotiation of permessage-deflate from `Sec-WebSocket-Extensions`.
//!
//! Keeping the codec free of sockets and timers lets it be tested byte for byte and
//! lets the connection task decide how to buffer and batch.

pub mod deflate;
pub mod extension;
pub mod frame;

pub use deflate::{deflate_message, InflateError, Inflater};
pub use extension::{negotiate_permessage_deflate, Agreed};
pub use frame::{
    close_code, encode_close, encode_frame, encode_frame_into, Decoder, DecoderConfig, Message,
    OpCode, ProtocolError,
};
