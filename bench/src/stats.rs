//! Latency histogram and percentile math.
//!
//! [`Histogram`] is a fixed-size log-linear histogram over nanoseconds: the
//! first 2048 values get one bucket each, above that every power-of-two range
//! is split into 1024 equal buckets, so any recorded value is known to within
//! 0.1% (about 1 µs at 1 ms). Recording is an index computation and an
//! increment, with no allocation, which keeps the per-delivery cost of the
//! load tool low. Values above ~18 minutes are clamped.

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 10;
const SUB: u64 = 1 << SUB_BITS;
/// Largest value tracked exactly enough; bigger ones are clamped to it.
pub const MAX_VALUE: u64 = (1 << 40) - 1;

/// Bucket index of `v` (already clamped to [`MAX_VALUE`]).
fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let bits = 64 - v.leading_zeros();
    let shift = bits - (SUB_BITS + 1);
    let top = v >> shift;
    ((u64::from(shift) << SUB_BITS) + top) as usize
}

/// Lowest value and width of bucket `idx`.
fn bucket_bounds(idx: usize) -> (u64, u64) {
    let idx = idx as u64;
    if idx < 2 * SUB {
        return (idx, 1);
    }
    let shift = (idx >> SUB_BITS) - 1;
    let top = idx - (shift << SUB_BITS);
    (top << shift, 1 << shift)
}

/// Log-linear histogram of nanosecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram (about 256 KiB).
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; index(MAX_VALUE) + 1],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        let v = v.min(MAX_VALUE);
        self.counts[index(v)] += 1;
        self.total += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest recorded value (0 if empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Mean of recorded values (0 if empty).
    pub fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / u128::from(self.total)) as u64
        }
    }

    /// The value at quantile `q` in `[0, 1]`: the middle of the bucket that
    /// holds the `ceil(q * count)`-th smallest value, clamped to the exact
    /// min and max. 0 if empty.
    pub fn percentile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return self.max;
        }
        let mut seen = 0u64;
        for (idx, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_bounds(idx);
                return (low + (width - 1) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// p50, p99, p99.9 and max.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            count: self.count(),
            p50_ns: self.percentile(0.50),
            p99_ns: self.percentile(0.99),
            p999_ns: self.percentile(0.999),
            max_ns: self.max(),
            mean_ns: self.mean(),
        }
    }
}

/// Headline latency figures, nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Maximum.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: u64,
}

/// Nanoseconds as milliseconds with microsecond precision.
pub fn ms(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_monotonic_and_contiguous() {
        let mut prev = 0usize;
        let mut v = 0u64;
        while v < 1 << 24 {
            let i = index(v);
            assert!(i == prev || i == prev + 1, "gap at {v}: {prev} -> {i}");
            let (low, width) = bucket_bounds(i);
            assert!(low <= v && v < low + width, "{v} not in bucket {i}");
            prev = i;
            v += 1 + v / 4096;
        }
        assert!(index(MAX_VALUE) < 40 << SUB_BITS);
    }

    #[test]
    fn relative_error_is_small() {
        for v in [
            1u64,
            999,
            2047,
            2048,
            5_000,
            1_234_567,
            987_654_321,
            MAX_VALUE,
        ] {
            let (low, width) = bucket_bounds(index(v));
            assert!(width == 1 || (width as f64) / (low as f64) <= 1.0 / 1024.0 + 1e-12);
        }
    }

    #[test]
    fn percentiles_uniform() {
        let mut h = Histogram::new();
        // 1..=100_000 µs, in ns.
        for i in 1..=100_000u64 {
            h.record(i * 1_000);
        }
        assert_eq!(h.count(), 100_000);
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err < 0.001, "got {got}, want {want}");
        };
        close(h.percentile(0.5), 50_000_000);
        close(h.percentile(0.99), 99_000_000);
        close(h.percentile(0.999), 99_900_000);
        assert_eq!(h.percentile(1.0), 100_000_000);
        assert_eq!(h.percentile(0.0), 1_000);
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.mean(), 50_000_500);
    }

    #[test]
    fn percentiles_small_and_exact() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(0.5), 0);
        for v in [10u64, 20, 30, 40] {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 20);
        assert_eq!(h.percentile(0.75), 30);
        assert_eq!(h.percentile(0.99), 40);
        let s = h.summary();
        assert_eq!((s.count, s.p50_ns, s.max_ns), (4, 20, 40));
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.percentile(0.99), 0);
    }

    #[test]
    fn skewed_distribution_tail() {
        let mut h = Histogram::new();
        for _ in 0..9_900 {
            h.record(500_000);
        }
        for _ in 0..100 {
            h.record(40_000_000);
        }
        let p50 = h.percentile(0.5);
        assert!((499_000..=501_000).contains(&p50), "{p50}");
        let p99 = h.percentile(0.99);
        assert!((499_000..=501_000).contains(&p99), "{p99}");
        let p999 = h.percentile(0.999);
        assert!((39_960_000..=40_000_000).contains(&p999), "{p999}");
        h.record(u64::MAX);
        assert_eq!(h.max(), MAX_VALUE);
    }

    #[test]
    fn ms_formatting() {
        assert_eq!(ms(1_234_567), 1.234);
        assert_eq!(ms(999), 0.0);
    }
}
