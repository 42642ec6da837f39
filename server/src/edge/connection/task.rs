//! One WebSocket connection after the upgrade: a single task that owns the socket,
//! writes the outbox with `writev` straight from the shared frames, and reads,
//! decodes and answers the client's frames. An idle connection holds no buffer.

use std::io::{ErrorKind, IoSlice};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use pushfleet_protocol::client::{parse_request, Method};
use pushfleet_protocol::{ErrorCode, RequestError};
use tokio::net::TcpStream;
use tracing::debug;

use crate::edge::codec::frame::{
    close_code, encode_frame, Decoder, DecoderConfig, Message, OpCode,
};
use crate::edge::connection::outbox::{self, MAX_WRITE_SLICES};
use crate::edge::connection::session::Session;
use crate::edge::fanout::worker::Worker;
use crate::edge::telemetry::metrics::WorkerMetrics;

/// After the edge sends a close frame, how long it waits for the client's close
/// before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Read granularity. Client traffic is small requests and pongs.
const READ_CHUNK: usize = 4096;

/// What writing the outbox achieved.
enum Flush {
    /// Everything queued was written.
    Done,
    /// The socket's send buffer is full.
    Blocked,
}

fn flush(stream: &TcpStream, session: &Session, metrics: &WorkerMetrics) -> std::io::Result<Flush> {
    loop {
        let mut outbox = session.outbox.borrow_mut();
        if outbox.is_empty() {
            return Ok(Flush::Done);
        }
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
        let n = outbox.slices(session.compressed, &mut slices);
        // One frame (the common case): send(2) is cheaper than writev(2), which goes
        // through the VFS layer.
        let result = if n == 1 {
            stream.try_write(&slices[0])
        } else {
            stream.try_write_vectored(&slices[..n])
        };
        match result {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(written) => outbox.advance(written, session.compressed, metrics),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Flush::Blocked),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Serves the connection until it ends, then unregisters the session. `buf` holds any
/// bytes the client sent right behind its handshake.
pub async fn serve(worker: Rc<Worker>, session: Rc<Session>, stream: TcpStream, mut buf: BytesMut) {
    let config = &worker.shared.config;
    let mut decoder = Decoder::new(DecoderConfig {
        max_message_size: config.max_message_size,
        deflate: session.compressed,
    });
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut client_closed = false;
    if !buf.is_empty() {
        client_closed = !Box::pin(handle_input(&worker, &session, &mut decoder, &mut buf)).await;
    }
    let end = loop {
        let blocked = match flush(&stream, &session, &worker.metrics) {
            Ok(Flush::Done) => false,
            Ok(Flush::Blocked) => true,
            Err(e) => break format!("write failed: {e}"),
        };
        let (closing, finished, fails) = {
            let o = session.outbox.borrow();
            (!o.is_open(), o.is_finished(), o.fails())
        };
        if closing {
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + CLOSE_GRACE);
        }
        if finished && (fails || client_closed) {
            break "closed".into();
        }
        let grace = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            readable = stream.readable() => {
                if let Err(e) = readable {
                    break format!("read failed: {e}");
                }
                match read_some(&stream, &mut buf) {
                    Ok(0) => break "client closed the connection".into(),
                    Ok(_) => {
                        session.touch();
                        // Boxed: requests are rare, and an idle connection's task should
                        // not carry the space of the request path's futures.
                        if !Box::pin(handle_input(&worker, &session, &mut decoder, &mut buf)).await {
                            client_closed = true;
                        }
                        if buf.is_empty() {
                            // Idle connections hold no read buffer.
                            buf = BytesMut::new();
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                    Err(e) => break format!("read failed: {e}"),
                }
            }
            writable = stream.writable(), if blocked => {
                if let Err(e) = writable {
                    break format!("write failed: {e}");
                }
            }
            _ = outbox::ready(&session.outbox), if !blocked && !finished => {}
            _ = grace => break "close timeout".into(),
        }
    };
    worker.close_session(&session);
    debug!(worker = worker.id, session = session.id, reason = %end, "session ended");
}

/// Reads what the socket has into `buf`, through a stack buffer so that `buf` only
/// ever holds bytes that await decoding (idle connections keep no allocation).
fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.try_read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Decodes and handles every complete frame in `buf`. Returns false once the client
/// has sent its close frame (or broke the protocol): nothing more will be read.
async fn handle_input(
    worker: &Rc<Worker>,
    session: &Rc<Session>,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> bool {
    let metrics = &worker.metrics;
    loop {
        let message = match decoder.decode(buf) {
            Ok(Some(m)) => m,
            Ok(None) => return true,
            Err(e) => {
                buf.clear();
                if session.outbox.borrow().is_open() {
                    worker.shared.metrics.protocol_closes.fetch_add(1, Relaxed);
                    debug!(session = session.id, error = %e, "protocol error; closing");
                    session.fail(e.code, e.reason);
                }
                return false;
            }
        };
        if !session.outbox.borrow().is_open() {
            // We already sent our close: only the client's close matters now.
            if matches!(message, Message::Close(_)) {
                buf.clear();
                return false;
            }
            continue;
        }
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
                buf.clear();
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
        Method::Info => {
            worker.info(session, request);
            Ok(())
        }
    }
}
