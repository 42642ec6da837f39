//! The hub: where a publish enters the edge's fan-out. It owns per-channel state
//! (which workers hold subscribers, the sequence counter, the latest message),
//! validates and encodes each publish once, and hands the shared result to the
//! workers that need it. It also turns worker interest into ZeroMQ
//! subscribe/unsubscribe requests, so the edge receives exactly the channels its
//! clients hold.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use pushfleet_protocol::publish;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::edge::fanout::encoded::{EncodedMessage, Encoder};
use crate::edge::ingress::{Received, ZmqControl, MAX_FRAMES};
use crate::edge::telemetry::metrics::{IngressDrop, Metrics};

/// Messages from the hub to one worker thread. Bounded ([`WORKER_QUEUE`]); when full
/// the hub drops the publish for that worker and counts it (`worker_queue_full`):
/// a worker that far behind is saturated, and blocking the hub would stall every
/// other worker too.
pub enum ToWorker {
    Publish(Arc<EncodedMessage>),
    /// The channel's latest message, sent once when a worker starts holding it.
    Snapshot(Arc<EncodedMessage>),
}

/// Capacity of each hub → worker queue, in messages.
pub const WORKER_QUEUE: usize = 16_384;
/// Capacity of the worker → hub command queue. Commands are rare (first and last
/// subscriber of a channel on a worker); senders wait when it is full.
pub const HUB_COMMAND_QUEUE: usize = 65_536;

/// Requests from workers.
pub enum HubCommand {
    RegisterWorker {
        id: usize,
        tx: mpsc::Sender<ToWorker>,
    },
    /// The worker's first subscriber to `channel` arrived.
    Interest { worker: usize, channel: Arc<str> },
    /// The worker's last subscriber to `channel` left.
    Uninterest { worker: usize, channel: Arc<str> },
}

struct ChannelState {
    workers: Vec<usize>,
    next_seq: u64,
    latest: Option<Arc<EncodedMessage>>,
}

/// Settings the hub needs.
pub struct HubSettings {
    pub encoder: Encoder,
    pub max_publish_size: usize,
}

pub struct Hub {
    settings: HubSettings,
    metrics: Arc<Metrics>,
    zmq: mpsc::Sender<ZmqControl>,
    workers: Vec<Option<mpsc::Sender<ToWorker>>>,
    channels: HashMap<Arc<str>, ChannelState>,
}

impl Hub {
    pub fn new(
        settings: HubSettings,
        metrics: Arc<Metrics>,
        zmq: mpsc::Sender<ZmqControl>,
    ) -> Self {
        Self {
            settings,
            metrics,
            zmq,
            workers: Vec::new(),
            channels: HashMap::new(),
        }
    }

    /// Runs until either input queue closes (the edge is stopping). Commands go first
    /// (`biased`): a subscribe must not wait behind a burst of publishes.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<HubCommand>,
        mut ingress: mpsc::Receiver<Received>,
    ) {
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                n = ingress.recv_many(&mut batch, 256) => {
                    if n == 0 {
                        break;
                    }
                    for (message, received) in batch.drain(..) {
                        self.publish(message, received);
                    }
                }
            }
        }
        debug!("hub stopped");
    }

    async fn command(&mut self, command: HubCommand) {
        match command {
            HubCommand::RegisterWorker { id, tx } => {
                if self.workers.len() <= id {
                    self.workers.resize(id + 1, None);
                }
                self.workers[id] = Some(tx);
            }
            HubCommand::Interest { worker, channel } => {
                let state = match self.channels.get_mut(&channel) {
                    Some(state) => state,
                    None => {
                        if self
                            .zmq
                            .send(ZmqControl::Subscribe(channel.clone()))
                            .await
                            .is_err()
                        {
                            warn!(%channel, "ZeroMQ ingress is gone; cannot subscribe");
                        }
                        self.metrics.channels.fetch_add(1, Relaxed);
                        self.channels
                            .entry(channel.clone())
                            .or_insert(ChannelState {
                                workers: Vec::new(),
                                next_seq: 1,
                                latest: None,
                            })
                    }
                };
                if !state.workers.contains(&worker) {
                    state.workers.push(worker);
                }
                if let (Some(latest), Some(Some(tx))) = (&state.latest, self.workers.get(worker)) {
                    if tx.try_send(ToWorker::Snapshot(latest.clone())).is_err() {
                        self.metrics.worker_queue_full.fetch_add(1, Relaxed);
                    }
                }
            }
            HubCommand::Uninterest { worker, channel } => {
                let Some(state) = self.channels.get_mut(&channel) else {
                    return;
                };
                state.workers.retain(|w| *w != worker);
                if state.workers.is_empty() {
                    // Nobody here holds the channel: stop receiving it, and forget its
                    // latest value, which would go stale unseen.
                    self.channels.remove(&channel);
                    self.metrics.channels.fetch_sub(1, Relaxed);
                    if self
                        .zmq
                        .send(ZmqControl::Unsubscribe(channel.clone()))
                        .await
                        .is_err()
                    {
                        warn!(%channel, "ZeroMQ ingress is gone; cannot unsubscribe");
                    }
                }
            }
        }
    }

    fn publish(&mut self, message: Vec<zmq::Message>, received: Instant) {
        // The ingress keeps at most MAX_FRAMES frames; no allocation on this path.
        let mut slices: [&[u8]; MAX_FRAMES] = [&[]; MAX_FRAMES];
        for (slot, frame) in slices.iter_mut().zip(&message) {
            *slot = frame;
        }
        let frames = &slices[..message.len().min(slices.len())];
        let parsed = match publish::parse(frames, self.settings.max_publish_size) {
            Ok(p) => p,
            Err(e) => {
                self.metrics
                    .ingress_drop(IngressDrop::Malformed(e.malformed()));
                debug!(error = %e, "malformed publish dropped");
                return;
            }
        };
        let Some((channel, state)) = self.channels.get_key_value(parsed.channel) else {
            // ZeroMQ subscriptions match prefixes: `ticker` also brings `ticker_INR`.
            self.metrics.hub_filtered.fetch_add(1, Relaxed);
            return;
        };
        let channel = channel.clone();
        let seq = parsed.seq.unwrap_or(state.next_seq);
        let deflate = self.metrics.compressed_connections.load(Relaxed) > 0;
        let (published, deflated) = EncodedMessage::new(
            channel.clone(),
            parsed.event,
            parsed.data,
            seq,
            received,
            self.settings.encoder,
            deflate,
        );
        if let Some((input, output)) = deflated {
            self.metrics.deflated_messages.fetch_add(1, Relaxed);
            self.metrics
                .deflate_bytes_in
                .fetch_add(input as u64, Relaxed);
            self.metrics
                .deflate_bytes_out
                .fetch_add(output as u64, Relaxed);
        }
        let published = Arc::new(published);
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        state.next_seq = seq.wrapping_add(1);
        state.latest = Some(published.clone());
        self.metrics.hub_published.fetch_add(1, Relaxed);
        for worker in &state.workers {
            if let Some(Some(tx)) = self.workers.get(*worker) {
                if tx.try_send(ToWorker::Publish(published.clone())).is_err() {
                    self.metrics.worker_queue_full.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(frames: &[&str]) -> Received {
        let frames = frames.iter().map(|f| zmq::Message::from(*f)).collect();
        (frames, Instant::now())
    }

    struct Rig {
        hub: Hub,
        zmq: mpsc::Receiver<ZmqControl>,
        workers: Vec<mpsc::Receiver<ToWorker>>,
        metrics: Arc<Metrics>,
    }

    async fn rig(workers: usize) -> Rig {
        let metrics = Arc::new(Metrics::new("t".into(), None));
        let (zmq_tx, zmq) = mpsc::channel(16);
        let settings = HubSettings {
            encoder: Encoder {
                threshold: 64,
                level: 1,
            },
            max_publish_size: 1024,
        };
        let mut hub = Hub::new(settings, metrics.clone(), zmq_tx);
        let mut rxs = Vec::new();
        for id in 0..workers {
            let (tx, rx) = mpsc::channel(16);
            hub.command(HubCommand::RegisterWorker { id, tx }).await;
            rxs.push(rx);
        }
        Rig {
            hub,
            zmq,
            workers: rxs,
            metrics,
        }
    }

    /// Hands the hub one multipart publish, as the ingress task would.
    fn send(r: &mut Rig, frames: &[&str]) {
        let (m, t) = message(frames);
        r.hub.publish(m, t);
    }

    fn published(rx: &mut mpsc::Receiver<ToWorker>) -> Option<(bool, Arc<EncodedMessage>)> {
        match rx.try_recv().ok()? {
            ToWorker::Publish(p) => Some((false, p)),
            ToWorker::Snapshot(p) => Some((true, p)),
        }
    }

    async fn interest(r: &mut Rig, worker: usize, channel: &str) {
        r.hub
            .command(HubCommand::Interest {
                worker,
                channel: channel.into(),
            })
            .await;
    }

    #[tokio::test]
    async fn first_interest_subscribes_upstream_and_last_uninterest_unsubscribes() {
        let mut r = rig(2).await;
        interest(&mut r, 0, "a").await;
        interest(&mut r, 1, "a").await;
        assert!(matches!(r.zmq.try_recv(), Ok(ZmqControl::Subscribe(c)) if &*c == "a"));
        assert!(
            r.zmq.try_recv().is_err(),
            "one upstream subscription per channel"
        );
        assert_eq!(r.metrics.channels.load(Relaxed), 1);
        r.hub
            .command(HubCommand::Uninterest {
                worker: 0,
                channel: "a".into(),
            })
            .await;
        assert!(r.zmq.try_recv().is_err(), "worker 1 still holds it");
        r.hub
            .command(HubCommand::Uninterest {
                worker: 1,
                channel: "a".into(),
            })
            .await;
        assert!(matches!(r.zmq.try_recv(), Ok(ZmqControl::Unsubscribe(c)) if &*c == "a"));
        assert_eq!(r.metrics.channels.load(Relaxed), 0);
    }

    #[tokio::test]
    async fn publishes_go_only_to_interested_workers_with_growing_seq() {
        let mut r = rig(2).await;
        interest(&mut r, 1, "a").await;
        send(&mut r, &["a", "e", "1"]);
        send(&mut r, &["a", "e", "2"]);
        assert!(published(&mut r.workers[0]).is_none());
        let (snap, first) = published(&mut r.workers[1]).unwrap();
        assert!(!snap);
        assert_eq!(first.seq, 1);
        let (_, second) = published(&mut r.workers[1]).unwrap();
        assert_eq!(second.seq, 2);
        assert_eq!(r.metrics.hub_published.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn unknown_and_malformed_publishes_are_counted() {
        let mut r = rig(1).await;
        interest(&mut r, 0, "a").await;
        send(&mut r, &["ab", "e", "1"]);
        send(&mut r, &["a", "e", "{"]);
        assert!(published(&mut r.workers[0]).is_none());
        assert_eq!(r.metrics.hub_filtered.load(Relaxed), 1);
        assert_eq!(r.metrics.ingress_dropped[5].load(Relaxed), 1, "data");
    }

    #[tokio::test]
    async fn a_worker_that_joins_late_gets_the_latest_as_a_snapshot() {
        let mut r = rig(2).await;
        interest(&mut r, 0, "a").await;
        send(&mut r, &["a", "e", "1"]);
        send(&mut r, &["a", "e", "2"]);
        interest(&mut r, 1, "a").await;
        let (snap, p) = published(&mut r.workers[1]).unwrap();
        assert!(snap);
        assert_eq!(p.seq, 2);
    }

    #[tokio::test]
    async fn relay_sequence_numbers_are_kept_and_continued() {
        let mut r = rig(1).await;
        interest(&mut r, 0, "a").await;
        send(&mut r, &["a", "e", "1", "100"]);
        send(&mut r, &["a", "e", "1"]);
        assert_eq!(published(&mut r.workers[0]).unwrap().1.seq, 100);
        assert_eq!(published(&mut r.workers[0]).unwrap().1.seq, 101);
    }

    #[tokio::test]
    async fn a_full_worker_queue_drops_and_counts_without_blocking() {
        let mut r = rig(1).await;
        interest(&mut r, 0, "a").await;
        for _ in 0..20 {
            send(&mut r, &["a", "e", "1"]);
        }
        assert_eq!(r.metrics.worker_queue_full.load(Relaxed), 4, "queue of 16");
    }

    #[tokio::test]
    async fn compression_happens_only_when_a_compressed_socket_exists() {
        let mut r = rig(1).await;
        interest(&mut r, 0, "a").await;
        let big = format!("\"{}\"", "ab".repeat(100));
        send(&mut r, &["a", "e", &big]);
        assert!(published(&mut r.workers[0])
            .unwrap()
            .1
            .frames
            .deflated
            .is_none());
        r.metrics.compressed_connections.store(1, Relaxed);
        send(&mut r, &["a", "e", &big]);
        assert!(published(&mut r.workers[0])
            .unwrap()
            .1
            .frames
            .deflated
            .is_some());
        assert_eq!(r.metrics.deflated_messages.load(Relaxed), 1);
    }
}
