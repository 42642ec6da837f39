//! SIGTERM and SIGINT as streams every binary's shutdown loop can select on.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT streams. Created before any listener serves, so a signal that
/// arrives while the binary is still starting is handled (an edge drains) instead of
/// killing it.
pub fn signals() -> (Option<Signal>, Option<Signal>) {
    (
        signal(SignalKind::terminate()).ok(),
        signal(SignalKind::interrupt()).ok(),
    )
}

/// The next delivery of a signal; never, if its handler could not be installed.
pub async fn next_signal(signal: &mut Option<Signal>) {
    if let Some(s) = signal {
        if s.recv().await.is_some() {
            return;
        }
    }
    // No handler, or the signal driver is gone: no more signals will come.
    std::future::pending().await
}
