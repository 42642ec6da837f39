//! The edge's counters: what `/stats` shows and what the reporter sends to StatsD.
//!
//! Counters that move once per delivery live in [`WorkerMetrics`], one per worker
//! thread and written only by it, so the hot path never contends on a shared cache
//! line. Everything else is a relaxed atomic in [`Metrics`]. Stage accounting:
//! `ingress.received = ingress.dropped(*) + hub.filtered + hub.published`, and per
//! socket `enqueued = delivered + dropped(slow_client, closed)`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cadence::{StatsdClient, Timed};
use pushfleet_protocol::ErrorCode;
use serde_json::{json, Value};

use crate::histogram::{Histogram, Snapshot};
use crate::prometheus::{Exposition, Kind};

/// Adds to a counter that only one thread writes (a load and a store: no bus lock).
#[inline]
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed) + by, Relaxed);
}

/// Why a publish never reached the hub's fan-out: the ingress queue was full, or one
/// of the [`pushfleet_protocol::publish::REASONS`] it was malformed for.
pub const INGRESS_DROP_REASONS: [&str; 8] = {
    let r = pushfleet_protocol::publish::REASONS;
    ["ingress_full", r[0], r[1], r[2], r[3], r[4], r[5], r[6]]
};

/// All client error codes, in the order of [`Metrics::client_errors`].
pub const CLIENT_ERRORS: [ErrorCode; 9] = [
    ErrorCode::InvalidJson,
    ErrorCode::InvalidRequest,
    ErrorCode::UnknownMethod,
    ErrorCode::InvalidChannel,
    ErrorCode::TooManySubscriptions,
    ErrorCode::NotSubscribed,
    ErrorCode::UnsupportedFrame,
    ErrorCode::Draining,
    ErrorCode::Unauthorized,
];

/// Per-worker delivery counters; single writer.
#[derive(Default)]
pub struct WorkerMetrics {
    /// Messages put on a socket's send queue.
    pub enqueued: AtomicU64,
    /// Messages fully written to their socket.
    pub delivered: AtomicU64,
    /// Bytes written to sockets (messages and control frames).
    pub bytes_out: AtomicU64,
    /// Messages evicted by the slow-client policy (drop-oldest, conflate) or dropped
    /// when a slow client was disconnected.
    pub dropped_slow: AtomicU64,
    /// Messages still queued when their connection closed.
    pub dropped_closed: AtomicU64,
    /// Connections closed by the `disconnect` slow-client policy.
    pub slow_disconnects: AtomicU64,
    /// Edge ingress → last byte accepted by the socket, in µs.
    pub latency: Histogram,
    /// Where sampled latency timers go, if StatsD is configured.
    pub statsd: Option<Arc<StatsdClient>>,
}

/// One delivery in this many sends its latency to StatsD as a timer sample (with
/// the matching `@rate`), so the timer costs ~10 ns per delivery on average.
pub const LATENCY_SAMPLE_EVERY: u64 = 64;

impl WorkerMetrics {
    /// Records a delivery's latency: always in the histogram, sometimes in StatsD.
    #[inline]
    pub fn record_latency(&self, micros: u64) {
        self.latency.record(micros);
        if let Some(statsd) = &self.statsd {
            if self
                .delivered
                .load(Relaxed)
                .is_multiple_of(LATENCY_SAMPLE_EVERY)
            {
                let _ = statsd
                    .time_with_tags("deliver.latency_us", micros)
                    .with_sampling_rate(1.0 / LATENCY_SAMPLE_EVERY as f64)
                    .try_send();
            }
        }
    }
}

/// Edge-wide counters and gauges.
pub struct Metrics {
    pub edge_id: String,
    pub started: Instant,
    pub connections: AtomicI64,
    pub compressed_connections: AtomicI64,
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub subscriptions: AtomicI64,
    pub channels: AtomicI64,
    pub ingress_received: AtomicU64,
    pub ingress_dropped: [AtomicU64; INGRESS_DROP_REASONS.len()],
    /// Publishes for channels no local client holds (ZeroMQ filters by prefix only).
    pub hub_filtered: AtomicU64,
    pub hub_published: AtomicU64,
    /// Publishes not handed to a worker because its queue was full.
    pub worker_queue_full: AtomicU64,
    pub deflated_messages: AtomicU64,
    pub deflate_bytes_in: AtomicU64,
    pub deflate_bytes_out: AtomicU64,
    pub client_errors: [AtomicU64; CLIENT_ERRORS.len()],
    pub protocol_closes: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub zmq_connected: AtomicI64,
    /// Bytes of every frame read from ZeroMQ.
    pub ingress_bytes: AtomicU64,
    /// Messages a relay numbered but this edge never received (the gaps in a held
    /// channel's relay sequence): dropped at the relay while this edge was too slow,
    /// or lost in flight when a relay restarted. Never part of `ingress.received`.
    pub upstream_lost: AtomicU64,
    /// Times a held channel's relay sequence went backwards (its relay restarted or
    /// the channel moved to another relay); not counted as loss.
    pub upstream_resets: AtomicU64,
    pub statsd: Option<Arc<StatsdClient>>,
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
    latency_window: Mutex<LatencyWindow>,
}

/// Latency over the reporter's last interval.
#[derive(Default, Clone, Copy)]
pub struct LatencyWindow {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Sums of the per-worker counters.
#[derive(Default, Clone, Copy)]
pub struct WorkerTotals {
    pub enqueued: u64,
    pub delivered: u64,
    pub bytes_out: u64,
    pub dropped_slow: u64,
    pub dropped_closed: u64,
    pub slow_disconnects: u64,
}

impl Metrics {
    pub fn new(edge_id: String, statsd: Option<Arc<StatsdClient>>) -> Self {
        Self {
            edge_id,
            started: Instant::now(),
            connections: AtomicI64::new(0),
            compressed_connections: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            subscriptions: AtomicI64::new(0),
            channels: AtomicI64::new(0),
            ingress_received: AtomicU64::new(0),
            ingress_dropped: Default::default(),
            hub_filtered: AtomicU64::new(0),
            hub_published: AtomicU64::new(0),
            worker_queue_full: AtomicU64::new(0),
            deflated_messages: AtomicU64::new(0),
            deflate_bytes_in: AtomicU64::new(0),
            deflate_bytes_out: AtomicU64::new(0),
            client_errors: Default::default(),
            protocol_closes: AtomicU64::new(0),
            heartbeat_timeouts: AtomicU64::new(0),
            zmq_connected: AtomicI64::new(0),
            ingress_bytes: AtomicU64::new(0),
            upstream_lost: AtomicU64::new(0),
            upstream_resets: AtomicU64::new(0),
            statsd,
            workers: Mutex::new(Vec::new()),
            latency_window: Mutex::new(LatencyWindow::default()),
        }
    }

    /// Registers a worker's counters and returns them.
    pub fn add_worker(&self) -> Arc<WorkerMetrics> {
        let w = Arc::new(WorkerMetrics {
            statsd: self.statsd.clone(),
            ..WorkerMetrics::default()
        });
        if let Ok(mut workers) = self.workers.lock() {
            workers.push(w.clone());
        }
        w
    }

    pub fn ingress_drop(&self, reason: &str) {
        if let Some(i) = INGRESS_DROP_REASONS.iter().position(|r| *r == reason) {
            self.ingress_dropped[i].fetch_add(1, Relaxed);
        }
    }

    pub fn client_error(&self, code: ErrorCode) {
        if let Some(i) = CLIENT_ERRORS.iter().position(|c| *c == code) {
            self.client_errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn worker_totals(&self) -> WorkerTotals {
        let mut t = WorkerTotals::default();
        if let Ok(workers) = self.workers.lock() {
            for w in workers.iter() {
                t.enqueued += w.enqueued.load(Relaxed);
                t.delivered += w.delivered.load(Relaxed);
                t.bytes_out += w.bytes_out.load(Relaxed);
                t.dropped_slow += w.dropped_slow.load(Relaxed);
                t.dropped_closed += w.dropped_closed.load(Relaxed);
                t.slow_disconnects += w.slow_disconnects.load(Relaxed);
            }
        }
        t
    }

    /// Cumulative latency counts over all workers.
    pub fn latency_snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        if let Ok(workers) = self.workers.lock() {
            for w in workers.iter() {
                w.latency.add_to(&mut s);
            }
        }
        s
    }

    pub fn set_latency_window(&self, window: LatencyWindow) {
        if let Ok(mut w) = self.latency_window.lock() {
            *w = window;
        }
    }

    pub fn latency_window(&self) -> LatencyWindow {
        self.latency_window.lock().map(|w| *w).unwrap_or_default()
    }

    /// The `/stats` document.
    pub fn to_json(&self, state: &str) -> Value {
        let t = self.worker_totals();
        let deflate_in = self.deflate_bytes_in.load(Relaxed);
        let deflate_out = self.deflate_bytes_out.load(Relaxed);
        let window = self.latency_window();
        let ingress_drops: serde_json::Map<String, Value> = INGRESS_DROP_REASONS
            .iter()
            .zip(&self.ingress_dropped)
            .map(|(r, c)| ((*r).to_owned(), json!(c.load(Relaxed))))
            .collect();
        let client_errors: serde_json::Map<String, Value> = CLIENT_ERRORS
            .iter()
            .zip(&self.client_errors)
            .map(|(code, c)| (code.as_str().to_owned(), json!(c.load(Relaxed))))
            .collect();
        json!({
            "edge_id": self.edge_id,
            "state": state,
            "uptime_s": self.started.elapsed().as_secs(),
            "connections": self.connections.load(Relaxed),
            "compressed_connections": self.compressed_connections.load(Relaxed),
            "connections_accepted": self.connections_accepted.load(Relaxed),
            "connections_refused": self.connections_refused.load(Relaxed),
            "handshake_failures": self.handshake_failures.load(Relaxed),
            "subscriptions": self.subscriptions.load(Relaxed),
            "channels": self.channels.load(Relaxed),
            "zmq_peers_connected": self.zmq_connected.load(Relaxed),
            "msgs_in": self.ingress_received.load(Relaxed),
            "bytes_in": self.ingress_bytes.load(Relaxed),
            "upstream": {
                "lost": self.upstream_lost.load(Relaxed),
                "resets": self.upstream_resets.load(Relaxed),
            },
            "published": self.hub_published.load(Relaxed),
            "filtered": self.hub_filtered.load(Relaxed),
            "enqueued": t.enqueued,
            "msgs_out": t.delivered,
            "bytes_out": t.bytes_out,
            "drops": {
                "ingress": ingress_drops,
                "worker_queue_full": self.worker_queue_full.load(Relaxed),
                "slow_client": t.dropped_slow,
                "closed": t.dropped_closed,
            },
            "slow_client_disconnects": t.slow_disconnects,
            "compression": {
                "messages": self.deflated_messages.load(Relaxed),
                "bytes_in": deflate_in,
                "bytes_out": deflate_out,
                "ratio": if deflate_in == 0 { Value::Null } else { json!(deflate_out as f64 / deflate_in as f64) },
            },
            "latency_us": {
                "window_count": window.count,
                "p50": window.p50_us,
                "p99": window.p99_us,
                "max": window.max_us,
            },
            "client_errors": client_errors,
            "protocol_closes": self.protocol_closes.load(Relaxed),
            "heartbeat_timeouts": self.heartbeat_timeouts.load(Relaxed),
        })
    }
}

/// Microseconds as seconds, the Prometheus unit of time.
fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

impl Metrics {
    /// The `GET /metrics` exposition (admin listener): the figures of `/stats`,
    /// named after `monitoring/METRICS.md`, each labelled `edge="<edge id>"`.
    pub fn to_prometheus(&self, draining: bool) -> String {
        let mut e = Exposition::new("pushfleet_edge", &[("edge", &self.edge_id)]);
        self.ingress_families(&mut e);
        self.delivery_families(&mut e);
        self.connection_families(&mut e);
        self.gauge_families(&mut e, draining);
        e.finish()
    }

    fn ingress_families(&self, e: &mut Exposition) {
        let load = |c: &AtomicU64| c.load(Relaxed);
        e.counter(
            "ingress_received_total",
            "Messages taken off the ZeroMQ SUB socket.",
            load(&self.ingress_received),
        )
        .counter(
            "ingress_bytes_total",
            "Bytes of every frame taken off the ZeroMQ socket.",
            load(&self.ingress_bytes),
        )
        .counter(
            "ingress_upstream_lost_total",
            "Messages of held channels a relay numbered that never arrived.",
            load(&self.upstream_lost),
        )
        .counter(
            "ingress_upstream_resets_total",
            "Times a held channel's relay numbering went backwards.",
            load(&self.upstream_resets),
        )
        .family(
            Kind::Counter,
            "ingress_dropped_total",
            "Publishes dropped at ingress, by reason.",
        );
        for (reason, c) in INGRESS_DROP_REASONS.iter().zip(&self.ingress_dropped) {
            e.sample(&[("reason", reason)], load(c) as f64);
        }
        e.counter(
            "hub_filtered_total",
            "Publishes for channels no local client holds.",
            load(&self.hub_filtered),
        )
        .counter(
            "hub_published_total",
            "Publishes encoded and handed to workers.",
            load(&self.hub_published),
        )
        .counter(
            "hub_worker_queue_full_total",
            "Hand-offs dropped because a worker queue was full.",
            load(&self.worker_queue_full),
        )
        .counter(
            "deflate_messages_total",
            "Messages compressed (once each).",
            load(&self.deflated_messages),
        )
        .counter(
            "deflate_bytes_in_total",
            "Envelope bytes before compression.",
            load(&self.deflate_bytes_in),
        )
        .counter(
            "deflate_bytes_out_total",
            "Envelope bytes after compression.",
            load(&self.deflate_bytes_out),
        );
    }

    fn delivery_families(&self, e: &mut Exposition) {
        let t = self.worker_totals();
        e.counter(
            "deliver_enqueued_total",
            "Messages put on socket send queues.",
            t.enqueued,
        )
        .counter(
            "deliver_delivered_total",
            "Messages fully written to their socket.",
            t.delivered,
        )
        .counter(
            "deliver_bytes_total",
            "Bytes written to sockets.",
            t.bytes_out,
        )
        .family(
            Kind::Counter,
            "deliver_dropped_total",
            "Messages dropped on their way to a socket, by reason.",
        )
        .sample(&[("reason", "slow_client")], t.dropped_slow as f64)
        .sample(&[("reason", "closed")], t.dropped_closed as f64)
        .counter(
            "deliver_slow_disconnects_total",
            "Connections closed as too slow.",
            t.slow_disconnects,
        )
        .gauge(
            "queue_depth",
            "Messages waiting on socket send queues.",
            t.enqueued
                .saturating_sub(t.delivered + t.dropped_slow + t.dropped_closed) as f64,
        );
    }

    fn connection_families(&self, e: &mut Exposition) {
        let load = |c: &AtomicU64| c.load(Relaxed);
        e.counter(
            "connections_accepted_total",
            "WebSocket upgrades accepted.",
            load(&self.connections_accepted),
        )
        .counter(
            "connections_refused_total",
            "Upgrades refused (draining, over capacity).",
            load(&self.connections_refused),
        )
        .counter(
            "handshake_failures_total",
            "Invalid upgrade requests.",
            load(&self.handshake_failures),
        )
        .counter(
            "protocol_closes_total",
            "Connections closed for a protocol error.",
            load(&self.protocol_closes),
        )
        .counter(
            "heartbeat_timeouts_total",
            "Clients closed for silence.",
            load(&self.heartbeat_timeouts),
        )
        .family(
            Kind::Counter,
            "client_errors_total",
            "Error replies to clients, by code.",
        );
        for (code, c) in CLIENT_ERRORS.iter().zip(&self.client_errors) {
            e.sample(&[("code", code.as_str())], load(c) as f64);
        }
    }

    fn gauge_families(&self, e: &mut Exposition, draining: bool) {
        let load = |g: &AtomicI64| g.load(Relaxed) as f64;
        let window = self.latency_window();
        e.gauge(
            "connections",
            "Open WebSocket connections.",
            load(&self.connections),
        )
        .gauge(
            "connections_compressed",
            "Open connections with permessage-deflate.",
            load(&self.compressed_connections),
        )
        .gauge(
            "subscriptions",
            "Subscribed (connection, channel) pairs.",
            load(&self.subscriptions),
        )
        .gauge(
            "channels",
            "Channels subscribed upstream.",
            load(&self.channels),
        )
        .gauge(
            "zmq_peers_connected",
            "Relays the ZeroMQ SUB socket is connected to.",
            load(&self.zmq_connected),
        )
        .gauge(
            "latency_p50_seconds",
            "Publish-to-socket latency p50 over the last second.",
            seconds(window.p50_us),
        )
        .gauge(
            "latency_p99_seconds",
            "Publish-to-socket latency p99 over the last second.",
            seconds(window.p99_us),
        )
        .gauge(
            "latency_max_seconds",
            "Publish-to-socket latency maximum over the last second.",
            seconds(window.max_us),
        )
        .gauge(
            "latency_window_deliveries",
            "Deliveries the latency gauges were computed from.",
            window.count as f64,
        )
        .gauge(
            "draining",
            "1 while the edge drains, else 0.",
            f64::from(u8::from(draining)),
        )
        .gauge(
            "uptime_seconds",
            "Seconds since the edge started.",
            self.started.elapsed().as_secs_f64(),
        );
    }
}
