//! herald's decisions, with no I/O: each is a function of what etcd shows and of the
//! time, tested on its own.
//!
//! - [`fleet`]: the edges' load reports as etcd shows them;
//! - [`score`]: from reports to a load score and a weight per edge;
//! - [`scale`]: when to grow or shrink the fleet, with hysteresis and cooldowns;
//! - [`slots`]: which HAProxy server-template slot holds which edge, and the runtime
//!   commands that get there.

#[cfg(test)]
mod fixtures;
pub mod fleet;
pub mod scale;
pub mod score;
pub mod slots;
