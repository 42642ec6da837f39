//! The edge's metric catalogue: every figure the edge exports, once, with where it
//! goes. `/stats`, `GET /metrics`, the StatsD report and the load report are all
//! rendered from [`CATALOGUE`] over one [`EdgeSnapshot`]; `monitoring/METRICS.md`
//! documents the same rows (a test holds the two together).
//!
//! Stage accounting: `ingress.received = Σ ingress.dropped.* + hub.filtered +
//! hub.published` (+ what waits in the ingress queue), and per socket
//! `deliver.enqueued = deliver.delivered + Σ deliver.dropped.*` (+ what is queued).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use pushfleet_fleet::catalogue::{self, Metric, Reading, MICROS};
use pushfleet_fleet::prometheus::Exposition;
use pushfleet_protocol::ErrorCode;
use serde_json::{json, Map, Value};

use super::metrics::{IngressDrop, LatencyWindow, Metrics, WorkerTotals};

/// Why a message queued for a socket never reached it: the `deliver.dropped` row's
/// label values, in the order its reading lists them.
pub const DELIVER_DROP_REASONS: [&str; 2] = ["slow_client", "closed"];

/// `/stats` fields that are not metrics: who is answering and how it is doing.
pub const STATS_IDENTITY: [&str; 4] = ["edge_id", "state", "uptime_s", "compression.ratio"];

/// Every figure of the edge, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct EdgeSnapshot {
    pub ingress_received: u64,
    pub ingress_bytes: u64,
    pub upstream_lost: u64,
    pub upstream_resets: u64,
    pub ingress_dropped: [u64; IngressDrop::NAMES.len()],
    pub hub_filtered: u64,
    pub hub_published: u64,
    pub worker_queue_full: u64,
    pub workers: WorkerTotals,
    pub connections_accepted: u64,
    pub connections_refused: u64,
    pub handshake_failures: u64,
    pub protocol_closes: u64,
    pub heartbeat_timeouts: u64,
    pub client_errors: [u64; ErrorCode::ALL.len()],
    pub deflated_messages: u64,
    pub deflate_bytes_in: u64,
    pub deflate_bytes_out: u64,
    pub connections: u64,
    pub compressed_connections: u64,
    pub subscriptions: u64,
    pub channels: u64,
    pub zmq_peers_connected: u64,
    pub latency: LatencyWindow,
    pub draining: bool,
    pub uptime_us: u64,
}

fn count(c: &AtomicU64) -> u64 {
    c.load(Relaxed)
}

/// Gauges are kept signed so that increments and decrements may race; a level below
/// zero is such a race seen mid-way, shown as 0.
fn level(g: &AtomicI64) -> u64 {
    g.load(Relaxed).max(0) as u64
}

impl EdgeSnapshot {
    /// Reads every figure of `m`.
    pub fn read(m: &Metrics, draining: bool) -> Self {
        Self {
            ingress_received: count(&m.ingress_received),
            ingress_bytes: count(&m.ingress_bytes),
            upstream_lost: count(&m.upstream_lost),
            upstream_resets: count(&m.upstream_resets),
            ingress_dropped: m.ingress_dropped.each_ref().map(count),
            hub_filtered: count(&m.hub_filtered),
            hub_published: count(&m.hub_published),
            worker_queue_full: count(&m.worker_queue_full),
            workers: m.worker_totals(),
            connections_accepted: count(&m.connections_accepted),
            connections_refused: count(&m.connections_refused),
            handshake_failures: count(&m.handshake_failures),
            protocol_closes: count(&m.protocol_closes),
            heartbeat_timeouts: count(&m.heartbeat_timeouts),
            client_errors: m.client_errors.each_ref().map(count),
            deflated_messages: count(&m.deflated_messages),
            deflate_bytes_in: count(&m.deflate_bytes_in),
            deflate_bytes_out: count(&m.deflate_bytes_out),
            connections: level(&m.connections),
            compressed_connections: level(&m.compressed_connections),
            subscriptions: level(&m.subscriptions),
            channels: level(&m.channels),
            zmq_peers_connected: level(&m.zmq_connected),
            latency: m.latency_window(),
            draining,
            uptime_us: m.started.elapsed().as_micros() as u64,
        }
    }

    /// Messages lost so far, at every stage: what the load report's `dropped` rate
    /// is computed from.
    pub fn losses(&self) -> u64 {
        catalogue::losses(CATALOGUE, self)
    }
}

fn one(v: u64) -> Reading {
    Reading::One(v)
}

/// The edge's metrics, in the order `/metrics` lists them.
pub static CATALOGUE: &[Metric<EdgeSnapshot>] = &[
    // Ingress: publishes entering from ZeroMQ.
    Metric::counter(
        "ingress.received",
        "messages",
        "Messages taken off the ZeroMQ SUB socket.",
        |s: &EdgeSnapshot| one(s.ingress_received),
    )
    .stats("msgs_in"),
    Metric::counter(
        "ingress.bytes",
        "bytes",
        "Bytes of every frame taken off the ZeroMQ socket.",
        |s: &EdgeSnapshot| one(s.ingress_bytes),
    )
    .stats("bytes_in"),
    Metric::counter(
        "ingress.upstream_lost",
        "messages",
        "Messages of held channels a relay numbered that never arrived.",
        |s: &EdgeSnapshot| one(s.upstream_lost),
    )
    .stats("upstream.lost")
    .loss(),
    Metric::counter(
        "ingress.upstream_resets",
        "events",
        "Times a held channel's relay numbering went backwards.",
        |s: &EdgeSnapshot| one(s.upstream_resets),
    )
    .stats("upstream.resets"),
    Metric::counter(
        "ingress.dropped",
        "messages",
        "Publishes dropped at ingress, by reason.",
        |s: &EdgeSnapshot| Reading::Each(s.ingress_dropped.to_vec()),
    )
    .by("reason", &IngressDrop::NAMES)
    .stats("drops.ingress")
    .loss(),
    // Hub: validation, numbering, encode once.
    Metric::counter(
        "hub.filtered",
        "messages",
        "Publishes for channels no local client holds.",
        |s: &EdgeSnapshot| one(s.hub_filtered),
    )
    .stats("filtered"),
    Metric::counter(
        "hub.published",
        "messages",
        "Publishes encoded and handed to workers.",
        |s: &EdgeSnapshot| one(s.hub_published),
    )
    .stats("published"),
    Metric::counter(
        "hub.worker_queue_full",
        "hand-offs",
        "Hand-offs dropped because a worker queue was full.",
        |s: &EdgeSnapshot| one(s.worker_queue_full),
    )
    .stats("drops.worker_queue_full")
    .loss(),
    Metric::counter(
        "deflate.messages",
        "messages",
        "Messages compressed (once each).",
        |s: &EdgeSnapshot| one(s.deflated_messages),
    )
    .stats("compression.messages"),
    Metric::counter(
        "deflate.bytes_in",
        "bytes",
        "Envelope bytes before compression.",
        |s: &EdgeSnapshot| one(s.deflate_bytes_in),
    )
    .stats("compression.bytes_in"),
    Metric::counter(
        "deflate.bytes_out",
        "bytes",
        "Envelope bytes after compression.",
        |s: &EdgeSnapshot| one(s.deflate_bytes_out),
    )
    .stats("compression.bytes_out"),
    // Delivery: socket send queues to the kernel.
    Metric::counter(
        "deliver.enqueued",
        "messages × sockets",
        "Messages put on socket send queues.",
        |s: &EdgeSnapshot| one(s.workers.enqueued),
    )
    .stats("enqueued"),
    Metric::counter(
        "deliver.delivered",
        "messages × sockets",
        "Messages fully written to their socket.",
        |s: &EdgeSnapshot| one(s.workers.delivered),
    )
    .stats("msgs_out"),
    Metric::counter(
        "deliver.bytes",
        "bytes",
        "Bytes written to sockets.",
        |s: &EdgeSnapshot| one(s.workers.bytes_out),
    )
    .stats("bytes_out"),
    Metric::counter(
        "deliver.dropped",
        "messages × sockets",
        "Messages dropped on their way to a socket, by reason.",
        |s: &EdgeSnapshot| Reading::Each(vec![s.workers.dropped_slow, s.workers.dropped_closed]),
    )
    .by("reason", &DELIVER_DROP_REASONS)
    .stats("drops")
    .loss(),
    Metric::counter(
        "deliver.slow_disconnects",
        "connections",
        "Connections closed as too slow.",
        |s: &EdgeSnapshot| one(s.workers.slow_disconnects),
    )
    .stats("slow_client_disconnects"),
    Metric::timer(
        "deliver.latency_us",
        MICROS,
        "Publish-to-socket latency, one delivery in 64.",
    ),
    Metric::gauge(
        "queue_depth",
        "messages",
        "Messages waiting on socket send queues.",
        |s: &EdgeSnapshot| one(s.workers.queue_depth()),
    )
    .no_statsd(),
    // Connections and requests.
    Metric::counter(
        "connections.accepted",
        "connections",
        "WebSocket upgrades accepted.",
        |s: &EdgeSnapshot| one(s.connections_accepted),
    )
    .stats("connections_accepted"),
    Metric::counter(
        "connections.refused",
        "connections",
        "Upgrades refused (draining, over capacity).",
        |s: &EdgeSnapshot| one(s.connections_refused),
    )
    .stats("connections_refused"),
    Metric::counter(
        "handshake.failures",
        "requests",
        "Invalid upgrade requests.",
        |s: &EdgeSnapshot| one(s.handshake_failures),
    )
    .stats("handshake_failures"),
    Metric::counter(
        "protocol.closes",
        "connections",
        "Connections closed for a protocol error.",
        |s: &EdgeSnapshot| one(s.protocol_closes),
    )
    .stats("protocol_closes"),
    Metric::counter(
        "heartbeat.timeouts",
        "connections",
        "Clients closed for silence.",
        |s: &EdgeSnapshot| one(s.heartbeat_timeouts),
    )
    .stats("heartbeat_timeouts"),
    Metric::counter(
        "client.errors",
        "replies",
        "Error replies to clients, by code.",
        |s: &EdgeSnapshot| Reading::Each(s.client_errors.to_vec()),
    )
    .by("code", &ErrorCode::NAMES)
    .stats("client_errors"),
    Metric::gauge(
        "connections",
        "connections",
        "Open WebSocket connections.",
        |s: &EdgeSnapshot| one(s.connections),
    )
    .stats("connections"),
    Metric::gauge(
        "connections.compressed",
        "connections",
        "Open connections with permessage-deflate.",
        |s: &EdgeSnapshot| one(s.compressed_connections),
    )
    .stats("compressed_connections"),
    Metric::gauge(
        "subscriptions",
        "pairs",
        "Subscribed (connection, channel) pairs.",
        |s: &EdgeSnapshot| one(s.subscriptions),
    )
    .stats("subscriptions"),
    Metric::gauge(
        "channels",
        "channels",
        "Channels subscribed upstream.",
        |s: &EdgeSnapshot| one(s.channels),
    )
    .stats("channels"),
    Metric::gauge(
        "zmq_peers_connected",
        "relays",
        "Relays the ZeroMQ SUB socket is connected to.",
        |s: &EdgeSnapshot| one(s.zmq_peers_connected),
    )
    .stats("zmq_peers_connected")
    .no_statsd(),
    // Latency over the reporter's last one-second window.
    Metric::gauge(
        "latency.p50_us",
        MICROS,
        "Publish-to-socket latency p50 over the last second.",
        |s: &EdgeSnapshot| one(s.latency.p50_us),
    )
    .stats("latency_us.p50"),
    Metric::gauge(
        "latency.p99_us",
        MICROS,
        "Publish-to-socket latency p99 over the last second.",
        |s: &EdgeSnapshot| one(s.latency.p99_us),
    )
    .stats("latency_us.p99"),
    Metric::gauge(
        "latency.max_us",
        MICROS,
        "Publish-to-socket latency maximum over the last second.",
        |s: &EdgeSnapshot| one(s.latency.max_us),
    )
    .stats("latency_us.max"),
    Metric::gauge(
        "latency.window_deliveries",
        "deliveries",
        "Deliveries the latency gauges were computed from.",
        |s: &EdgeSnapshot| one(s.latency.count),
    )
    .stats("latency_us.window_count")
    .no_statsd(),
    Metric::gauge(
        "draining",
        "0/1",
        "1 while the edge drains, else 0.",
        |s: &EdgeSnapshot| one(u64::from(s.draining)),
    )
    .no_statsd(),
    Metric::gauge(
        "uptime_us",
        MICROS,
        "Seconds since the edge started.",
        |s: &EdgeSnapshot| one(s.uptime_us),
    )
    .no_statsd(),
];

/// The `/stats` document.
pub fn stats_json(edge_id: &str, state: &str, s: &EdgeSnapshot) -> Value {
    let mut out = Map::new();
    out.insert("edge_id".into(), json!(edge_id));
    out.insert("state".into(), json!(state));
    out.insert("uptime_s".into(), json!(s.uptime_us / 1_000_000));
    catalogue::stats_json(CATALOGUE, s, &mut out);
    let ratio = if s.deflate_bytes_in == 0 {
        Value::Null
    } else {
        json!(s.deflate_bytes_out as f64 / s.deflate_bytes_in as f64)
    };
    catalogue::insert(&mut out, "compression.ratio", ratio);
    Value::Object(out)
}

/// The `GET /metrics` exposition (admin listener), each sample labelled
/// `edge="<edge id>"`.
pub fn prometheus(edge_id: &str, s: &EdgeSnapshot) -> String {
    let mut e = Exposition::new("pushfleet_edge", &[("edge", edge_id)]);
    catalogue::prometheus(CATALOGUE, s, &mut e);
    e.finish()
}
