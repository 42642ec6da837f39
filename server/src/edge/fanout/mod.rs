//! Fan-out: from one publish to every local subscriber.
//!
//! - [`hub`]: one thread validates each publish, numbers it, keeps the latest value
//!   per channel, encodes it once and hands it to the workers holding the channel;
//! - [`encoded`]: the encoded message, its envelope framed once plain and once
//!   deflated, shared by every socket;
//! - [`worker`]: each worker thread's subscribers, and its delivery, heartbeat and
//!   drain loops.

pub mod encoded;
pub mod hub;
pub mod worker;
