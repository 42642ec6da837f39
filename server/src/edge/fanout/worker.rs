//! One worker thread's share of the fan-out: its sessions, which of them hold each
//! channel, and the loops that deliver hub messages, ping clients, and drain.
//!
//! Everything here is thread-local (`Rc`/`RefCell`): Actix runs each worker on its own
//! single-threaded runtime, so a delivery touches no lock and no shared cache line
//! beyond the message's reference count, taken once per worker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushfleet_protocol::client::{Reply, Request};
use pushfleet_protocol::{ErrorCode, RequestError};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::edge::codec::frame::{close_code, encode_frame, OpCode};
use crate::edge::connection::outbox::{Item, LocalMessage};
use crate::edge::connection::session::Session;
use crate::edge::fanout::encoded::EncodedMessage;
use crate::edge::fanout::hub::{HubCommand, ToWorker, WORKER_QUEUE};
use crate::edge::state::Shared;
use crate::edge::telemetry::metrics::WorkerMetrics;

/// How many slices the heartbeat interval is cut into (see `heartbeat_loop`).
pub const HEARTBEAT_SLICES: u64 = 64;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

struct LocalChannel {
    subscribers: Vec<Rc<Session>>,
    latest: Option<LocalMessage>,
}

pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub metrics: Arc<WorkerMetrics>,
    channels: RefCell<HashMap<Arc<str>, LocalChannel>>,
    sessions: RefCell<HashMap<u64, Rc<Session>>>,
    next_session: Cell<u64>,
}

impl Worker {
    /// This thread's worker, created (and registered with the hub) on first use.
    /// Must be called from within the worker's runtime (a request handler).
    pub fn current(shared: &Arc<Shared>) -> Rc<Worker> {
        if let Some(w) = CURRENT.with(|c| c.borrow().clone()) {
            return w;
        }
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let worker = Rc::new(Worker {
            id: shared.worker_id(),
            shared: shared.clone(),
            metrics: shared.metrics.add_worker(),
            channels: RefCell::new(HashMap::new()),
            sessions: RefCell::new(HashMap::new()),
            next_session: Cell::new(1),
        });
        // Sent on the queue its interest will use, so the hub knows the worker before its
        // first subscribe; if that queue is full, a task sends it later and an interest
        // sent meanwhile can overtake it.
        let register = HubCommand::RegisterWorker { id: worker.id, tx };
        if let Err(mpsc::error::TrySendError::Full(register)) = shared.hub.try_send(register) {
            let hub = shared.hub.clone();
            actix_web::rt::spawn(async move {
                let _ = hub.send(register).await;
            });
        }
        actix_web::rt::spawn(worker.clone().dispatch_loop(rx));
        actix_web::rt::spawn(worker.clone().heartbeat_loop());
        actix_web::rt::spawn(worker.clone().drain_loop());
        debug!(worker = worker.id, "worker started");
        CURRENT.with(|c| *c.borrow_mut() = Some(worker.clone()));
        worker
    }

    pub fn open_session(&self, compressed: bool) -> Rc<Session> {
        let id = self.next_session.get();
        self.next_session.set(id + 1);
        let config = &self.shared.config;
        let session = Rc::new(Session::new(
            id,
            compressed,
            config.send_queue,
            config.slow_client,
        ));
        self.sessions.borrow_mut().insert(id, session.clone());
        // `connections` was already counted when the upgrade reserved its slot.
        let m = &self.shared.metrics;
        m.connections_accepted.fetch_add(1, Relaxed);
        if compressed {
            m.compressed_connections.fetch_add(1, Relaxed);
        }
        session
    }

    /// Forgets a finished session: its subscriptions, its queue, its counters.
    pub fn close_session(&self, session: &Rc<Session>) {
        if self.sessions.borrow_mut().remove(&session.id).is_none() {
            return;
        }
        for channel in session.take_subscriptions() {
            self.remove_subscriber(&channel, session.id);
        }
        session.outbox.borrow_mut().discard(&self.metrics);
        let m = &self.shared.metrics;
        m.connections.fetch_sub(1, Relaxed);
        if session.compressed {
            m.compressed_connections.fetch_sub(1, Relaxed);
        }
    }

    /// Handles a subscribe request; the ack (and any snapshot) is queued on success.
    pub async fn subscribe(
        &self,
        session: &Rc<Session>,
        request: Request,
    ) -> Result<(), RequestError> {
        let refuse = |code, message: String| {
            let mut e = RequestError::new(code, message);
            e.id = request.id.clone();
            e.channel = Some(request.channel.clone());
            e
        };
        if self.shared.drain.is_draining() {
            return Err(refuse(
                ErrorCode::Draining,
                "this edge is draining; reconnect to subscribe".into(),
            ));
        }
        let ack = Reply::Subscribed {
            channel: &request.channel,
            id: request.id.as_ref(),
        }
        .to_json();
        if session.holds(&request.channel) {
            session.send_text(&ack, &self.metrics);
            return Ok(());
        }
        let max = self.shared.config.max_subscriptions;
        if session.subscription_count() >= max {
            return Err(refuse(
                ErrorCode::TooManySubscriptions,
                format!("a connection may hold at most {max} subscriptions"),
            ));
        }
        session.send_text(&ack, &self.metrics);
        let (key, snapshot, first) = {
            let mut channels = self.channels.borrow_mut();
            let first = !channels.contains_key(request.channel.as_str());
            let key: Arc<str> = match channels.get_key_value(request.channel.as_str()) {
                Some((k, _)) => k.clone(),
                None => Arc::from(request.channel.as_str()),
            };
            let entry = channels.entry(key.clone()).or_insert_with(|| LocalChannel {
                subscribers: Vec::new(),
                latest: None,
            });
            entry.subscribers.push(session.clone());
            (key, entry.latest.clone(), first)
        };
        session.add_subscription(key.clone());
        self.shared.metrics.subscriptions.fetch_add(1, Relaxed);
        if let Some(latest) = snapshot {
            self.push_message(session, Item::Snapshot(latest));
        }
        if first {
            let interest = HubCommand::Interest {
                worker: self.id,
                channel: key,
            };
            let _ = self.shared.hub.send(interest).await;
        }
        Ok(())
    }

    pub fn unsubscribe(&self, session: &Rc<Session>, request: Request) -> Result<(), RequestError> {
        let Some(channel) = session.remove_subscription(&request.channel) else {
            let mut e = RequestError::new(
                ErrorCode::NotSubscribed,
                format!("not subscribed to {:?}", request.channel),
            );
            e.id = request.id;
            e.channel = Some(request.channel);
            return Err(e);
        };
        self.remove_subscriber(&channel, session.id);
        let ack = Reply::Unsubscribed {
            channel: &request.channel,
            id: request.id.as_ref(),
        }
        .to_json();
        session.send_text(&ack, &self.metrics);
        Ok(())
    }

    /// Answers `info`: this edge, this socket's compression, the edge's deflate ratio.
    pub fn info(&self, session: &Rc<Session>, request: Request) {
        let metrics = &self.shared.metrics;
        let (deflate_in, deflate_out) = (
            metrics.deflate_bytes_in.load(Relaxed),
            metrics.deflate_bytes_out.load(Relaxed),
        );
        let reply = Reply::Info {
            id: request.id.as_ref(),
            edge: &metrics.edge_id,
            deflate: session.compressed,
            subscriptions: session.subscription_count(),
            deflate_ratio: (deflate_in > 0).then(|| deflate_out as f64 / deflate_in as f64),
        }
        .to_json();
        session.send_text(&reply, &self.metrics);
    }

    fn remove_subscriber(&self, channel: &Arc<str>, session_id: u64) {
        let mut channels = self.channels.borrow_mut();
        let Some(entry) = channels.get_mut(channel) else {
            return;
        };
        if let Some(i) = entry.subscribers.iter().position(|s| s.id == session_id) {
            entry.subscribers.swap_remove(i);
            self.shared.metrics.subscriptions.fetch_sub(1, Relaxed);
        }
        if entry.subscribers.is_empty() {
            channels.remove(channel);
            let command = HubCommand::Uninterest {
                worker: self.id,
                channel: channel.clone(),
            };
            if let Err(mpsc::error::TrySendError::Full(command)) = self.shared.hub.try_send(command)
            {
                let hub = self.shared.hub.clone();
                actix_web::rt::spawn(async move {
                    let _ = hub.send(command).await;
                });
            }
        }
    }

    fn push_message(&self, session: &Rc<Session>, item: Item) {
        session
            .outbox
            .borrow_mut()
            .push_message(item, &self.metrics);
    }

    fn deliver(&self, published: Arc<EncodedMessage>) {
        let channels = self.channels.borrow();
        let Some(entry) = channels.get(&published.channel) else {
            return; // the last local subscriber left while this was in flight
        };
        let shared = Rc::new(published);
        for session in &entry.subscribers {
            self.push_message(session, Item::Message(shared.clone()));
        }
        drop(channels);
        if let Some(entry) = self.channels.borrow_mut().get_mut(&shared.channel) {
            entry.latest = Some(shared);
        }
    }

    /// The hub's answer to our interest: the channel's latest value. Everyone who
    /// subscribed since has seen nothing of the channel yet, unless a live message
    /// already overtook it (then the snapshot is stale and skipped).
    fn on_snapshot(&self, published: Arc<EncodedMessage>) {
        let subscribers = {
            let mut channels = self.channels.borrow_mut();
            let Some(entry) = channels.get_mut(&published.channel) else {
                return;
            };
            if entry.latest.is_some() {
                return;
            }
            let shared = Rc::new(published);
            entry.latest = Some(shared.clone());
            (shared, entry.subscribers.clone())
        };
        for session in &subscribers.1 {
            self.push_message(session, Item::Snapshot(subscribers.0.clone()));
        }
    }

    async fn dispatch_loop(self: Rc<Self>, mut rx: mpsc::Receiver<ToWorker>) {
        let mut batch = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            for message in batch.drain(..) {
                match message {
                    ToWorker::Publish(p) => self.deliver(p),
                    ToWorker::Snapshot(p) => self.on_snapshot(p),
                }
            }
        }
    }

    fn all_sessions(&self) -> Vec<Rc<Session>> {
        self.sessions.borrow().values().cloned().collect()
    }

    /// Pings every client once per interval and closes those silent past the timeout.
    /// The work is spread over the interval in [`HEARTBEAT_SLICES`] slices (a session
    /// belongs to slice `id % HEARTBEAT_SLICES`), so 100k sockets are never pinged in
    /// one burst that would stall deliveries behind it.
    async fn heartbeat_loop(self: Rc<Self>) {
        let config = &self.shared.config;
        let ping = encode_frame(OpCode::Ping, false, b"");
        let mut tick = tokio::time::interval(config.heartbeat_interval / HEARTBEAT_SLICES as u32);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut slice = 0u64;
        loop {
            tick.tick().await;
            slice = (slice + 1) % HEARTBEAT_SLICES;
            let now = Instant::now();
            let due: Vec<Rc<Session>> = self
                .sessions
                .borrow()
                .values()
                .filter(|s| s.id % HEARTBEAT_SLICES == slice)
                .cloned()
                .collect();
            for session in due {
                if !session.outbox.borrow().is_open() {
                    continue; // already closing
                }
                if now.duration_since(session.last_seen()) > config.heartbeat_timeout {
                    self.shared.metrics.heartbeat_timeouts.fetch_add(1, Relaxed);
                    session.fail(close_code::GOING_AWAY, "heartbeat timeout");
                } else {
                    session.send_control(ping.clone(), &self.metrics);
                }
            }
        }
    }

    /// When the edge starts draining, tells each client to reconnect elsewhere at a
    /// random moment within the drain spread, then closes it with 1012.
    async fn drain_loop(self: Rc<Self>) {
        let mut watch = self.shared.drain.watch();
        while !*watch.borrow_and_update() {
            if watch.changed().await.is_err() {
                return;
            }
        }
        let spread = self.shared.config.drain_spread;
        let start = tokio::time::Instant::now();
        let mut schedule: Vec<(Duration, Rc<Session>)> = self
            .all_sessions()
            .into_iter()
            .map(|s| (spread.mul_f64(fastrand::f64()), s))
            .collect();
        schedule.sort_by_key(|(at, _)| *at);
        info!(
            worker = self.id,
            sessions = schedule.len(),
            ?spread,
            "draining: telling clients to reconnect"
        );
        for (at, session) in schedule {
            tokio::time::sleep_until(start + at).await;
            let hint = Reply::Reconnect {
                reason: "draining",
                retry_after_ms: fastrand::u64(0..=1000),
            }
            .to_json();
            session.send_text(&hint, &self.metrics);
            session.close(close_code::SERVICE_RESTART, "edge draining");
        }
    }
}
