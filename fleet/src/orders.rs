//! Drain orders in etcd (`<prefix>/drain/<edge id>`): herald writes one when it
//! scales the fleet in, the edge named drains as soon as it sees its key. The value
//! is the reason, for people reading etcd. Orders are deleted once the edge is gone.

use pushfleet_protocol::registry::{drain_key, drain_prefix};
use tokio::sync::watch;

use crate::etcd::{self, EtcdError, Records};

/// Tells `edge` to drain.
pub async fn order_drain(
    endpoints: &[String],
    prefix: &str,
    edge: &str,
    reason: &str,
) -> Result<(), EtcdError> {
    let mut client = etcd::connect(endpoints).await?;
    client.put(drain_key(prefix, edge), reason, None).await?;
    Ok(())
}

/// Deletes the drain order for `edge` (it has left).
pub async fn clear_drain(endpoints: &[String], prefix: &str, edge: &str) -> Result<(), EtcdError> {
    let mut client = etcd::connect(endpoints).await?;
    client.delete(drain_key(prefix, edge), None).await?;
    Ok(())
}

/// Follows `<prefix>/drain/` (through etcd outages) and returns the reason once an
/// order names `edge`; never returns if none does.
pub async fn drain_ordered(endpoints: Vec<String>, prefix: &str, edge: &str) -> String {
    let (records_tx, mut records) = watch::channel(Records::new());
    // Never set: the follower ends when this future is dropped or returns.
    let (_keep, shutdown) = watch::channel(false);
    tokio::spawn(etcd::follow_prefix(
        endpoints,
        drain_prefix(prefix),
        records_tx,
        shutdown,
    ));
    while records.changed().await.is_ok() {
        let reason = records.borrow_and_update().get(edge).cloned();
        if let Some(reason) = reason {
            return reason;
        }
    }
    std::future::pending().await
}
