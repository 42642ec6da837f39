//! Cost of recording one delivery's latency: the edge's own histogram against the
//! `hdrhistogram` crate, shared the ways a worker thread (writer) and the reporter
//! (reader, once a second) could share it. Prints nanoseconds per record; a
//! benchmark program, not a test (`cargo bench -p pushfleet-server --bench histogram`).
//!
//! The edge records every delivery (up to ~1.6M/s on one core), so a few nanoseconds
//! per record are a few percent of a core.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Instant;

use pushfleet_server::edge::telemetry::histogram::Histogram;

/// Records per measurement.
const RECORDS: usize = 20_000_000;
/// Rounds per variant; the best is printed (the least disturbed by the rest of the
/// machine).
const ROUNDS: usize = 5;

/// Latencies shaped like the edge's: mostly tens to hundreds of µs, a tail to 100 ms.
fn samples() -> Vec<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..1 << 16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % 1000;
            match r {
                0..=899 => 20 + x % 500,
                900..=989 => 500 + x % 10_000,
                _ => 10_000 + x % 100_000,
            }
        })
        .collect()
}

fn measure(name: &str, samples: &[u64], mut record: impl FnMut(u64)) {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..RECORDS {
            record(black_box(samples[i & (samples.len() - 1)]));
        }
        best = best.min(start.elapsed().as_nanos() as f64 / RECORDS as f64);
    }
    println!("{name:<52} {best:>6.2} ns/record");
}

fn main() {
    let samples = samples();
    let ours = Histogram::default();
    measure(
        "pushfleet histogram (single-writer atomics)",
        &samples,
        |v| ours.record(v),
    );

    // 1 µs .. 2^40 µs with 2 significant digits (~1% error; ours is ~3%).
    let new =
        || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).expect("valid bounds");
    let mut plain = new();
    measure("hdrhistogram, &mut (no reader can see it)", &samples, |v| {
        plain.saturating_record(v)
    });

    let locked = Mutex::new(new());
    measure("hdrhistogram in a Mutex (uncontended)", &samples, |v| {
        if let Ok(mut h) = locked.lock() {
            h.saturating_record(v);
        }
    });

    let mut sync: hdrhistogram::sync::SyncHistogram<u64> = new().into_sync();
    let mut recorder = sync.recorder();
    measure("hdrhistogram SyncHistogram recorder", &samples, |v| {
        recorder.saturating_record(v)
    });
    drop(recorder);
    sync.refresh();

    println!(
        "memory per histogram: pushfleet {} B, hdrhistogram {} counts",
        pushfleet_server::edge::telemetry::histogram::BUCKETS * 8,
        plain.distinct_values(),
    );
}
