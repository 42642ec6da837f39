//! ZeroMQ ingress: the thread that owns the edge's SUB socket (libzmq, through the
//! `zmq` crate).
//!
//! It connects to every relay (or publisher) it is given; libzmq reconnects by
//! itself after a peer restarts and sends the subscriptions again. The set may change
//! while running (relays found in etcd): new endpoints are connected, gone ones
//! disconnected. It applies subscribe/unsubscribe requests from the hub and drains
//! the socket at once into the hub's bounded queue; when that queue is full, new
//! publishes are dropped and counted (`ingress_full`).
//!
//! Why libzmq here too (the edge used zmq.rs first): measured with an edge frozen by
//! SIGSTOP for 30 s under a 100k msg/s flood, a zmq.rs SUB took from 1 to 27 s after
//! SIGCONT before messages flowed again, while the relay's kernel buffer held data
//! the edge had room for; a libzmq SUB in the same run resumed within 2 s
//! (`docs/BENCHMARKS.md`, "Relay: a frozen edge").
//!
//! Relays number each channel's messages. For every held channel the thread
//! remembers the last number seen, and counts the gaps (`upstream_lost`): messages
//! the relay dropped while this edge was too slow, or lost in flight when a relay
//! restarted. Counting here, before the edge's own queues, keeps the edge's own
//! drops out of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use zmq::{Message, SocketEvent};

use crate::edge::telemetry::metrics::{IngressDrop, Metrics};

/// Capacity of the hub → ingress control queue.
pub const CONTROL_QUEUE: usize = 4096;
/// libzmq's own receive queue, in messages, in front of the hub's queue. The thread
/// drains it at once, so it only absorbs the moments the thread is descheduled.
const RECEIVE_QUEUE: i32 = 10_000;
/// Longest sleep in `poll`: how soon a subscription change or a new relay set is
/// applied when no message arrives.
const POLL_TIMEOUT_MS: i64 = 5;
/// Messages taken off the socket before looking at control requests again.
const BATCH: usize = 1024;
/// Frames kept of one multipart message; more is malformed anyway.
pub const MAX_FRAMES: usize = 5;
const MONITOR_ENDPOINT: &str = "inproc://pushfleet-edge-ingress-monitor";

/// A publish as it left the socket: its frames, and when it was taken.
pub type Received = (Vec<Message>, Instant);

/// Subscription changes requested by the hub.
#[derive(Debug)]
pub enum ZmqControl {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// Where the ingress connects: fixed endpoints, plus a set that may change.
pub struct Upstreams {
    pub fixed: Vec<String>,
    pub discovered: Option<watch::Receiver<Vec<String>>>,
}

/// Per held channel, the last relay sequence number seen (0: none yet).
#[derive(Debug, Default)]
pub struct GapTracker {
    last: HashMap<Box<[u8]>, u64>,
}

/// What one numbered message says about the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The next number, the first one seen, or a channel not held.
    InOrder,
    /// This many messages are missing before it.
    Gap(u64),
    /// The number went backwards: the relay restarted or the channel moved.
    Reset,
}

impl GapTracker {
    pub fn hold(&mut self, channel: &str) {
        self.last.entry(channel.as_bytes().into()).or_insert(0);
    }

    pub fn release(&mut self, channel: &str) {
        self.last.remove(channel.as_bytes());
    }

    /// Records `seq` for `channel`.
    pub fn observe(&mut self, channel: &[u8], seq: u64) -> Continuity {
        let Some(last) = self.last.get_mut(channel) else {
            return Continuity::InOrder;
        };
        let previous = std::mem::replace(last, seq);
        if previous == 0 || seq == previous + 1 {
            Continuity::InOrder
        } else if seq > previous {
            Continuity::Gap(seq - previous - 1)
        } else {
            Continuity::Reset
        }
    }
}

/// The relay sequence number of a message, if it carries a well-formed one.
fn relay_seq(frames: &[Message]) -> Option<u64> {
    let frame = frames.get(3)?;
    std::str::from_utf8(frame).ok()?.parse().ok()
}

struct Ingress {
    socket: zmq::Socket,
    monitor: zmq::Socket,
    wanted: BTreeSet<String>,
    /// Endpoints with a live connection, from libzmq's monitor events.
    live: BTreeSet<String>,
    gaps: GapTracker,
    metrics: Arc<Metrics>,
}

impl Ingress {
    fn new(ctx: &zmq::Context, metrics: Arc<Metrics>) -> Result<Self, zmq::Error> {
        let socket = ctx.socket(zmq::SUB)?;
        socket.set_rcvhwm(RECEIVE_QUEUE)?;
        socket.set_linger(0)?;
        socket.monitor(
            MONITOR_ENDPOINT,
            (SocketEvent::CONNECTED.to_raw()
                | SocketEvent::DISCONNECTED.to_raw()
                | SocketEvent::CLOSED.to_raw()) as i32,
        )?;
        let monitor = ctx.socket(zmq::PAIR)?;
        monitor.connect(MONITOR_ENDPOINT)?;
        Ok(Self {
            socket,
            monitor,
            wanted: BTreeSet::new(),
            live: BTreeSet::new(),
            gaps: GapTracker::default(),
            metrics,
        })
    }

    /// Connects new endpoints and disconnects gone ones.
    fn set_wanted(&mut self, wanted: BTreeSet<String>) {
        for gone in self.wanted.difference(&wanted) {
            match self.socket.disconnect(gone) {
                Ok(()) => info!(endpoint = %gone, "disconnected from a relay that left"),
                Err(e) => debug!(endpoint = %gone, error = %e, "disconnect failed"),
            }
            self.live.remove(gone);
        }
        for new in wanted.difference(&self.wanted) {
            match self.socket.connect(new) {
                Ok(()) => info!(endpoint = %new, "connecting to ZeroMQ publisher"),
                Err(e) => warn!(endpoint = %new, error = %e, "cannot connect"),
            }
        }
        self.wanted = wanted;
        self.metrics
            .zmq_connected
            .store(self.live.len() as i64, Relaxed);
    }

    fn serve_monitor(&mut self) {
        while let Ok(event) = self.monitor.recv_msg(zmq::DONTWAIT) {
            let endpoint = match self.monitor.get_rcvmore() {
                Ok(true) => self
                    .monitor
                    .recv_msg(0)
                    .ok()
                    .and_then(|m| m.as_str().map(str::to_owned)),
                _ => None,
            };
            let (Some(endpoint), true) = (endpoint, event.len() >= 2) else {
                continue;
            };
            let code = u16::from_ne_bytes([event[0], event[1]]);
            if code == SocketEvent::CONNECTED.to_raw() {
                if self.wanted.contains(&endpoint) {
                    info!(%endpoint, "connected to ZeroMQ publisher");
                    self.live.insert(endpoint);
                }
            } else if self.live.remove(&endpoint) {
                info!(%endpoint, "ZeroMQ publisher connection lost; libzmq reconnects");
            }
        }
        self.metrics
            .zmq_connected
            .store(self.live.len() as i64, Relaxed);
    }

    fn control(&mut self, request: ZmqControl) {
        let result = match &request {
            ZmqControl::Subscribe(channel) => {
                self.gaps.hold(channel);
                self.socket.set_subscribe(channel.as_bytes())
            }
            ZmqControl::Unsubscribe(channel) => {
                self.gaps.release(channel);
                self.socket.set_unsubscribe(channel.as_bytes())
            }
        };
        if let Err(e) = result {
            warn!(?request, error = %e, "ZeroMQ subscription change failed");
        }
    }

    fn account(&mut self, frames: &[Message], count: usize) {
        self.metrics.ingress_received.fetch_add(1, Relaxed);
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.metrics.ingress_bytes.fetch_add(bytes as u64, Relaxed);
        if count != 4 {
            return;
        }
        let (Some(channel), Some(seq)) = (frames.first(), relay_seq(frames)) else {
            return;
        };
        match self.gaps.observe(channel, seq) {
            Continuity::InOrder => {}
            Continuity::Gap(n) => {
                self.metrics.upstream_lost.fetch_add(n, Relaxed);
            }
            Continuity::Reset => {
                self.metrics.upstream_resets.fetch_add(1, Relaxed);
            }
        }
    }

    /// Reads one multipart message without blocking: `None` when nothing waits.
    fn recv(&self) -> Result<Option<(Vec<Message>, usize)>, zmq::Error> {
        let mut first = Message::new();
        match self.socket.recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut more = first.get_more();
        let mut frames = Vec::with_capacity(4);
        frames.push(first);
        let mut count = 1;
        while more {
            let mut frame = Message::new();
            self.socket.recv(&mut frame, 0)?;
            more = frame.get_more();
            count += 1;
            if frames.len() < MAX_FRAMES {
                frames.push(frame);
            }
        }
        Ok(Some((frames, count)))
    }
}

fn union(fixed: &[String], discovered: &Option<watch::Receiver<Vec<String>>>) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = fixed.iter().cloned().collect();
    if let Some(d) = discovered {
        all.extend(d.borrow().iter().cloned());
    }
    all
}

/// Starts the ingress thread; it runs until `control` closes.
pub fn spawn(
    upstreams: Upstreams,
    control: mpsc::Receiver<ZmqControl>,
    hub: mpsc::Sender<Received>,
    metrics: Arc<Metrics>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pushfleet-ingress".into())
        .spawn(move || {
            if let Err(e) = run(upstreams, control, hub, metrics) {
                tracing::error!(error = %e, "the ZeroMQ ingress failed");
            }
        })
}

fn run(
    upstreams: Upstreams,
    mut control: mpsc::Receiver<ZmqControl>,
    hub: mpsc::Sender<Received>,
    metrics: Arc<Metrics>,
) -> Result<(), zmq::Error> {
    let Upstreams {
        fixed,
        mut discovered,
    } = upstreams;
    let ctx = zmq::Context::new();
    let mut ingress = Ingress::new(&ctx, metrics)?;
    ingress.set_wanted(union(&fixed, &discovered));
    loop {
        loop {
            match control.try_recv() {
                Ok(request) => ingress.control(request),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    debug!("ZeroMQ ingress stopped");
                    return Ok(());
                }
            }
        }
        let changed = match &mut discovered {
            Some(d) => match d.has_changed() {
                Ok(changed) => {
                    d.mark_unchanged();
                    changed
                }
                // The discovery task ended: keep the last set.
                Err(_) => false,
            },
            None => false,
        };
        if changed {
            ingress.set_wanted(union(&fixed, &discovered));
        }
        let (readable, monitor_readable) = {
            let mut items = [
                ingress.socket.as_poll_item(zmq::POLLIN),
                ingress.monitor.as_poll_item(zmq::POLLIN),
            ];
            match zmq::poll(&mut items, POLL_TIMEOUT_MS) {
                Ok(_) => (items[0].is_readable(), items[1].is_readable()),
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e),
            }
        };
        if monitor_readable {
            ingress.serve_monitor();
        }
        if !readable {
            continue;
        }
        for _ in 0..BATCH {
            let Some((frames, count)) = ingress.recv()? else {
                break;
            };
            // A message of more than MAX_FRAMES frames arrives cut to MAX_FRAMES,
            // still more than any valid publish: the hub refuses it by count.
            ingress.account(&frames, count);
            if hub.try_send((frames, Instant::now())).is_err() {
                ingress.metrics.ingress_drop(IngressDrop::Full);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_and_resets_of_held_channels_only() {
        let mut g = GapTracker::default();
        assert_eq!(g.observe(b"a", 5), Continuity::InOrder, "not held");
        g.hold("a");
        assert_eq!(g.observe(b"a", 5), Continuity::InOrder, "first seen");
        assert_eq!(g.observe(b"a", 6), Continuity::InOrder);
        assert_eq!(g.observe(b"a", 10), Continuity::Gap(3));
        assert_eq!(g.observe(b"a", 1), Continuity::Reset);
        assert_eq!(g.observe(b"a", 2), Continuity::InOrder);
        g.release("a");
        assert_eq!(g.observe(b"a", 9), Continuity::InOrder);
        g.hold("a");
        g.hold("a");
        assert_eq!(
            g.observe(b"a", 9),
            Continuity::InOrder,
            "re-held starts over"
        );
    }

    #[test]
    fn reads_the_seq_frame() {
        let mut m: Vec<Message> = ["c", "e", "1"].iter().map(|f| Message::from(*f)).collect();
        assert_eq!(relay_seq(&m), None);
        m.push(Message::from("42"));
        assert_eq!(relay_seq(&m), Some(42));
    }
}
