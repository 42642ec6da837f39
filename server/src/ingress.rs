//! ZeroMQ ingress: the one task that owns the edge's SUB socket.
//!
//! It connects to every configured publisher or relay (retrying until each is up;
//! zmq.rs then reconnects and resubscribes by itself after a peer restarts), applies
//! subscribe/unsubscribe requests from the hub, and drains the socket at once into
//! the hub's bounded queue. zmq.rs has no working receive high-water mark, so this
//! queue is the real bound: when it is full, new publishes are dropped and counted
//! (`ingress_full`) rather than left to pile up inside the socket.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
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

/// Owns the SUB socket until `control` closes.
pub async fn run(
    endpoints: Vec<String>,
    mut control: mpsc::Receiver<ZmqControl>,
    hub: mpsc::Sender<(ZmqMessage, Instant)>,
    metrics: Arc<Metrics>,
) {
    let mut options = SocketOptions::default();
    options.connect_timeout(CONNECT_ATTEMPT);
    let mut socket = SubSocket::with_options(options);
    let mut pending = endpoints;
    let mut connected = 0usize;
    let mut retry = tokio::time::interval(CONNECT_RETRY);
    let mut consecutive_errors = 0u32;
    loop {
        tokio::select! {
            biased;
            request = control.recv() => {
                let Some(request) = request else { break };
                let result = match &request {
                    ZmqControl::Subscribe(channel) => socket.subscribe(channel).await,
                    ZmqControl::Unsubscribe(channel) => socket.unsubscribe(channel).await,
                };
                if let Err(e) = result {
                    warn!(?request, error = %e, "ZeroMQ subscription change failed");
                }
            }
            message = socket.recv(), if connected > 0 => match message {
                Ok(message) => {
                    consecutive_errors = 0;
                    metrics.ingress_received.fetch_add(1, Relaxed);
                    if hub.try_send((message, Instant::now())).is_err() {
                        metrics.ingress_drop("ingress_full");
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
            _ = retry.tick(), if !pending.is_empty() => {
                let mut still_pending = Vec::new();
                for endpoint in pending.drain(..) {
                    match socket.connect(&endpoint).await {
                        Ok(()) => {
                            connected += 1;
                            metrics.zmq_connected.fetch_add(1, Relaxed);
                            info!(%endpoint, "connected to ZeroMQ publisher");
                        }
                        Err(e) => {
                            debug!(%endpoint, error = %e, "ZeroMQ publisher not reachable yet");
                            still_pending.push(endpoint);
                        }
                    }
                }
                pending = still_pending;
            }
        }
    }
    debug!("ZeroMQ ingress stopped");
}
