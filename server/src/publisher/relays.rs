//! [`EtcdRelays`]: the relay set as registered in etcd, followed on a background
//! thread so a blocking [`super::Publisher`] can pick it up between sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushfleet_protocol::registry::relays_prefix;
use tokio::sync::watch;

/// The relay set as registered in etcd, followed on a background thread.
pub struct EtcdRelays {
    shared: Arc<(Mutex<Vec<String>>, AtomicU64)>,
    seen: u64,
    _stop: watch::Sender<bool>,
}

impl EtcdRelays {
    /// Starts following `<prefix>/relays/`; waits up to `wait` for the first listing.
    pub fn follow(endpoints: Vec<String>, prefix: &str, wait: Duration) -> std::io::Result<Self> {
        let shared = Arc::new((Mutex::new(Vec::new()), AtomicU64::new(0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let writer = shared.clone();
        let prefix = relays_prefix(prefix);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("etcd-relays".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let (tx, mut rx) = watch::channel(pushfleet_fleet::etcd::Records::new());
                    tokio::spawn(pushfleet_fleet::etcd::follow_prefix(
                        endpoints, prefix, tx, stop_rx,
                    ));
                    while rx.changed().await.is_ok() {
                        let relays: Vec<String> =
                            pushfleet_fleet::etcd::relay_records(&rx.borrow_and_update())
                                .into_iter()
                                .map(|r| r.publish)
                                .collect();
                        if relays.is_empty() {
                            // Keep the last known relays rather than none (see the edge).
                            continue;
                        }
                        if let Ok(mut current) = writer.0.lock() {
                            *current = relays;
                        }
                        writer.1.fetch_add(1, Ordering::Release);
                    }
                });
            })?;
        let deadline = Instant::now() + wait;
        while shared.1.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            shared,
            seen: 0,
            _stop: stop_tx,
        })
    }

    /// The current set.
    pub fn current(&self) -> Vec<String> {
        self.shared.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The set, if it changed since the last call.
    pub fn changed(&mut self) -> Option<Vec<String>> {
        let generation = self.shared.1.load(Ordering::Acquire);
        if generation == self.seen {
            return None;
        }
        self.seen = generation;
        Some(self.current())
    }
}
