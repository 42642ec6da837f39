//! The state shared by every connection task and the orchestrator: progress
//! counters, subscriptions per channel, probe arrivals, the first errors,
//! the current [`Round`] and the one shared inflater.
//!
//! Everything runs on one thread, so plain `Cell`s and `RefCell`s suffice.
//! How a message changes this state is in [`super::message`].

use super::{ClientConfig, Round};
use crate::ws::Inflater;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// How many connection errors and server error replies are kept.
pub(super) const MAX_ERRORS_KEPT: usize = 20;

/// State shared by all connection tasks and the orchestrator.
pub struct Shared {
    /// Settings.
    pub cfg: ClientConfig,
    /// Connections whose subscribe was acknowledged.
    pub subscribed: Cell<usize>,
    /// Connections that gave up (connect, handshake or subscribe failed).
    pub failed: Cell<usize>,
    /// Subscribed connections that later ended.
    pub closed: Cell<usize>,
    /// Connections on which the server accepted permessage-deflate.
    pub deflate: Cell<usize>,
    /// Connect attempts that had to be retried.
    pub retries: Cell<u64>,
    /// Data messages of any kind received (for quiescence checks).
    pub messages: Cell<u64>,
    /// Subscribed connections per channel.
    pub subs_per_channel: RefCell<Vec<u64>>,
    /// First few error descriptions.
    pub errors: RefCell<Vec<String>>,
    /// Error-reply texts from the server (first few).
    pub server_errors: RefCell<Vec<String>>,
    probes: RefCell<Vec<bool>>,
    probe_channels: Cell<usize>,
    /// Current round counters.
    pub round: RefCell<Round>,
    /// The one inflater for every compressed message (never reset).
    pub(super) inflater: RefCell<Inflater>,
}

impl Shared {
    /// Fresh state.
    pub fn new(cfg: ClientConfig) -> Rc<Shared> {
        let channels = cfg.channels;
        Rc::new(Shared {
            cfg,
            subscribed: Cell::new(0),
            failed: Cell::new(0),
            closed: Cell::new(0),
            deflate: Cell::new(0),
            retries: Cell::new(0),
            messages: Cell::new(0),
            subs_per_channel: RefCell::new(vec![0; channels]),
            errors: RefCell::new(Vec::new()),
            server_errors: RefCell::new(Vec::new()),
            probes: RefCell::new(vec![false; channels]),
            probe_channels: Cell::new(0),
            round: RefCell::new(Round::new()),
            inflater: RefCell::new(Inflater::new()),
        })
    }

    /// Compressed payloads inflated so far, and those served from the
    /// identical-payload cache.
    pub fn inflate_counts(&self) -> (u64, u64) {
        let inf = self.inflater.borrow();
        (inf.inflated, inf.cache_hits)
    }

    /// Channels on which at least one probe arrived.
    pub fn probe_channels(&self) -> usize {
        self.probe_channels.get()
    }

    /// Channels still waiting for a probe (first few).
    pub fn missing_probe_channels(&self, max: usize) -> Vec<usize> {
        self.probes
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, seen)| !**seen)
            .map(|(c, _)| c)
            .take(max)
            .collect()
    }

    /// Notes that channel `c` delivered a probe.
    pub(super) fn mark_probe(&self, c: usize) {
        let mut probes = self.probes.borrow_mut();
        if let Some(seen) = probes.get_mut(c) {
            if !*seen {
                *seen = true;
                self.probe_channels.set(self.probe_channels.get() + 1);
            }
        }
    }

    /// Keeps `msg` if fewer than [`MAX_ERRORS_KEPT`] errors are kept.
    pub(super) fn note_error(&self, msg: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS_KEPT {
            errors.push(msg);
        }
    }

    /// Counts connection `idx` as failed and keeps why.
    pub(super) fn fail(&self, idx: usize, err: &anyhow::Error) {
        self.failed.set(self.failed.get() + 1);
        self.note_error(format!("connection {idx}: {err:#}"));
    }
}

/// Waits until no data message arrived for `quiet`, at most `max`.
pub async fn quiesce(shared: &Shared, quiet: Duration, max: Duration) -> bool {
    let start = Instant::now();
    let mut last = shared.messages.get();
    let mut last_change = Instant::now();
    while start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = shared.messages.get();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return true;
        }
    }
    false
}
