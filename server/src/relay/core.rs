//! The relay's core: one thread that owns every ZeroMQ socket of the relay and
//! moves each publish from where it arrived to where it goes.
//!
//! In: a PULL socket publishers (and peer relays) push to, and an in-process PULL
//! socket the HTTP handlers push validated publishes to. Out: an XPUB socket edges
//! subscribe to, and one PUSH socket per peer relay for publishes whose channel
//! another relay owns.
//!
//! The edge-facing socket is libzmq's (through the `zmq` crate), not zmq.rs's: its
//! per-connection send high-water mark is what bounds the relay's memory when an
//! edge stalls (zmq.rs's PUB grows without bound; see the README and
//! `docs/BENCHMARKS.md`). When one edge's queue is full, libzmq drops that edge's
//! copy only; every other edge keeps receiving. The relay numbers each channel's
//! messages, so the stalled edge counts exactly what it missed from the gap.
//!
//! Frames are moved, not copied: the channel, event and data a publisher sent are
//! the very buffers the edges receive; the relay adds only the sequence frame.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushfleet_protocol::publish::{self, Malformed};
use tracing::{debug, info, warn};
use zmq::{Message, Socket, SocketEvent};

use super::interest::{Change, Interest, Route};
use super::metrics::{RelayDrop, RelayMetrics};
use super::shards::{Owner, Owners, ShardSet};

/// Fourth frame of a publish one relay hands to the relay that owns its channel.
/// A relay never passes on a publish that carries it, so two relays that briefly
/// disagree about the shard set cannot bounce a message between them.
pub const HANDED_OVER: &[u8] = b"pushfleet-handover";
/// In-process endpoint of the HTTP → core queue.
pub const HTTP_ENDPOINT: &str = "inproc://pushfleet-relay-http";
const MONITOR_ENDPOINT: &str = "inproc://pushfleet-relay-edge-monitor";
/// Messages taken from one socket before the loop serves the others.
const BATCH: usize = 1024;
/// Longest sleep in `poll`: how fast the loop notices a stop request or a new shard set.
const POLL_TIMEOUT_MS: i64 = 100;
/// Frames kept of one multipart message; more than that is malformed anyway.
const MAX_FRAMES: usize = 4;
/// How long a peer relay's queue may keep flushing after shutdown.
const PEER_LINGER_MS: i32 = 1000;

/// The relay's bound sockets.
pub struct Sockets {
    pub publish: Socket,
    pub edges: Socket,
    pub http: Socket,
    monitor: Socket,
}

/// Socket settings.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    pub publish_bind: String,
    pub edge_bind: String,
    pub edge_queue: i32,
    pub publish_queue: i32,
}

/// Binds every socket; an error here means the relay cannot start.
pub fn bind(ctx: &zmq::Context, config: &SocketConfig) -> Result<Sockets, zmq::Error> {
    let publish = ctx.socket(zmq::PULL)?;
    publish.set_rcvhwm(config.publish_queue)?;
    publish.set_linger(0)?;
    publish.bind(&config.publish_bind)?;

    let edges = ctx.socket(zmq::XPUB)?;
    edges.set_sndhwm(config.edge_queue)?;
    edges.set_linger(0)?;
    // A vanished edge host is noticed by TCP keep-alive rather than never.
    edges.set_tcp_keepalive(1)?;
    edges.set_tcp_keepalive_idle(30)?;
    edges.set_tcp_keepalive_intvl(10)?;
    edges.monitor(
        MONITOR_ENDPOINT,
        (SocketEvent::ACCEPTED.to_raw() | SocketEvent::DISCONNECTED.to_raw()) as i32,
    )?;
    edges.bind(&config.edge_bind)?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.connect(MONITOR_ENDPOINT)?;

    let http = ctx.socket(zmq::PULL)?;
    http.set_rcvhwm(config.publish_queue)?;
    http.bind(HTTP_ENDPOINT)?;
    Ok(Sockets {
        publish,
        edges,
        http,
        monitor,
    })
}

/// The core loop's state.
pub struct Core {
    ctx: zmq::Context,
    sockets: Sockets,
    interest: Interest,
    shards: Arc<ShardSet>,
    seen_generation: u64,
    owners: Owners,
    peers: HashMap<String, Socket>,
    own_endpoint: String,
    publish_queue: i32,
    max_data: usize,
    metrics: Arc<RelayMetrics>,
    frames: Vec<Message>,
    edges_accepted: u64,
    edges_disconnected: u64,
}

/// Where a message was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Zmq,
    Http,
}

impl Core {
    pub fn new(
        ctx: zmq::Context,
        sockets: Sockets,
        shards: Arc<ShardSet>,
        own_endpoint: String,
        socket_config: &SocketConfig,
        max_data: usize,
        metrics: Arc<RelayMetrics>,
    ) -> Self {
        Self {
            ctx,
            sockets,
            interest: Interest::default(),
            shards,
            seen_generation: u64::MAX,
            owners: Owners::new(Vec::new(), own_endpoint.clone()),
            peers: HashMap::new(),
            own_endpoint,
            publish_queue: socket_config.publish_queue,
            max_data,
            metrics,
            frames: Vec::with_capacity(MAX_FRAMES),
            edges_accepted: 0,
            edges_disconnected: 0,
        }
    }

    /// Runs until `stop` is set, then serves what has already arrived and returns.
    ///
    /// For the first `hold` it reads only subscriptions: after a restart, edges need
    /// a moment to reconnect and resubscribe, and publishes read before that would
    /// find no subscriber and be lost. Held back, they wait in the publishers' queues
    /// and go out once edges are back, so a restart delays messages instead of
    /// dropping them.
    pub fn run(mut self, stop: &AtomicBool, hold: Duration) {
        let hold_until = Instant::now() + hold;
        while !stop.load(Ordering::Relaxed) {
            self.follow_shards();
            let holding = Instant::now() < hold_until;
            let ready = {
                let mut items = [
                    self.sockets.edges.as_poll_item(zmq::POLLIN),
                    self.sockets.monitor.as_poll_item(zmq::POLLIN),
                    self.sockets.publish.as_poll_item(zmq::POLLIN),
                    self.sockets.http.as_poll_item(zmq::POLLIN),
                ];
                let watched = if holding { 2 } else { 4 };
                match zmq::poll(&mut items[..watched], POLL_TIMEOUT_MS) {
                    Ok(_) => items.map(|i| i.is_readable()),
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        warn!(error = %e, "ZeroMQ poll failed");
                        [true, true, !holding, !holding]
                    }
                }
            };
            // Subscriptions first, so a publish right behind a subscribe is routed.
            if ready[0] {
                self.serve_subscriptions();
            }
            if ready[1] {
                self.serve_monitor();
            }
            if ready[2] {
                self.serve_publishes(Source::Zmq);
            }
            if ready[3] {
                self.serve_publishes(Source::Http);
            }
        }
        // Serve what already arrived; publishers' PUSH sockets keep the rest queued
        // for whichever relay takes over.
        self.serve_subscriptions();
        self.serve_publishes(Source::Zmq);
        self.serve_publishes(Source::Http);
        info!("relay core stopped");
    }

    fn follow_shards(&mut self) {
        let generation = self.shards.generation();
        if generation == self.seen_generation {
            return;
        }
        self.seen_generation = generation;
        let relays = self.shards.snapshot();
        self.owners = Owners::new(relays, self.own_endpoint.clone());
        self.metrics.relays.store(self.owners.len() as u64, Relaxed);
        let wanted: Vec<String> = self.owners.peers().map(str::to_owned).collect();
        self.peers.retain(|endpoint, _| wanted.contains(endpoint));
        for endpoint in wanted {
            if self.peers.contains_key(&endpoint) {
                continue;
            }
            match self.connect_peer(&endpoint) {
                Ok(socket) => {
                    self.peers.insert(endpoint, socket);
                }
                Err(e) => warn!(%endpoint, error = %e, "cannot connect to peer relay"),
            }
        }
        info!(relays = self.owners.len(), "relay set changed");
    }

    fn connect_peer(&self, endpoint: &str) -> Result<Socket, zmq::Error> {
        let socket = self.ctx.socket(zmq::PUSH)?;
        socket.set_sndhwm(self.publish_queue)?;
        socket.set_linger(PEER_LINGER_MS)?;
        socket.connect(endpoint)?;
        Ok(socket)
    }

    fn serve_subscriptions(&mut self) {
        for _ in 0..BATCH {
            match self.sockets.edges.recv_msg(zmq::DONTWAIT) {
                Ok(message) => match Change::parse(&message) {
                    Some(change) => {
                        debug!(?change, "edge interest changed");
                        self.interest.apply(change);
                    }
                    None => debug!("ignoring a non-subscription message from an edge"),
                },
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => {
                    warn!(error = %e, "reading edge subscriptions failed");
                    break;
                }
            }
        }
        self.metrics
            .channels
            .store(self.interest.len() as u64, Relaxed);
    }

    fn serve_monitor(&mut self) {
        for _ in 0..BATCH {
            let Ok(event) = self.sockets.monitor.recv_msg(zmq::DONTWAIT) else {
                break;
            };
            // Each event is two frames: [u16 event, u32 value] and the endpoint.
            while self.sockets.monitor.get_rcvmore().unwrap_or(false) {
                let _ = self.sockets.monitor.recv_msg(0);
            }
            if event.len() < 2 {
                continue;
            }
            let code = u16::from_ne_bytes([event[0], event[1]]);
            if code == SocketEvent::ACCEPTED.to_raw() {
                self.edges_accepted += 1;
            } else if code == SocketEvent::DISCONNECTED.to_raw() {
                self.edges_disconnected += 1;
            }
        }
        let edges = self.edges_accepted.saturating_sub(self.edges_disconnected);
        self.metrics.edges.store(edges, Relaxed);
    }

    fn serve_publishes(&mut self, source: Source) {
        for _ in 0..BATCH {
            let socket = match source {
                Source::Zmq => &self.sockets.publish,
                Source::Http => &self.sockets.http,
            };
            match recv_frames(socket, &mut self.frames) {
                Ok(None) => break,
                Ok(Some(count)) => {
                    if source == Source::Zmq {
                        self.metrics.received_zmq.fetch_add(1, Relaxed);
                    }
                    self.handle(count);
                }
                Err(e) => {
                    warn!(error = %e, "reading publishes failed");
                    break;
                }
            }
        }
    }

    /// Validates and routes the message in `self.frames` (`count` frames arrived).
    fn handle(&mut self, count: usize) {
        let handed_over = count == 4 && &*self.frames[3] == HANDED_OVER;
        if handed_over {
            self.metrics.received_from_peer.fetch_add(1, Relaxed);
        }
        if count != 3 && !handed_over {
            self.metrics
                .drop_for(RelayDrop::Malformed(Malformed::Frames));
            return;
        }
        let owner = {
            let f = &self.frames;
            let frames: [&[u8]; 3] = [&f[0], &f[1], &f[2]];
            match publish::parse(&frames, self.max_data) {
                Err(e) => {
                    debug!(error = %e, "dropping a malformed publish");
                    self.metrics.drop_for(RelayDrop::Malformed(e.malformed()));
                    return;
                }
                Ok(_) if handed_over => None,
                Ok(p) => match self.owners.of(p.channel) {
                    Owner::Me => None,
                    Owner::Peer(peer) => Some(peer.to_owned()),
                },
            }
        };
        if let Some(peer) = owner {
            self.hand_over(&peer);
            return;
        }
        match self.interest.route(self.frames[0].as_ref()) {
            Route::Nowhere => {
                self.metrics.no_subscribers.fetch_add(1, Relaxed);
            }
            Route::Numbered(seq) => {
                let mut digits = [0u8; 20];
                let mut cursor = &mut digits[..];
                let _ = write!(cursor, "{seq}");
                let len = 20 - cursor.len();
                let seq_frame = Message::from(&digits[..len]);
                self.send_to_edges(Some(seq_frame));
            }
            Route::Unnumbered => self.send_to_edges(None),
        }
    }

    fn send_to_edges(&mut self, seq: Option<Message>) {
        let frames = self.frames.drain(..3).chain(seq);
        match send_multipart(&self.sockets.edges, frames) {
            Ok(()) => {
                self.metrics.forwarded.fetch_add(1, Relaxed);
            }
            // XPUB drops a full edge's copy itself and never refuses; an error here
            // means the socket is going away.
            Err(e) => debug!(error = %e, "sending to edges failed"),
        }
    }

    fn hand_over(&mut self, peer: &str) {
        let Some(socket) = self.peers.get(peer) else {
            self.metrics.drop_for(RelayDrop::OwnerUnavailable);
            return;
        };
        let marker = Message::from(HANDED_OVER);
        let result = send_multipart(socket, self.frames.drain(..3).chain([marker]));
        match result {
            Ok(()) => {
                self.metrics.to_owner.fetch_add(1, Relaxed);
            }
            Err(e) => {
                debug!(%peer, error = %e, "owner relay cannot take the publish");
                self.metrics.drop_for(RelayDrop::OwnerUnavailable);
            }
        }
    }
}

/// Sends `frames` as one multipart message without blocking. Only the first frame
/// can meet a full queue: libzmq takes the rest of a started message whole.
fn send_multipart(
    socket: &Socket,
    frames: impl Iterator<Item = Message>,
) -> Result<(), zmq::Error> {
    let mut frames = frames.peekable();
    while let Some(frame) = frames.next() {
        let more = if frames.peek().is_some() {
            zmq::SNDMORE
        } else {
            0
        };
        socket.send(frame, more | zmq::DONTWAIT)?;
    }
    Ok(())
}

/// Reads one multipart message into `frames` without blocking: `None` when nothing
/// is waiting, else the number of frames that arrived (at most [`MAX_FRAMES`] kept).
fn recv_frames(socket: &Socket, frames: &mut Vec<Message>) -> Result<Option<usize>, zmq::Error> {
    frames.clear();
    let mut first = Message::new();
    match socket.recv(&mut first, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut more = first.get_more();
    frames.push(first);
    let mut count = 1;
    while more {
        // The rest of a multipart message is already here: libzmq delivers it whole.
        let mut frame = Message::new();
        socket.recv(&mut frame, 0)?;
        more = frame.get_more();
        count += 1;
        if frames.len() < MAX_FRAMES {
            frames.push(frame);
        }
    }
    Ok(Some(count))
}
