//! One client connection, from upgrade to close.
//!
//! - [`upgrade`]: the WebSocket handshake on the raw socket, and the hand-over to a
//!   worker;
//! - [`session`]: what the edge knows of a connection (subscriptions, liveness);
//! - [`outbox`]: its bounded send queue with the slow-client policy;
//! - [`task`]: the connection's single I/O task: writes the outbox, reads, decodes
//!   and answers the client's frames.

pub mod outbox;
pub mod session;
pub mod task;
pub mod upgrade;
