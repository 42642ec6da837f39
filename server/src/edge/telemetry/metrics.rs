//! The edge's counters and gauges, as the code that counts writes them. How they are
//! named, shown and exported is [`super::catalogue`]'s one table.
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
use pushfleet_protocol::publish::Malformed;
use pushfleet_protocol::ErrorCode;

use crate::edge::telemetry::histogram::{Histogram, Snapshot};

/// Adds to a counter that only one thread writes (a load and a store: no bus lock).
#[inline]
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed) + by, Relaxed);
}

/// Why a publish never reached the hub's fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressDrop {
    /// The ingress queue (`--ingress-queue`) was full.
    Full,
    /// The publish was malformed.
    Malformed(Malformed),
}

impl IngressDrop {
    /// Every reason's tag, in the order of [`Metrics::ingress_dropped`].
    pub const NAMES: [&'static str; 1 + Malformed::ALL.len()] = {
        let mut names = ["ingress_full"; 1 + Malformed::ALL.len()];
        let mut i = 0;
        while i < Malformed::ALL.len() {
            names[1 + i] = Malformed::NAMES[i];
            i += 1;
        }
        names
    };

    /// Its index in [`IngressDrop::NAMES`].
    pub const fn index(self) -> usize {
        match self {
            Self::Full => 0,
            Self::Malformed(m) => 1 + m.index(),
        }
    }
}

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
    pub ingress_dropped: [AtomicU64; IngressDrop::NAMES.len()],
    /// Publishes for channels no local client holds (ZeroMQ filters by prefix only).
    pub hub_filtered: AtomicU64,
    pub hub_published: AtomicU64,
    /// Publishes not handed to a worker because its queue was full.
    pub worker_queue_full: AtomicU64,
    pub deflated_messages: AtomicU64,
    pub deflate_bytes_in: AtomicU64,
    pub deflate_bytes_out: AtomicU64,
    pub client_errors: [AtomicU64; ErrorCode::ALL.len()],
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
#[derive(Debug, Default, Clone, Copy)]
pub struct LatencyWindow {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Sums of the per-worker counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerTotals {
    pub enqueued: u64,
    pub delivered: u64,
    pub bytes_out: u64,
    pub dropped_slow: u64,
    pub dropped_closed: u64,
    pub slow_disconnects: u64,
}

impl WorkerTotals {
    /// Messages waiting on socket send queues: enqueued, not yet delivered or dropped.
    pub fn queue_depth(&self) -> u64 {
        self.enqueued
            .saturating_sub(self.delivered + self.dropped_slow + self.dropped_closed)
    }
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

    pub fn ingress_drop(&self, reason: IngressDrop) {
        self.ingress_dropped[reason.index()].fetch_add(1, Relaxed);
    }

    pub fn client_error(&self, code: ErrorCode) {
        self.client_errors[code.index()].fetch_add(1, Relaxed);
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
}
