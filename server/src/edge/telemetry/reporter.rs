//! The once-a-second reporter: turns the latency histograms into a window (p50, p99,
//! max over the last interval, shown on `/stats`) and sends the catalogue's StatsD
//! rows: every counter's increase and every gauge.

use std::sync::Arc;
use std::time::Duration;

use cadence::StatsdClient;
use pushfleet_fleet::catalogue::StatsdReport;
use tracing::debug;

use super::catalogue::{EdgeSnapshot, CATALOGUE};
use super::histogram::Snapshot;
use super::metrics::{LatencyWindow, Metrics};

/// Reporting interval: StatsD flushes every 10 s by default, so 1 s loses nothing and
/// keeps `/stats` fresh.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Runs forever; the caller drops it at shutdown.
pub async fn run(metrics: Arc<Metrics>, statsd: Option<Arc<StatsdClient>>) {
    let mut tick = tokio::time::interval(REPORT_INTERVAL);
    let mut previous_latency = Snapshot::default();
    let mut report = StatsdReport::new(CATALOGUE, &EdgeSnapshot::read(&metrics, false));
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
        // Draining is not sent to StatsD; any value reads the same.
        report.send(CATALOGUE, &EdgeSnapshot::read(&metrics, false), client);
        debug!("metrics reported");
    }
}
