//! etcd, the fleet's directory: keep a record registered under a lease, and follow
//! every record under a prefix.
//!
//! Both loops outlive etcd outages by themselves. They retry every [`RETRY`]; a
//! registration puts its record back under a fresh lease when etcd returns, and a
//! follower resumes its watch from the last revision it applied (or, if etcd lost
//! that history, reads the prefix again and watches from there). While etcd is away a follower keeps the last map it knew (fail-static):
//! the fleet goes on with what it had rather than with nothing. Debian's etcd 3.4
//! lacks `RangeStream`, so only Range, Put, the lease calls and Watch are used.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Pause before trying etcd again after a failure.
pub const RETRY: Duration = Duration::from_secs(1);
/// Bound on one unary call (connect, get, put, grant, revoke): an etcd that does not
/// answer within it is treated as down.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive on the etcd connection, so a watch on a vanished etcd fails
/// within seconds instead of hanging until TCP gives up.
const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Why one session with etcd ended.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer {0} within {CALL_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("the lease expired or was revoked")]
    LeaseLost,
    #[error("the watch was cancelled by etcd (revision compacted?)")]
    WatchCancelled,
    #[error("the {0} stream ended")]
    StreamEnded(&'static str),
}

async fn timed<T, F>(what: &'static str, call: F) -> Result<T, EtcdError>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| EtcdError::Timeout(what))?
        .map_err(EtcdError::from)
}

/// Connects to the first etcd endpoint that answers.
pub async fn connect(endpoints: &[String]) -> Result<Client, EtcdError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_keep_alive(KEEP_ALIVE, KEEP_ALIVE)
        .with_keep_alive_while_idle(true);
    timed("connect", Client::connect(endpoints, Some(options))).await
}

/// Waits until `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Keeps `key` = the latest `value` in etcd under a lease of `ttl` until `shutdown`,
/// then revokes the lease so the record disappears at once rather than after `ttl`.
/// The record is rewritten whenever `value` changes.
pub async fn keep_registered(
    endpoints: Vec<String>,
    key: String,
    mut value: watch::Receiver<String>,
    ttl: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let session = register_once(&endpoints, &key, &mut value, ttl, &mut shutdown);
        match session.await {
            Ok(()) => return,
            Err(e) => warn!(%key, error = %e, "etcd registration lost; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn register_once(
    endpoints: &[String],
    key: &str,
    value: &mut watch::Receiver<String>,
    ttl: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), EtcdError> {
    let mut client = connect(endpoints).await?;
    let ttl_secs = ttl.as_secs().max(1) as i64;
    let lease = timed("lease grant", client.lease_grant(ttl_secs, None))
        .await?
        .id();
    let (mut keeper, mut acks) = timed("keep-alive", client.lease_keep_alive(lease)).await?;
    let put = |client: &mut Client, text: String| {
        let mut client = client.clone();
        let key = key.to_owned();
        async move {
            let options = PutOptions::new().with_lease(lease);
            timed("put", client.put(key, text, Some(options))).await
        }
    };
    let current = value.borrow_and_update().clone();
    put(&mut client, current).await?;
    info!(%key, lease, "registered in etcd");
    let mut tick = tokio::time::interval(Duration::from_secs(ttl_secs as u64) / 3);
    let mut last_ack = Instant::now();
    let mut value_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if last_ack.elapsed() > ttl {
                    return Err(EtcdError::LeaseLost);
                }
                keeper.keep_alive().await?;
            }
            ack = acks.message() => match ack? {
                Some(ack) if ack.ttl() > 0 => last_ack = Instant::now(),
                Some(_) => return Err(EtcdError::LeaseLost),
                None => return Err(EtcdError::StreamEnded("keep-alive")),
            },
            changed = value.changed(), if value_open => {
                if changed.is_err() {
                    // The owner will not change the value again: keep the record
                    // alive as it is until shutdown.
                    value_open = false;
                } else {
                    let current = value.borrow_and_update().clone();
                    put(&mut client, current).await?;
                }
            }
            _ = stopped(shutdown) => {
                match timed("revoke", client.lease_revoke(lease)).await {
                    Ok(_) => info!(%key, "deregistered from etcd"),
                    Err(e) => debug!(%key, error = %e, "lease revoke failed; it expires by itself"),
                }
                return Ok(());
            }
        }
    }
}

/// Key (with the prefix removed) → value of every record under a prefix.
pub type Records = BTreeMap<String, String>;

/// What a follower keeps between sessions with etcd.
#[derive(Debug, Default)]
struct Followed {
    map: Records,
    /// The last revision applied: a new session resumes watching right after it, so
    /// nothing that happened while etcd was away is missed and nothing is re-read.
    /// `None` when a full read is needed (first start, compaction, a lost history).
    revision: Option<i64>,
}

/// Follows every key under `prefix` until `shutdown`, publishing the whole map on
/// `records` whenever it changes: one range read, then a watch from the next
/// revision; after an error or an etcd restart, the watch resumes from the last
/// revision seen (a full read again only if etcd no longer has that history).
pub async fn follow_prefix(
    endpoints: Vec<String>,
    prefix: String,
    records: watch::Sender<Records>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut followed = Followed::default();
    loop {
        tokio::select! {
            result = follow_once(&endpoints, &prefix, &records, &mut followed) => {
                if let Err(e) = result {
                    warn!(%prefix, error = %e, "etcd watch lost; keeping the last known records and retrying");
                }
            }
            _ = stopped(&mut shutdown) => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(&mut shutdown) => return,
        }
    }
}

async fn follow_once(
    endpoints: &[String],
    prefix: &str,
    records: &watch::Sender<Records>,
    followed: &mut Followed,
) -> Result<(), EtcdError> {
    let mut client = connect(endpoints).await?;
    // Whatever happens next, a failure before the watch is established again means
    // the next session starts from a full read.
    let resume = followed.revision.take();
    let start = match resume {
        Some(revision) => {
            debug!(%prefix, revision, "resuming the etcd watch");
            revision + 1
        }
        None => {
            let listing = timed(
                "get",
                client.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
            let revision = listing.header().map_or(0, |h| h.revision());
            followed.map.clear();
            for kv in listing.kvs() {
                if let Some(name) = strip(prefix, kv.key()) {
                    followed
                        .map
                        .insert(name, String::from_utf8_lossy(kv.value()).into_owned());
                }
            }
            publish(records, &followed.map);
            debug!(%prefix, revision, count = followed.map.len(), "etcd records loaded");
            revision + 1
        }
    };
    let options = WatchOptions::new().with_prefix().with_start_revision(start);
    let mut stream = timed("watch", client.watch(prefix, Some(options))).await?;
    let mut applied = start - 1;
    followed.revision = Some(applied);
    loop {
        let Some(response) = stream.message().await? else {
            return Err(EtcdError::StreamEnded("watch"));
        };
        if response.canceled() {
            // Compacted past our revision, or a new etcd without our history:
            // only a full read can tell what the records are now.
            followed.revision = None;
            return Err(EtcdError::WatchCancelled);
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            applied = applied.max(kv.mod_revision());
            let Some(name) = strip(prefix, kv.key()) else {
                continue;
            };
            match event.event_type() {
                EventType::Put => {
                    followed
                        .map
                        .insert(name, String::from_utf8_lossy(kv.value()).into_owned());
                }
                EventType::Delete => {
                    followed.map.remove(&name);
                }
            }
        }
        followed.revision = Some(applied);
        publish(records, &followed.map);
    }
}

fn strip(prefix: &str, key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix(prefix).map(str::to_owned)
}

fn publish(records: &watch::Sender<Records>, map: &Records) {
    records.send_if_modified(|current| {
        if current == map {
            false
        } else {
            current.clone_from(map);
            true
        }
    });
}

/// The well-formed relay records among `records` (a malformed one is logged and skipped).
pub fn relay_records(records: &Records) -> Vec<pushfleet_protocol::registry::RelayRecord> {
    records
        .iter()
        .filter_map(|(key, value)| match serde_json::from_str(value) {
            Ok(record) => Some(record),
            Err(e) => {
                warn!(%key, error = %e, "ignoring a malformed relay record");
                None
            }
        })
        .collect()
}
