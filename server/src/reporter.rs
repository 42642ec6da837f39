//! The once-a-second reporter: turns the latency histograms into a window (p50, p99,
//! max over the last interval, shown on `/stats`) and sends every counter's increase
//! and every gauge to StatsD. Metric names are listed in `monitoring/METRICS.md`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use cadence::{Counted, Gauged, StatsdClient};
use tracing::debug;

use crate::histogram::Snapshot;
use crate::metrics::{LatencyWindow, Metrics, CLIENT_ERRORS, INGRESS_DROP_REASONS};

/// Reporting interval: StatsD flushes every 10 s by default, so 1 s loses nothing and
/// keeps `/stats` fresh.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Every counter as (name, cumulative value).
fn counters(m: &Metrics) -> Vec<(String, u64)> {
    let t = m.worker_totals();
    let mut out = vec![
        (
            "ingress.received".to_owned(),
            m.ingress_received.load(Relaxed),
        ),
        ("ingress.bytes".to_owned(), m.ingress_bytes.load(Relaxed)),
        (
            "ingress.upstream_lost".to_owned(),
            m.upstream_lost.load(Relaxed),
        ),
        (
            "ingress.upstream_resets".to_owned(),
            m.upstream_resets.load(Relaxed),
        ),
        ("hub.filtered".to_owned(), m.hub_filtered.load(Relaxed)),
        ("hub.published".to_owned(), m.hub_published.load(Relaxed)),
        (
            "hub.worker_queue_full".to_owned(),
            m.worker_queue_full.load(Relaxed),
        ),
        ("deliver.enqueued".to_owned(), t.enqueued),
        ("deliver.delivered".to_owned(), t.delivered),
        ("deliver.bytes".to_owned(), t.bytes_out),
        ("deliver.dropped.slow_client".to_owned(), t.dropped_slow),
        ("deliver.dropped.closed".to_owned(), t.dropped_closed),
        ("deliver.slow_disconnects".to_owned(), t.slow_disconnects),
        (
            "connections.accepted".to_owned(),
            m.connections_accepted.load(Relaxed),
        ),
        (
            "connections.refused".to_owned(),
            m.connections_refused.load(Relaxed),
        ),
        (
            "handshake.failures".to_owned(),
            m.handshake_failures.load(Relaxed),
        ),
        (
            "protocol.closes".to_owned(),
            m.protocol_closes.load(Relaxed),
        ),
        (
            "heartbeat.timeouts".to_owned(),
            m.heartbeat_timeouts.load(Relaxed),
        ),
        (
            "deflate.messages".to_owned(),
            m.deflated_messages.load(Relaxed),
        ),
        (
            "deflate.bytes_in".to_owned(),
            m.deflate_bytes_in.load(Relaxed),
        ),
        (
            "deflate.bytes_out".to_owned(),
            m.deflate_bytes_out.load(Relaxed),
        ),
    ];
    for (reason, c) in INGRESS_DROP_REASONS.iter().zip(&m.ingress_dropped) {
        out.push((format!("ingress.dropped.{reason}"), c.load(Relaxed)));
    }
    for (code, c) in CLIENT_ERRORS.iter().zip(&m.client_errors) {
        out.push((format!("client.errors.{}", code.as_str()), c.load(Relaxed)));
    }
    out
}

/// Runs forever; the caller drops it at shutdown.
pub async fn run(metrics: Arc<Metrics>, statsd: Option<Arc<StatsdClient>>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut previous_latency = Snapshot::default();
    let mut previous = counters(&metrics);
    loop {
        tick.tick().await;
        let latency = metrics.latency_snapshot();
        let window = latency.since(&previous_latency);
        previous_latency = latency;
        let w = LatencyWindow {
            count: window.count(),
            p50_us: window.quantile(0.5),
            p99_us: window.quantile(0.99),
            max_us: window.max(),
        };
        metrics.set_latency_window(w);
        let Some(client) = &statsd else { continue };
        let now = counters(&metrics);
        for ((name, value), (_, before)) in now.iter().zip(&previous) {
            let delta = value.saturating_sub(*before);
            if delta > 0 {
                let _ = client.count(name, delta);
            }
        }
        previous = now;
        let gauges = [
            (
                "connections",
                metrics.connections.load(Relaxed).max(0) as u64,
            ),
            (
                "connections.compressed",
                metrics.compressed_connections.load(Relaxed).max(0) as u64,
            ),
            (
                "subscriptions",
                metrics.subscriptions.load(Relaxed).max(0) as u64,
            ),
            ("channels", metrics.channels.load(Relaxed).max(0) as u64),
            ("latency.p50_us", w.p50_us),
            ("latency.p99_us", w.p99_us),
            ("latency.max_us", w.max_us),
        ];
        for (name, value) in gauges {
            let _ = client.gauge(name, value);
        }
        debug!("metrics reported");
    }
}
