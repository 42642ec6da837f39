//! Drain orders herald writes to etcd (`<prefix>/drain/<edge id>`): the edge named
//! drains as soon as it sees its key (see the edge's `orders` module). The value is
//! the reason, for people reading etcd. Orders are deleted once the edge is gone.

use pushfleet_protocol::registry::drain_key;
use pushfleet_server::etcd::{self, EtcdError};

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
