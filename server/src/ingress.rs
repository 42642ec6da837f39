//! ZeroMQ ingress: the one task that owns the edge's SUB socket.
//!
//! It connects to every relay (or publisher) it is given, retrying until each is up;
//! zmq.rs then reconnects and resubscribes by itself after a peer restarts. The set
//! may change while running (relays found in etcd): new endpoints are connected, and
//! when one goes away the socket is rebuilt and every held channel resubscribed
//! (zmq.rs cannot disconnect a single endpoint).
//!
//! It applies subscribe/unsubscribe requests from the hub and drains the socket at
//! once into the hub's bounded queue. zmq.rs has no working receive high-water mark,
//! so this queue is the real bound: when it is full, new publishes are dropped and
//! counted (`ingress_full`) rather than left to pile up inside the socket.
//!
//! Relays number each channel's messages. For every held channel the task remembers
//! the last number seen, and counts the gaps (`upstream_lost`): messages the relay
//! dropped while this edge was too slow, or lost in flight when a relay restarted.
//! Counting here, before the edge's own queues, keeps the edge's own drops out of it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use zeromq::{Socket, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

use crate::metrics::Metrics;

/// Capacity of the hub → ingress control queue.
pub const CONTROL_QUEUE: usize = 4096;
/// How long one connect attempt may take before the loop serves other work.
const CONNECT_ATTEMPT: Duration = Duration::from_millis(250);
/// Pause between rounds of connect attempts to endpoints that are not up yet.
const CONNECT_RETRY: Duration = Duration::from_millis(500);

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
fn relay_seq(message: &ZmqMessage) -> Option<u64> {
    let frame = message.get(3)?;
    std::str::from_utf8(frame).ok()?.parse().ok()
}

struct Ingress {
    socket: SubSocket,
    wanted: BTreeSet<String>,
    connected: BTreeSet<String>,
    channels: BTreeSet<Arc<str>>,
    gaps: GapTracker,
    metrics: Arc<Metrics>,
}

impl Ingress {
    fn new_socket() -> SubSocket {
        let mut options = SocketOptions::default();
        options.connect_timeout(CONNECT_ATTEMPT);
        SubSocket::with_options(options)
    }

    /// Follows a new wanted set: connects additions, rebuilds the socket on removals.
    async fn set_wanted(&mut self, wanted: BTreeSet<String>) {
        let removed = self.connected.iter().any(|e| !wanted.contains(e));
        self.wanted = wanted;
        if !removed {
            return;
        }
        info!(endpoints = ?self.wanted, "relay set shrank: rebuilding the ZeroMQ socket");
        self.socket = Self::new_socket();
        self.connected.clear();
        self.metrics.zmq_connected.store(0, Relaxed);
        for channel in &self.channels {
            if let Err(e) = self.socket.subscribe(channel).await {
                warn!(%channel, error = %e, "resubscribing failed");
            }
        }
        // Numbers from the new connections start a fresh run.
        for channel in &self.channels {
            self.gaps.release(channel);
            self.gaps.hold(channel);
        }
    }

    async fn connect_pending(&mut self) {
        let pending: Vec<String> = self
            .wanted
            .iter()
            .filter(|e| !self.connected.contains(*e))
            .cloned()
            .collect();
        for endpoint in pending {
            match self.socket.connect(&endpoint).await {
                Ok(()) => {
                    self.metrics.zmq_connected.fetch_add(1, Relaxed);
                    info!(%endpoint, "connected to ZeroMQ publisher");
                    self.connected.insert(endpoint);
                }
                Err(e) => debug!(%endpoint, error = %e, "ZeroMQ publisher not reachable yet"),
            }
        }
    }

    async fn control(&mut self, request: ZmqControl) {
        let result = match &request {
            ZmqControl::Subscribe(channel) => {
                self.channels.insert(channel.clone());
                self.gaps.hold(channel);
                self.socket.subscribe(channel).await
            }
            ZmqControl::Unsubscribe(channel) => {
                self.channels.remove(channel);
                self.gaps.release(channel);
                self.socket.unsubscribe(channel).await
            }
        };
        if let Err(e) = result {
            warn!(?request, error = %e, "ZeroMQ subscription change failed");
        }
    }

    fn account(&mut self, message: &ZmqMessage) {
        self.metrics.ingress_received.fetch_add(1, Relaxed);
        let bytes: usize = message.iter().map(|f| f.len()).sum();
        self.metrics.ingress_bytes.fetch_add(bytes as u64, Relaxed);
        let (Some(channel), Some(seq)) = (message.get(0), relay_seq(message)) else {
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
}

fn union(fixed: &[String], discovered: &Option<watch::Receiver<Vec<String>>>) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = fixed.iter().cloned().collect();
    if let Some(d) = discovered {
        all.extend(d.borrow().iter().cloned());
    }
    all
}

/// Owns the SUB socket until `control` closes.
pub async fn run(
    upstreams: Upstreams,
    mut control: mpsc::Receiver<ZmqControl>,
    hub: mpsc::Sender<(ZmqMessage, Instant)>,
    metrics: Arc<Metrics>,
) {
    let Upstreams {
        fixed,
        mut discovered,
    } = upstreams;
    let mut ingress = Ingress {
        socket: Ingress::new_socket(),
        wanted: union(&fixed, &discovered),
        connected: BTreeSet::new(),
        channels: BTreeSet::new(),
        gaps: GapTracker::default(),
        metrics,
    };
    let mut retry = tokio::time::interval(CONNECT_RETRY);
    let mut consecutive_errors = 0u32;
    loop {
        let pending = ingress.connected.len() < ingress.wanted.len();
        tokio::select! {
            biased;
            request = control.recv() => {
                let Some(request) = request else { break };
                ingress.control(request).await;
            }
            message = ingress.socket.recv(), if !ingress.connected.is_empty() => match message {
                Ok(message) => {
                    consecutive_errors = 0;
                    ingress.account(&message);
                    if hub.try_send((message, Instant::now())).is_err() {
                        ingress.metrics.ingress_drop("ingress_full");
                    }
                }
                Err(e) => {
                    // A peer went away; zmq.rs reconnects it in the background.
                    consecutive_errors += 1;
                    debug!(error = %e, "ZeroMQ receive error");
                    if consecutive_errors > 100 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            },
            changed = async { discovered.as_mut()?.changed().await.ok() }, if discovered.is_some() => {
                if changed.is_none() {
                    discovered = None;
                }
                let wanted = union(&fixed, &discovered);
                ingress.set_wanted(wanted).await;
            }
            _ = retry.tick(), if pending => ingress.connect_pending().await,
        }
    }
    debug!("ZeroMQ ingress stopped");
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
        let mut m = ZmqMessage::from("c");
        m.push_back("e".into());
        m.push_back("1".into());
        assert_eq!(relay_seq(&m), None);
        m.push_back("42".into());
        assert_eq!(relay_seq(&m), Some(42));
    }
}
