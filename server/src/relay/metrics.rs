//! The relay's counters and gauges, and their catalogue: the one table that names
//! them and renders `/stats`, `GET /metrics` and the StatsD report (sent every second
//! as `<prefix>.relay.<relay id>.<name>`; documented in `monitoring/METRICS.md`).
//!
//! Stage accounting: every publish the relay receives ends in exactly one of
//! `forwarded`, `to_owner` (handed to the relay that owns its channel),
//! `no_subscribers`, or `dropped.<reason>`.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use cadence::StatsdClient;
use pushfleet_fleet::catalogue::{self, Metric, Reading, StatsdReport};
use pushfleet_fleet::prometheus::Exposition;
use pushfleet_protocol::publish::Malformed;
use serde_json::{json, Map, Value};

/// Why the relay dropped a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDrop {
    /// The publish was malformed.
    Malformed(Malformed),
    /// The owning relay could not take it: not connected, or its queue full.
    OwnerUnavailable,
}

impl RelayDrop {
    /// Every reason's tag, in counter order.
    pub const NAMES: [&'static str; Malformed::ALL.len() + 1] = {
        let mut names = ["owner_unavailable"; Malformed::ALL.len() + 1];
        let mut i = 0;
        while i < Malformed::ALL.len() {
            names[i] = Malformed::NAMES[i];
            i += 1;
        }
        names
    };

    /// Its index in [`RelayDrop::NAMES`].
    pub const fn index(self) -> usize {
        match self {
            Self::Malformed(m) => m.index(),
            Self::OwnerUnavailable => Malformed::ALL.len(),
        }
    }
}

/// Where a received publish came from, in the order of the `received` row.
pub const SOURCES: [&str; 3] = ["zmq", "from_peer", "http"];

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
    dropped: [AtomicU64; RelayDrop::NAMES.len()],
    /// HTTP requests refused with an error status.
    pub http_rejected: AtomicU64,
    /// Channels some edge holds.
    pub channels: AtomicU64,
    /// Edge connections on the edge-facing socket.
    pub edges: AtomicU64,
    /// Relays in the shard set (0: this relay serves every channel).
    pub relays: AtomicU64,
}

/// Every figure of the relay, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct RelaySnapshot {
    pub received: [u64; SOURCES.len()],
    pub forwarded: u64,
    pub to_owner: u64,
    pub no_subscribers: u64,
    pub dropped: [u64; RelayDrop::NAMES.len()],
    pub http_rejected: u64,
    pub channels: u64,
    pub edges: u64,
    pub relays: u64,
}

fn one(v: u64) -> Reading {
    Reading::One(v)
}

/// The relay's metrics.
pub static CATALOGUE: &[Metric<RelaySnapshot>] = &[
    Metric::counter(
        "received",
        "publishes",
        "Publishes received, by source (from_peer is part of zmq).",
        |s: &RelaySnapshot| Reading::Each(s.received.to_vec()),
    )
    .by("source", &SOURCES)
    .stats("received"),
    Metric::counter(
        "forwarded",
        "messages",
        "Messages sent to the edges (once per message).",
        |s: &RelaySnapshot| one(s.forwarded),
    )
    .stats("forwarded"),
    Metric::counter(
        "to_owner",
        "publishes",
        "Publishes handed to the relay that owns their channel.",
        |s: &RelaySnapshot| one(s.to_owner),
    )
    .stats("to_owner"),
    Metric::counter(
        "no_subscribers",
        "publishes",
        "Publishes for channels no edge holds.",
        |s: &RelaySnapshot| one(s.no_subscribers),
    )
    .stats("no_subscribers"),
    Metric::counter(
        "dropped",
        "publishes",
        "Publishes dropped, by reason.",
        |s: &RelaySnapshot| Reading::Each(s.dropped.to_vec()),
    )
    .by("reason", &RelayDrop::NAMES)
    .stats("dropped")
    .loss(),
    Metric::counter(
        "http.rejected",
        "requests",
        "HTTP requests answered with an error status.",
        |s: &RelaySnapshot| one(s.http_rejected),
    )
    .stats("http_rejected"),
    Metric::gauge(
        "channels",
        "channels",
        "Channels some edge holds.",
        |s: &RelaySnapshot| one(s.channels),
    )
    .stats("channels"),
    Metric::gauge(
        "edges",
        "connections",
        "Edge connections on the edge socket.",
        |s: &RelaySnapshot| one(s.edges),
    )
    .stats("edges"),
    Metric::gauge(
        "relays",
        "relays",
        "Relays in the shard set (0: serving every channel).",
        |s: &RelaySnapshot| one(s.relays),
    )
    .stats("relays"),
];

/// `/stats` fields that are not metrics: who is answering, and where.
pub const STATS_IDENTITY: [&str; 3] = ["relay_id", "publish_endpoint", "edge_endpoint"];

impl RelayMetrics {
    /// Counts a drop.
    pub fn drop_for(&self, reason: RelayDrop) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn dropped(&self, reason: RelayDrop) -> u64 {
        self.dropped[reason.index()].load(Relaxed)
    }

    /// Reads every figure.
    pub fn snapshot(&self) -> RelaySnapshot {
        let load = |c: &AtomicU64| c.load(Relaxed);
        RelaySnapshot {
            received: [
                load(&self.received_zmq),
                load(&self.received_from_peer),
                load(&self.received_http),
            ],
            forwarded: load(&self.forwarded),
            to_owner: load(&self.to_owner),
            no_subscribers: load(&self.no_subscribers),
            dropped: self.dropped.each_ref().map(load),
            http_rejected: load(&self.http_rejected),
            channels: load(&self.channels),
            edges: load(&self.edges),
            relays: load(&self.relays),
        }
    }

    /// The `/stats` body.
    pub fn to_json(&self, relay_id: &str, publish: &str, edges: &str) -> Value {
        let mut out = Map::new();
        out.insert("relay_id".into(), json!(relay_id));
        out.insert("publish_endpoint".into(), json!(publish));
        out.insert("edge_endpoint".into(), json!(edges));
        catalogue::stats_json(CATALOGUE, &self.snapshot(), &mut out);
        Value::Object(out)
    }

    /// The `GET /metrics` exposition, each sample labelled `relay="<relay id>"`.
    pub fn to_prometheus(&self, relay_id: &str) -> String {
        let mut e = Exposition::new("pushfleet_relay", &[("relay", relay_id)]);
        catalogue::prometheus(CATALOGUE, &self.snapshot(), &mut e);
        e.finish()
    }
}

/// Sends the catalogue's StatsD rows every [`REPORT_INTERVAL`]; runs until dropped.
pub async fn report(metrics: Arc<RelayMetrics>, client: Arc<StatsdClient>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut report = StatsdReport::new(CATALOGUE, &metrics.snapshot());
    loop {
        tick.tick().await;
        report.send(CATALOGUE, &metrics.snapshot(), &client);
    }
}
