//! What the edge knows of one WebSocket connection: its subscriptions, when it was
//! last heard from, and its outbox. Owned by its worker; the connection's I/O runs in
//! [`super::task`].

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::edge::codec::frame::{encode_frame, OpCode};
use crate::edge::config::SlowClientPolicy;
use crate::edge::connection::outbox::Outbox;
use crate::edge::telemetry::metrics::WorkerMetrics;

/// One connection's state, shared by its worker and its I/O task (same thread).
pub struct Session {
    pub id: u64,
    /// permessage-deflate was negotiated.
    pub compressed: bool,
    pub outbox: RefCell<Outbox>,
    subscriptions: RefCell<Vec<Arc<str>>>,
    last_seen: Cell<Instant>,
}

impl Session {
    pub fn new(id: u64, compressed: bool, send_queue: usize, policy: SlowClientPolicy) -> Self {
        Self {
            id,
            compressed,
            outbox: RefCell::new(Outbox::new(send_queue, policy)),
            subscriptions: RefCell::new(Vec::new()),
            last_seen: Cell::new(Instant::now()),
        }
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen.get()
    }

    /// The client was heard from just now.
    pub fn touch(&self) {
        self.last_seen.set(Instant::now());
    }

    pub fn holds(&self, channel: &str) -> bool {
        self.subscriptions.borrow().iter().any(|c| &**c == channel)
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.borrow().len()
    }

    pub fn add_subscription(&self, channel: Arc<str>) {
        self.subscriptions.borrow_mut().push(channel);
    }

    pub fn remove_subscription(&self, channel: &str) -> Option<Arc<str>> {
        let mut subs = self.subscriptions.borrow_mut();
        let i = subs.iter().position(|c| &**c == channel)?;
        Some(subs.swap_remove(i))
    }

    pub fn take_subscriptions(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.subscriptions.borrow_mut())
    }

    /// Queues a frame for this socket only.
    pub fn send_control(&self, frame: Bytes, metrics: &WorkerMetrics) {
        self.outbox.borrow_mut().push_control(frame, metrics);
    }

    /// Queues a JSON reply as a text frame (uncompressed: replies are tiny).
    pub fn send_text(&self, text: &str, metrics: &WorkerMetrics) {
        self.send_control(encode_frame(OpCode::Text, false, text.as_bytes()), metrics);
    }

    /// Starts the closing handshake from the edge's side.
    pub fn close(&self, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
    }

    /// Closes without waiting for the client's answer (it failed or went silent).
    pub fn fail(&self, code: u16, reason: &str) {
        self.outbox.borrow_mut().fail(code, reason);
    }
}
