//! herald: feedback load balancing for pushfleet edges.
//!
//! Edges keep their real load in etcd (`<prefix>/edges/<id>`, a
//! [`LoadReport`](pushfleet_protocol::registry::LoadReport)). herald follows those
//! reports, scores each edge from several signals, and turns the scores into HAProxy
//! weights: a hot edge gets less new traffic, a cool one more.
//!
//! - [`fleet`]: the reports as etcd shows them; [`score`]: the policy, from reports
//!   to weights (no I/O);
//! - [`agent`]: the HAProxy agent-check server; [`election`]: leadership via etcd;
//! - [`state`]: what the tasks share; [`http`]: `/status` and the live page;
//! - [`slots`]: which server-template slot holds which edge, and the runtime
//!   commands to get there; [`haproxy`]: the runtime API client;
//! - [`scale`]: when to grow or shrink the fleet; [`actuate`]: carrying it out;
//!   [`orders`]: drain orders in etcd; [`aws`]: the EC2 Auto Scaling calls;
//!   [`lifecycle`]: draining instances the termination hook holds;
//! - [`config`]: flags; [`run`]: wiring.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actuate;
pub mod agent;
pub mod aws;
pub mod config;
pub mod election;
#[cfg(test)]
mod fixtures;
pub mod fleet;
pub mod haproxy;
pub mod http;
pub mod lifecycle;
pub mod orders;
pub mod push;
pub mod run;
pub mod scale;
pub mod score;
pub mod slots;
pub mod state;
