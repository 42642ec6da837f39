//! What every worker thread shares: settings, counters, the hub's command queue and
//! the drain switch.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::edge::config::Config;
use crate::edge::fanout::hub::HubCommand;
use crate::edge::telemetry::metrics::Metrics;

/// Flips the edge into draining, once; everyone who cares watches it.
#[derive(Clone)]
pub struct DrainSwitch {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for DrainSwitch {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl DrainSwitch {
    /// Starts draining; returns false if it had already started.
    pub fn start(&self) -> bool {
        !self.tx.send_replace(true)
    }

    pub fn is_draining(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// "ready" or "draining", as shown on `/healthz` and `/stats`.
    pub fn state(&self) -> &'static str {
        if self.is_draining() {
            "draining"
        } else {
            "ready"
        }
    }
}

pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub hub: mpsc::Sender<HubCommand>,
    pub drain: DrainSwitch,
    next_worker: AtomicUsize,
}

impl Shared {
    pub fn new(config: Config, metrics: Arc<Metrics>, hub: mpsc::Sender<HubCommand>) -> Self {
        Self {
            config,
            metrics,
            hub,
            drain: DrainSwitch::default(),
            next_worker: AtomicUsize::new(0),
        }
    }

    /// A fresh worker id.
    pub fn worker_id(&self) -> usize {
        self.next_worker.fetch_add(1, Relaxed)
    }
}
