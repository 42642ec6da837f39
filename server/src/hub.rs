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
use zeromq::ZmqMessage;

use crate::ingress::ZmqControl;
use crate::metrics::Metrics;
use crate::published::{Encoder, Published};

/// Messages from the hub to one worker thread. Bounded ([`WORKER_QUEUE`]); when full
/// the hub drops the publish for that worker and counts it (`worker_queue_full`):
/// a worker that far behind is saturated, and blocking the hub would stall every
/// other worker too.
pub enum ToWorker {
    Publish(Arc<Published>),
    /// The channel's latest message, sent once when a worker starts holding it.
    Snapshot(Arc<Published>),
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
    latest: Option<Arc<Published>>,
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

    /// Runs until both input queues close.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<HubCommand>,
        mut ingress: mpsc::Receiver<(ZmqMessage, Instant)>,
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

    fn publish(&mut self, message: ZmqMessage, received: Instant) {
        let frames = message.into_vec();
        let parsed = match publish::parse(&frames, self.settings.max_publish_size) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.ingress_drop(e.reason());
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
        let (published, deflated) = Published::new(
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
