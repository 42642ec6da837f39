//! The WebSocket upgrade, on the raw socket. Actix parses the HTTP request and hands
//! every `Upgrade: websocket` request here together with the socket itself, so the
//! edge owns the connection from the first byte after the handshake: no HTTP
//! dispatcher, no per-connection 8 KiB buffers, frames written straight from the
//! shared bytes.

use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix_codec::Framed;
use actix_http::ws::{hash_key, verify_handshake, HandshakeError};
use actix_http::{h1, HttpMessage as _, Request};
use actix_web::http::header;
use bytes::BytesMut;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::edge::codec::extension::negotiate_permessage_deflate;
use crate::edge::connection::task;
use crate::edge::fanout::worker::Worker;
use crate::edge::state::Shared;

/// The only path that upgrades.
pub const WS_PATH: &str = "/ws";

/// Handles one upgrade request to the end of its connection.
pub async fn handle(
    shared: Arc<Shared>,
    (request, framed): (Request, Framed<TcpStream, h1::Codec>),
) -> Result<(), Infallible> {
    // The handshake's state (request, codec, response) is boxed and freed once it is
    // done, so each connection's long-lived task stays small (RSS per idle socket).
    let Some((stream, leftover, compressed)) = Box::pin(handshake(&shared, request, framed)).await
    else {
        return Ok(());
    };
    let worker = Worker::current(&shared);
    let session = worker.open_session(compressed);
    task::serve(worker, session, stream, leftover).await;
    Ok(())
}

/// Takes one of the `--max-connections` slots, counted from here (before the 101 is
/// sent) so that concurrent upgrades can never overshoot the limit. The session
/// returns it when it ends.
fn reserve_slot(shared: &Shared) -> bool {
    let metrics = &shared.metrics;
    let before = metrics.connections.fetch_add(1, Relaxed);
    if before >= shared.config.max_connections as i64 {
        metrics.connections.fetch_sub(1, Relaxed);
        return false;
    }
    true
}

/// Answers the upgrade: 101 with the agreed extensions, or an HTTP error (and `None`).
async fn handshake(
    shared: &Shared,
    request: Request,
    framed: Framed<TcpStream, h1::Codec>,
) -> Option<(TcpStream, BytesMut, bool)> {
    let parts = framed.into_parts();
    let mut stream = parts.io;
    // Bytes the client sent behind its handshake, copied so Actix's 8 KiB read and
    // write buffers are freed now rather than held for the life of the connection.
    let leftover = BytesMut::from(&parts.read_buf[..]);
    drop(parts.read_buf);
    drop(parts.write_buf);
    let metrics = &shared.metrics;

    let refusal = if request.path() != WS_PATH {
        Some((
            404,
            "Not Found",
            "not_found",
            format!("no WebSocket endpoint at {}", request.path()),
        ))
    } else if let Err(e) = verify_handshake(request.head()) {
        metrics.handshake_failures.fetch_add(1, Relaxed);
        let (status, reason) = match e {
            HandshakeError::GetMethodRequired => (405, "Method Not Allowed"),
            HandshakeError::UnsupportedVersion => (426, "Upgrade Required"),
            _ => (400, "Bad Request"),
        };
        Some((status, reason, "bad_handshake", e.to_string()))
    } else if shared.drain.is_draining() {
        metrics.connections_refused.fetch_add(1, Relaxed);
        Some((
            503,
            "Service Unavailable",
            "draining",
            "this edge is draining; connect to another".into(),
        ))
    } else if !reserve_slot(shared) {
        metrics.connections_refused.fetch_add(1, Relaxed);
        Some((
            503,
            "Service Unavailable",
            "over_capacity",
            "this edge holds its maximum number of connections".into(),
        ))
    } else {
        None
    };
    if let Some((status, reason, code, message)) = refusal {
        let body = json!({ "error": code, "message": message }).to_string();
        let version = if status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             {version}connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        return None;
    }

    // verify_handshake checked that the key is present.
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| hash_key(k.as_bytes()))
        .unwrap_or_default();
    let agreed = if shared.config.no_compression {
        None
    } else {
        negotiate_permessage_deflate(
            request
                .headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .filter_map(|v| v.to_str().ok()),
        )
    };
    drop(request);
    let mut response = String::with_capacity(256);
    response.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n",
    );
    response.push_str("sec-websocket-accept: ");
    response.push_str(std::str::from_utf8(&key).unwrap_or_default());
    response.push_str("\r\n");
    if let Some(agreed) = &agreed {
        response.push_str("sec-websocket-extensions: ");
        response.push_str(&agreed.response_header);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    if stream.write_all(response.as_bytes()).await.is_err() {
        metrics.handshake_failures.fetch_add(1, Relaxed);
        metrics.connections.fetch_sub(1, Relaxed);
        return None;
    }
    Some((stream, leftover, agreed.is_some()))
}
