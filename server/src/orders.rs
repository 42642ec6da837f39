//! Orders an edge takes from etcd. For now one: drain. When herald scales the fleet
//! in, it writes `<prefix>/drain/<edge id>`; the edge drains exactly as on SIGTERM
//! or `POST /drain` (reconnect hints spread over `--drain-spread`, exit when empty
//! or at `--drain-timeout`), reports `draining` at once, and leaves etcd on exit.

use std::sync::Arc;

use pushfleet_protocol::registry::drain_prefix;
use tokio::sync::watch;
use tracing::info;

use crate::etcd::{self, Records};
use crate::state::Shared;

/// Follows `<prefix>/drain/` until the process ends; drains when this edge is named.
pub async fn follow(shared: Arc<Shared>, endpoints: Vec<String>, prefix: String, id: String) {
    let (records_tx, mut records) = watch::channel(Records::new());
    // Never set: the follower ends with the process.
    let (_keep, shutdown) = watch::channel(false);
    tokio::spawn(etcd::follow_prefix(
        endpoints,
        drain_prefix(&prefix),
        records_tx,
        shutdown,
    ));
    while records.changed().await.is_ok() {
        let reason = records.borrow_and_update().get(&id).cloned();
        if let Some(reason) = reason {
            if shared.drain.start() {
                info!(%reason, "drain ordered through etcd: draining");
            }
            return;
        }
    }
}
