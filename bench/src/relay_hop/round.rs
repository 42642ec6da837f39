//! What the latency and throughput rounds share: the counters and stop flags of
//! their threads, the publisher's connection, and joining the threads.

use anyhow::{anyhow, Context, Result};
use pushfleet_server::publisher::Publisher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Time allowed for connections and for the relay to show subscriptions.
pub(super) const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters shared by the controller, the publishers and the sink.
pub(super) struct Shared {
    pub(super) base: Instant,
    /// Messages sent, summed over publishers (updated as they go).
    pub(super) sent: AtomicU64,
    /// Messages the sink received.
    pub(super) received: AtomicU64,
    /// Relay sequence numbers the sink found missing (copies dropped for it).
    pub(super) seq_gaps: AtomicU64,
    /// Publishers stop (unpaced mode).
    pub(super) stop_publishing: AtomicBool,
    /// The sink stops.
    pub(super) stop_sink: AtomicBool,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            stop_publishing: AtomicBool::new(false),
            stop_sink: AtomicBool::new(false),
        })
    }

    pub(super) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Tells every thread of a round to stop when dropped, so that an early return
/// (an error) inside a thread scope cannot leave the scope waiting forever.
pub(super) struct StopOnDrop<'a>(pub(super) &'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop_publishing.store(true, Relaxed);
        self.0.stop_sink.store(true, Relaxed);
    }
}

pub(super) fn connect_publisher(endpoint: &str, send_timeout: Duration) -> Result<Publisher> {
    let mut p = Publisher::new(vec![endpoint.to_owned()])
        .with_context(|| format!("publisher for {endpoint}"))?;
    p.wait_connected(SETUP_TIMEOUT)
        .with_context(|| format!("connecting the publisher to {endpoint}"))?;
    p.set_send_timeout(send_timeout);
    Ok(p)
}

pub(super) fn join<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("the {what} thread panicked"))?
}
