//! The counters of one measurement round.
//!
//! [`Round`] is what the connection tasks add to while a round runs; its
//! [`Counts`] are also what the scenario's round outcome carries, so the
//! two share one definition.

use crate::stats::Histogram;

/// How the messages of one round were counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Counted deliveries (by the end of the grace period).
    pub received: u64,
    /// Counted deliveries that arrived before the end of the publish window.
    pub in_window: u64,
    /// Ticks from before the round (late stragglers).
    pub stale: u64,
    /// Latest-value replays (ignored).
    pub snapshots: u64,
    /// Ticks whose `n` was not above the connection's previous one
    /// (repeated or reordered).
    pub duplicates: u64,
    /// Messages that could not be understood.
    pub unparsed: u64,
    /// Counted deliveries that arrived compressed (RSV1).
    pub compressed: u64,
}

/// Counters of the current measurement round.
pub struct Round {
    /// Ticks with `n >= lo` count; `u64::MAX` while not measuring.
    pub lo: u64,
    /// Receive times up to this (ns since epoch) are "in window".
    pub window_end_ns: u64,
    /// What was counted so far.
    pub counts: Counts,
    /// Frame bytes on the wire (headers included) of counted deliveries.
    pub wire_bytes: u64,
    /// Message bytes after inflating, of counted deliveries.
    pub message_bytes: u64,
    /// Publish → receive latency of counted deliveries, ns.
    pub hist: Histogram,
}

impl Round {
    /// Not measuring.
    pub fn new() -> Round {
        Round {
            lo: u64::MAX,
            window_end_ns: 0,
            counts: Counts::default(),
            wire_bytes: 0,
            message_bytes: 0,
            hist: Histogram::new(),
        }
    }

    /// Starts counting ticks with `n >= lo`.
    pub fn begin(&mut self, lo: u64, window_end_ns: u64) {
        self.counts = Counts::default();
        self.wire_bytes = 0;
        self.message_bytes = 0;
        self.hist.reset();
        self.lo = lo;
        self.window_end_ns = window_end_ns;
    }

    /// Stops counting (later ticks are stale).
    pub fn end(&mut self) {
        self.lo = u64::MAX;
    }
}
