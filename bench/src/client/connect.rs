//! Opening every connection: at most `max_inflight` handshakes + subscribes
//! in flight (a semaphore permit is held until the subscribe is acked),
//! progress on stderr every 2 s, an early stop if nothing works at all, and
//! the first errors when any connection failed.

use super::conn::connection;
use super::Shared;
use anyhow::{anyhow, bail, Result};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Opens `n` connections with at most `max_inflight` handshakes + subscribes
/// in flight, and waits until each is subscribed or has failed.
/// Progress goes to stderr. Errors if any connection failed or `timeout`
/// passes.
pub async fn open_all(
    shared: &Rc<Shared>,
    n: usize,
    max_inflight: usize,
    timeout: Duration,
) -> Result<()> {
    let sem = Arc::new(Semaphore::new(max_inflight.max(1)));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_report = started;
    let report = |shared: &Shared| {
        eprintln!(
            "  connections: {} subscribed, {} failed, {} retries ({:.1} s)",
            shared.subscribed.get(),
            shared.failed.get(),
            shared.retries.get(),
            started.elapsed().as_secs_f64()
        );
    };
    for i in 0..n {
        let permit = tokio::time::timeout_at(deadline, sem.clone().acquire_owned())
            .await
            .map_err(|_| anyhow!("timed out opening connections ({i} of {n} started)"))?
            .map_err(|_| anyhow!("semaphore closed"))?;
        tokio::task::spawn_local(connection(shared.clone(), i, permit));
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            report(shared);
        }
        if shared.failed.get() > 0 && shared.subscribed.get() == 0 && i >= max_inflight {
            // Nothing works at all: stop early instead of hammering.
            break;
        }
    }
    loop {
        let done = shared.subscribed.get() + shared.failed.get();
        if done >= n || (shared.failed.get() > 0 && shared.subscribed.get() == 0) {
            break;
        }
        if Instant::now() >= deadline {
            report(shared);
            bail!(
                "timed out after {:.0} s waiting for subscriptions: {} of {n} subscribed, {} failed",
                timeout.as_secs_f64(),
                shared.subscribed.get(),
                shared.failed.get()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            report(shared);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(shared);
    if shared.failed.get() > 0 {
        let errors = shared
            .errors
            .borrow()
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n    ");
        if shared.subscribed.get() == 0 {
            bail!(
                "no connection got subscribed (server unreachable or subscribe refused; stopped early); first errors:\n    {errors}"
            );
        }
        bail!(
            "{} of {n} connections failed (server unreachable or subscribe refused); first errors:\n    {errors}",
            shared.failed.get()
        );
    }
    Ok(())
}
