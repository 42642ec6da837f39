//! What one measured round produced ([`RoundOutcome`]) and the figures
//! derived from it: loss, delivery and publish rates, CPU per delivery.

use crate::client::Counts;
use crate::publisher::RunReport;
use crate::stats::LatencySummary;
use std::time::Duration;

/// Everything a round measured.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// Requested publish rate.
    pub rate: f64,
    /// Publisher report.
    pub publish: RunReport,
    /// Deliveries that should arrive.
    pub expected: u64,
    /// How the round's messages were counted (received, in window, stale,
    /// snapshots, duplicates, unparsed, compressed).
    pub counts: Counts,
    /// Compressed payloads actually inflated during the round.
    pub inflated: u64,
    /// Compressed payloads served from the identical-payload cache.
    pub inflate_cache_hits: u64,
    /// Average frame size on the wire.
    pub avg_wire_bytes: f64,
    /// Average message size after inflating.
    pub avg_message_bytes: f64,
    /// Latency figures.
    pub latency: LatencySummary,
    /// Wall time over which CPU was charged (publish + grace).
    pub cpu_window: Duration,
    /// Server CPU seconds over the window.
    pub server_cpu_s: Option<f64>,
    /// Load tool CPU seconds over the window.
    pub self_cpu_s: f64,
    /// Subscribed connections that ended during the round.
    pub closed_during: usize,
}

impl RoundOutcome {
    /// Lost fraction (0..1).
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.expected.saturating_sub(self.counts.received) as f64 / self.expected as f64
        }
    }

    /// Deliveries per second of publish time.
    pub fn deliveries_per_sec(&self) -> f64 {
        self.per_publish_sec(self.counts.received)
    }

    /// Achieved publish rate.
    pub fn publish_rate(&self) -> f64 {
        self.per_publish_sec(self.publish.sent)
    }

    /// `count` per second of publish time (0 if no time passed).
    fn per_publish_sec(&self, count: u64) -> f64 {
        let s = self.publish.elapsed.as_secs_f64();
        if s > 0.0 {
            count as f64 / s
        } else {
            0.0
        }
    }

    fn per_delivery_us(&self, cpu_s: f64) -> Option<f64> {
        (self.counts.received > 0).then(|| cpu_s * 1e6 / self.counts.received as f64)
    }

    /// Server CPU µs per delivery.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        self.server_cpu_s.and_then(|s| self.per_delivery_us(s))
    }

    /// Load tool CPU µs per delivery.
    pub fn self_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery_us(self.self_cpu_s)
    }
}
