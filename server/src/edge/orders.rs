//! Orders an edge takes from etcd. For now one: drain. When herald scales the fleet
//! in, it writes `<prefix>/drain/<edge id>` ([`pushfleet_fleet::orders`]); the edge
//! drains exactly as on SIGTERM or `POST /drain` (reconnect hints spread over
//! `--drain-spread`, exit when empty or at `--drain-timeout`), reports `draining` at
//! once, and leaves etcd on exit.

use std::sync::Arc;

use pushfleet_fleet::orders::drain_ordered;
use tracing::info;

use super::state::Shared;

/// Follows drain orders until the process ends; drains when this edge is named.
pub async fn follow(shared: Arc<Shared>, endpoints: Vec<String>, prefix: String, id: String) {
    let reason = drain_ordered(endpoints, &prefix, &id).await;
    if shared.drain.start() {
        info!(%reason, "drain ordered through etcd: draining");
    }
}
