//! herald: feedback load balancing for pushfleet edges.
//!
//! Edges keep their real load in etcd (`<prefix>/edges/<id>`, a
//! [`LoadReport`](pushfleet_protocol::registry::LoadReport)). herald follows those
//! reports, scores each edge from several signals, and turns the scores into HAProxy
//! weights: a hot edge gets less new traffic, a cool one more.
//!
//! - [`haproxy`]: the HAProxy runtime API client (weights, states, addresses).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod haproxy;
