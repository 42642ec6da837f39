//! The relay's counters and gauges: shown on `/stats` and sent to StatsD every
//! second as `<prefix>.relay.<relay id>.<name>` (catalogue: `monitoring/METRICS.md`).
//!
//! Stage accounting: every publish the relay receives ends in exactly one of
//! `forwarded`, `to_owner` (handed to the relay that owns its channel),
//! `no_subscribers`, or `dropped.<reason>`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use cadence::{Counted, Gauged, StatsdClient};
use serde_json::{json, Value};

use crate::prometheus::{Exposition, Kind};

/// Why a publish was dropped: the [`pushfleet_protocol::publish::REASONS`] of
/// malformed publishes, then `owner_unavailable` (the owning relay could not take
/// it: not connected, or its queue full).
pub const DROP_REASONS: [&str; 8] = {
    let r = pushfleet_protocol::publish::REASONS;
    [
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        "owner_unavailable",
    ]
};

/// Reporting interval.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Written by the relay's core thread (and the HTTP handlers for `http_*`).
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Publishes read from the ZeroMQ publish socket (publishers and peer relays).
    pub received_zmq: AtomicU64,
    /// Of those, publishes another relay handed over because this one owns the channel.
    pub received_from_peer: AtomicU64,
    /// Publishes accepted over HTTP.
    pub received_http: AtomicU64,
    /// Messages sent to the edges (once per message, however many edges hold it).
    pub forwarded: AtomicU64,
    /// Messages handed to the relay that owns their channel.
    pub to_owner: AtomicU64,
    /// Messages no edge wanted.
    pub no_subscribers: AtomicU64,
    dropped: [AtomicU64; DROP_REASONS.len()],
    /// HTTP requests refused with an error status.
    pub http_rejected: AtomicU64,
    /// Channels some edge holds.
    pub channels: AtomicU64,
    /// Edge connections on the edge-facing socket.
    pub edges: AtomicU64,
    /// Relays in the shard set (0: this relay serves every channel).
    pub relays: AtomicU64,
}

impl RelayMetrics {
    /// Counts a drop; unknown reasons count as `frames` (never happens: reasons are
    /// the constants above).
    pub fn drop_for(&self, reason: &str) {
        let i = DROP_REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[i].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: &str) -> u64 {
        DROP_REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.dropped[i].load(Relaxed))
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("received.zmq".to_owned(), self.received_zmq.load(Relaxed)),
            (
                "received.from_peer".to_owned(),
                self.received_from_peer.load(Relaxed),
            ),
            ("received.http".to_owned(), self.received_http.load(Relaxed)),
            ("forwarded".to_owned(), self.forwarded.load(Relaxed)),
            ("to_owner".to_owned(), self.to_owner.load(Relaxed)),
            (
                "no_subscribers".to_owned(),
                self.no_subscribers.load(Relaxed),
            ),
            ("http.rejected".to_owned(), self.http_rejected.load(Relaxed)),
        ];
        for (reason, c) in DROP_REASONS.iter().zip(&self.dropped) {
            out.push((format!("dropped.{reason}"), c.load(Relaxed)));
        }
        out
    }

    fn gauges(&self) -> [(&'static str, u64); 3] {
        [
            ("channels", self.channels.load(Relaxed)),
            ("edges", self.edges.load(Relaxed)),
            ("relays", self.relays.load(Relaxed)),
        ]
    }

    /// The `/stats` body.
    pub fn to_json(&self, relay_id: &str, publish: &str, edges: &str) -> Value {
        let dropped: serde_json::Map<String, Value> = DROP_REASONS
            .iter()
            .zip(&self.dropped)
            .map(|(r, c)| ((*r).to_owned(), json!(c.load(Relaxed))))
            .collect();
        json!({
            "relay_id": relay_id,
            "publish_endpoint": publish,
            "edge_endpoint": edges,
            "received": {
                "zmq": self.received_zmq.load(Relaxed),
                "from_peer": self.received_from_peer.load(Relaxed),
                "http": self.received_http.load(Relaxed),
            },
            "forwarded": self.forwarded.load(Relaxed),
            "to_owner": self.to_owner.load(Relaxed),
            "no_subscribers": self.no_subscribers.load(Relaxed),
            "dropped": dropped,
            "http_rejected": self.http_rejected.load(Relaxed),
            "channels": self.channels.load(Relaxed),
            "edges": self.edges.load(Relaxed),
            "relays": self.relays.load(Relaxed),
        })
    }
}

impl RelayMetrics {
    /// The `GET /metrics` exposition: the figures of `/stats`, each labelled
    /// `relay="<relay id>"` (names in `monitoring/METRICS.md`).
    pub fn to_prometheus(&self, relay_id: &str) -> String {
        let load = |c: &AtomicU64| c.load(Relaxed);
        let mut e = Exposition::new("pushfleet_relay", &[("relay", relay_id)]);
        e.family(
            Kind::Counter,
            "received_total",
            "Publishes received, by source (from_peer is part of zmq).",
        )
        .sample(&[("source", "zmq")], load(&self.received_zmq) as f64)
        .sample(
            &[("source", "from_peer")],
            load(&self.received_from_peer) as f64,
        )
        .sample(&[("source", "http")], load(&self.received_http) as f64)
        .counter(
            "forwarded_total",
            "Messages sent to the edges (once per message).",
            load(&self.forwarded),
        )
        .counter(
            "to_owner_total",
            "Publishes handed to the relay that owns their channel.",
            load(&self.to_owner),
        )
        .counter(
            "no_subscribers_total",
            "Publishes for channels no edge holds.",
            load(&self.no_subscribers),
        )
        .family(
            Kind::Counter,
            "dropped_total",
            "Publishes dropped, by reason.",
        );
        for (reason, c) in DROP_REASONS.iter().zip(&self.dropped) {
            e.sample(&[("reason", reason)], load(c) as f64);
        }
        e.counter(
            "http_rejected_total",
            "HTTP requests answered with an error status.",
            load(&self.http_rejected),
        )
        .gauge(
            "channels",
            "Channels some edge holds.",
            load(&self.channels) as f64,
        )
        .gauge(
            "edges",
            "Edge connections on the edge socket.",
            load(&self.edges) as f64,
        )
        .gauge(
            "relays",
            "Relays in the shard set (0: serving every channel).",
            load(&self.relays) as f64,
        );
        e.finish()
    }
}

/// Sends counter increases and gauges to StatsD every [`REPORT_INTERVAL`]; runs until
/// dropped.
pub async fn report(metrics: Arc<RelayMetrics>, client: Arc<StatsdClient>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut previous = metrics.counters();
    loop {
        tick.tick().await;
        let now = metrics.counters();
        for ((name, value), (_, before)) in now.iter().zip(&previous) {
            let delta = value.saturating_sub(*before);
            if delta > 0 {
                let _ = client.count(name, delta);
            }
        }
        previous = now;
        for (name, value) in metrics.gauges() {
            let _ = client.gauge(name, value);
        }
    }
}
