//! Leader election through etcd, for the actions that must happen once (HAProxy
//! runtime pushes, later autoscaling). Every instance tries to create
//! `<prefix>/herald/leader` under its own lease in one transaction; the one that
//! succeeds leads for as long as it keeps the lease alive. When the leader dies its
//! lease expires, the key goes, and the next attempt of another instance wins.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp, TxnOpResponse};
use pushfleet_fleet::etcd::{connect, stopped, EtcdError, RETRY};
use tokio::sync::watch;
use tracing::{info, warn};

/// How often a follower tries again, and a leader renews its lease.
const ROUND: Duration = Duration::from_secs(1);

/// The election key.
pub fn leader_key(prefix: &str) -> String {
    format!("{}/herald/leader", prefix.trim_end_matches('/'))
}

/// Campaigns until `shutdown`; `leader` says whether this instance leads.
pub async fn campaign(
    endpoints: Vec<String>,
    prefix: String,
    id: String,
    ttl: Duration,
    leader: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let key = leader_key(&prefix);
    loop {
        tokio::select! {
            result = round(&endpoints, &key, &id, ttl, &leader) => {
                if let Err(e) = result {
                    warn!(error = %e, "leader election lost etcd; not leading until it is back");
                }
            }
            _ = stopped(&mut shutdown) => {
                leader.send_replace(false);
                return;
            }
        }
        leader.send_replace(false);
        tokio::time::sleep(RETRY).await;
    }
}

async fn round(
    endpoints: &[String],
    key: &str,
    id: &str,
    ttl: Duration,
    leader: &watch::Sender<bool>,
) -> Result<(), EtcdError> {
    let mut client = connect(endpoints).await?;
    let lease = client
        .lease_grant(ttl.as_secs().max(2) as i64, None)
        .await?
        .id();
    let (mut keeper, mut acks) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(ROUND);
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        match acks.message().await? {
            Some(ack) if ack.ttl() > 0 => {}
            _ => return Err(EtcdError::LeaseLost),
        }
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                id,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = client.txn(txn).await?;
        let leading = response.succeeded()
            || response.op_responses().iter().any(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().iter().any(|kv| kv.value() == id.as_bytes()),
                _ => false,
            });
        if leading != *leader.borrow() {
            if leading {
                info!(%id, "leading: this instance pushes weights to HAProxy");
            } else {
                info!(%id, "following: another instance leads");
            }
            leader.send_replace(leading);
        }
    }
}
