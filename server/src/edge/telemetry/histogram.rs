//! A fixed-size latency histogram in microseconds with ~3% precision, cheap enough to
//! record every delivery: one bucket index computation and one relaxed store.
//!
//! Each histogram has one writer (a worker thread); readers (the stats page, the
//! reporter) take snapshots and subtract an older snapshot to get a window.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Values below this are counted exactly (one bucket per µs).
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above [`LINEAR`]: 32 gives ≤ 3.1% error.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above 2^6 µs: up to 2^40 µs (12 days), far past any timeout.
const OCTAVES: u64 = 34;
/// Number of buckets.
pub const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// Bucket index of `micros`.
fn index(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros(); // >= 6
    let sub = (micros >> (octave - SUB_BITS)) & (SUB - 1);
    let i = LINEAR + u64::from(octave - 6) * SUB + sub;
    (i as usize).min(BUCKETS - 1)
}

/// Upper bound (µs) of the values in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let octave = (i - LINEAR) / SUB + 6;
    let sub = (i - LINEAR) % SUB;
    let base = 1u64 << octave;
    let width = base >> SUB_BITS;
    base + (sub + 1) * width - 1
}

/// The single-writer histogram.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Records one value. Only the owning thread may call this (the increment is a
    /// load and a store, not an atomic read-modify-write).
    pub fn record(&self, micros: u64) {
        let b = &self.buckets[index(micros)];
        b.store(b.load(Relaxed) + 1, Relaxed);
    }

    /// Adds this histogram's counts into `into` (a snapshot being summed over workers).
    pub fn add_to(&self, into: &mut Snapshot) {
        for (sum, b) in into.counts.iter_mut().zip(self.buckets.iter()) {
            *sum += b.load(Relaxed);
        }
    }
}

/// Counts copied out of one or more histograms.
#[derive(Clone)]
pub struct Snapshot {
    counts: Vec<u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

impl Snapshot {
    /// Counts recorded since `older`.
    pub fn since(&self, older: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&older.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket; 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i);
            }
        }
        upper(BUCKETS - 1)
    }

    /// The largest recorded value's bucket bound; 0 if empty.
    pub fn max(&self) -> u64 {
        self.counts.iter().rposition(|c| *c > 0).map_or(0, upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(997) {
            let i = index(v);
            assert!(i >= last, "index not monotonic at {v}");
            last = i;
            let up = upper(i);
            assert!(up >= v, "upper {up} < value {v}");
            assert!(
                (up - v) as f64 <= (v as f64 * 0.032).max(0.0) + 1.0,
                "bucket too wide at {v}: {up}"
            );
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let mut s = Snapshot::default();
        h.add_to(&mut s);
        assert_eq!(s.count(), 1000);
        let p50 = s.quantile(0.5);
        assert!((490..=520).contains(&p50), "{p50}");
        let p99 = s.quantile(0.99);
        assert!((985..=1020).contains(&p99), "{p99}");
        assert!((1000..=1031).contains(&s.max()));
        let empty = Snapshot::default();
        assert_eq!(empty.quantile(0.99), 0);
        let window = s.since(&s);
        assert_eq!(window.count(), 0);
    }
}
