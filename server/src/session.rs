//! One WebSocket connection: its send queue, its subscriptions, and the task that
//! reads and answers its frames.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Payload;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use pushfleet_protocol::client::{parse_request, Method};
use pushfleet_protocol::{ErrorCode, RequestError};
use tokio::sync::Notify;
use tracing::debug;

use crate::codec::frame::{close_code, encode_frame, Decoder, DecoderConfig, Message, OpCode};
use crate::config::SlowClientPolicy;
use crate::metrics::WorkerMetrics;
use crate::outbox::{Outbox, Pushed};
use crate::worker::Worker;

/// After the edge sends a close frame, how long it waits for the client's close
/// before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

pub struct Session {
    pub id: u64,
    /// permessage-deflate was negotiated.
    pub compressed: bool,
    pub outbox: Rc<RefCell<Outbox>>,
    subscriptions: RefCell<Vec<Arc<str>>>,
    last_seen: Cell<Instant>,
    /// Wakes the reader when the edge decides to close (slow client, drain, timeout).
    closing: Notify,
}

impl Session {
    pub fn new(id: u64, compressed: bool, send_queue: usize, policy: SlowClientPolicy) -> Self {
        Self {
            id,
            compressed,
            outbox: Rc::new(RefCell::new(Outbox::new(send_queue, policy))),
            subscriptions: RefCell::new(Vec::new()),
            last_seen: Cell::new(Instant::now()),
            closing: Notify::new(),
        }
    }

    pub fn last_seen(&self) -> Instant {
        self.last_seen.get()
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
        if self.outbox.borrow_mut().push_control(frame, metrics) == Pushed::Disconnected {
            self.wake_reader();
        }
    }

    /// Queues a JSON reply as a text frame (uncompressed: replies are tiny).
    pub fn send_text(&self, text: &str, metrics: &WorkerMetrics) {
        self.send_control(encode_frame(OpCode::Text, false, text.as_bytes()), metrics);
    }

    /// Starts the closing handshake from the edge's side.
    pub fn close(&self, code: u16, reason: &str) {
        self.outbox.borrow_mut().close(code, reason);
        self.wake_reader();
    }

    pub fn wake_reader(&self) {
        self.closing.notify_one();
    }
}

/// Reads the client's frames until the connection ends, then unregisters the session.
pub async fn serve(worker: Rc<Worker>, session: Rc<Session>, mut payload: Payload) {
    let config = &worker.shared.config;
    let mut decoder = Decoder::new(DecoderConfig {
        max_message_size: config.max_message_size,
        deflate: session.compressed,
    });
    let mut buf = BytesMut::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = next_chunk(&mut payload) => match chunk {
                Some(bytes) => {
                    session.last_seen.set(Instant::now());
                    buf.extend_from_slice(&bytes);
                    if !drain_frames(&worker, &session, &mut decoder, &mut buf).await {
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                    if buf.is_empty() && buf.capacity() > 4096 {
                        buf = BytesMut::new();
                    }
                }
                None => break,
            },
            _ = session.closing.notified(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            _ = grace => break,
        }
    }
    worker.close_session(&session);
    debug!(worker = worker.id, session = session.id, "session ended");
}

async fn next_chunk(payload: &mut Payload) -> Option<Bytes> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *payload).poll_next(cx))
        .await
        .and_then(Result::ok)
}

/// Decodes and handles every complete frame in `buf`. Returns false once the
/// connection is closing (protocol error or the client's close).
async fn drain_frames(
    worker: &Rc<Worker>,
    session: &Rc<Session>,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> bool {
    let metrics = &worker.metrics;
    loop {
        if !session.outbox.borrow().is_open() {
            // We already sent our close; only the client's close (or EOF) matters now.
            match decoder.decode(buf) {
                Ok(Some(Message::Close(_))) | Err(_) => {
                    buf.clear();
                    return false;
                }
                Ok(Some(_)) => continue,
                Ok(None) => return false,
            }
        }
        let message = match decoder.decode(buf) {
            Ok(Some(m)) => m,
            Ok(None) => return true,
            Err(e) => {
                worker.shared.metrics.protocol_closes.fetch_add(1, Relaxed);
                debug!(session = session.id, error = %e, "protocol error; closing");
                buf.clear();
                session.close(e.code, e.reason);
                return false;
            }
        };
        match message {
            Message::Text(text) => {
                // The decoder has validated UTF-8.
                let text = std::str::from_utf8(&text).unwrap_or_default();
                if let Err(e) = handle_request(worker, session, text).await {
                    worker.shared.metrics.client_error(e.code);
                    session.send_text(&e.to_reply(), metrics);
                }
            }
            Message::Binary(_) => {
                let e = RequestError::new(
                    ErrorCode::UnsupportedFrame,
                    "binary messages are not supported; send JSON text",
                );
                worker.shared.metrics.client_error(e.code);
                session.send_text(&e.to_reply(), metrics);
            }
            Message::Ping(data) => {
                session.send_control(encode_frame(OpCode::Pong, false, &data), metrics)
            }
            Message::Pong(_) => {}
            Message::Close(code) => {
                let echo = code.map_or(close_code::NORMAL, |(c, _)| c);
                session.close(echo, "");
                return false;
            }
        }
    }
}

async fn handle_request(
    worker: &Rc<Worker>,
    session: &Rc<Session>,
    text: &str,
) -> Result<(), RequestError> {
    let request = parse_request(text)?;
    match request.method {
        Method::Subscribe => worker.subscribe(session, request).await,
        Method::Unsubscribe => worker.unsubscribe(session, request),
    }
}
