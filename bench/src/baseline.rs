//! `baseline-server`: a minimal tokio WebSocket fan-out server that frames
//! each message once. It is a reference point for the benchmark, not a
//! product: it shows what one core of this machine can do with the simplest
//! honest design, so the pushfleet edge's numbers have something to be
//! compared with. It speaks only the protocol subset the load tool uses.
//!
//! * Runs on the binary's single `current_thread` runtime (pin it to one core
//!   like the edge; `bench/run.sh` does with `SERVER=baseline`).
//! * `GET /healthz` answers 200; `GET /ws` does the RFC 6455 upgrade.
//!   `Sec-WebSocket-Extensions` is ignored, so no compression.
//! * Client text frames with `"method":"subscribe"` and a `"channel"` get
//!   `{"type":"subscribed","channel":C,"id":ID}` (one channel per connection;
//!   a later subscribe replaces the earlier one). Pings get pongs, Close
//!   gets Close. Fragmented and binary messages are ignored.
//! * One ZeroMQ SUB socket subscribed to everything. Each `[channel, event,
//!   data]` becomes `{"channel":C,"event":E,"data":D,"seq":N}` (per-channel
//!   seq), framed once into a `Bytes` and sent on that channel's
//!   `tokio::sync::broadcast` (capacity [`CHANNEL_CAPACITY`]). Every
//!   subscribed connection task receives the same `Bytes`, takes whatever
//!   else is already queued (up to [`MAX_BATCH`] frames), and writes them with
//!   one `write_all` (one frame) or `writev` (several). A receiver that falls
//!   more than the capacity behind skips the overwritten frames (`lagged`).

use crate::ws;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::IoSlice;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use zeromq::{Socket as _, SocketOptions, SocketRecv as _, SubSocket};

/// Frames kept per channel for receivers that are behind.
pub const CHANNEL_CAPACITY: usize = 256;
/// Most frames written by one `writev`.
pub const MAX_BATCH: usize = 64;
const MAX_HEAD: usize = 8 * 1024;
const MAX_CLIENT_FRAME: usize = 64 * 1024;

#[derive(Default)]
struct Stats {
    connections: Cell<u64>,
    subscribed: Cell<u64>,
    publishes: Cell<u64>,
    unrouted: Cell<u64>,
    queued: Cell<u64>,
    written: Cell<u64>,
    writes: Cell<u64>,
    lagged: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

struct Channel {
    tx: broadcast::Sender<Bytes>,
    seq: u64,
}

/// Channel name → broadcast sender, shared by the ZeroMQ task and the
/// connection tasks (all on one thread, hence `Rc<RefCell>`).
#[derive(Default)]
struct Hub {
    channels: RefCell<HashMap<String, Channel>>,
    stats: Stats,
}

impl Hub {
    fn subscribe(&self, name: &str) -> broadcast::Receiver<Bytes> {
        let mut map = self.channels.borrow_mut();
        let ch = map.entry(name.to_string()).or_insert_with(|| Channel {
            tx: broadcast::channel(CHANNEL_CAPACITY).0,
            seq: 0,
        });
        ch.tx.subscribe()
    }

    fn publish(&self, channel: &[u8], event: &[u8], data: &[u8]) {
        bump(&self.stats.publishes, 1);
        let mut map = self.channels.borrow_mut();
        let ch = std::str::from_utf8(channel)
            .ok()
            .and_then(|name| map.get_mut(name));
        let Some(ch) = ch.filter(|c| c.tx.receiver_count() > 0) else {
            bump(&self.stats.unrouted, 1);
            return;
        };
        ch.seq += 1;
        let frame = Bytes::from(frame(ws::OP_TEXT, &envelope(channel, event, data, ch.seq)));
        bump(&self.stats.queued, ch.tx.send(frame).unwrap_or(0) as u64);
    }
}

/// `{"channel":C,"event":E,"data":D,"seq":N}`; `data` is inserted as is.
fn envelope(channel: &[u8], event: &[u8], data: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + channel.len() + event.len() + data.len());
    out.extend_from_slice(b"{\"channel\":");
    push_json_str(&mut out, channel);
    out.extend_from_slice(b",\"event\":");
    push_json_str(&mut out, event);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.extend_from_slice(format!(",\"seq\":{seq}}}").as_bytes());
    out
}

fn push_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', b]),
            0..=0x1f => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// An unmasked single-frame server message.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + 10);
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// The JSON text after `"key"` and its colon (whitespace skipped).
fn value_after<'a>(text: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let at = ws::find(text, format!("\"{key}\"").as_bytes())? + key.len() + 2;
    let rest = text[at..].trim_ascii_start().strip_prefix(b":")?;
    Some(rest.trim_ascii_start())
}

/// What a client text message asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    /// `channel` is the raw JSON string content, `id` the raw JSON value.
    Subscribe {
        channel: &'a str,
        id: Option<&'a [u8]>,
    },
    Invalid(&'static str),
}

fn parse_request(text: &[u8]) -> Request<'_> {
    if !value_after(text, "method").is_some_and(|m| m.starts_with(b"\"subscribe\"")) {
        return Request::Invalid("the baseline server only supports subscribe");
    }
    let channel = value_after(text, "channel")
        .and_then(|v| v.strip_prefix(b"\""))
        .and_then(|v| v.iter().position(|&b| b == b'"').map(|end| &v[..end]))
        .filter(|c| !c.is_empty() && !c.contains(&b'\\'))
        .and_then(|c| std::str::from_utf8(c).ok());
    let Some(channel) = channel else {
        return Request::Invalid("subscribe needs a plain channel name");
    };
    let id = value_after(text, "id").map(|v| {
        let end = v.iter().position(|&b| b == b',' || b == b'}');
        v[..end.unwrap_or(v.len())].trim_ascii_end()
    });
    Request::Subscribe { channel, id }
}

/// The HTTP answer to a request head: the 101 upgrade for `GET /ws` with a
/// key (`true`), otherwise a plain response after which the socket closes.
fn http_response(head: &[u8]) -> (bool, String) {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let key = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-key"))
        .map(|(_, v)| v.trim());
    let plain = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match (method, path, key) {
        (Some("GET"), "/healthz", _) => (false, plain("200 OK", "ok\n")),
        (Some("GET"), "/ws", Some(key)) => (
            true,
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                ws::accept_for(key)
            ),
        ),
        (Some("GET"), "/ws", None) => (false, plain("400 Bad Request", "not a WebSocket upgrade\n")),
        _ => (false, plain("404 Not Found", "not found\n")),
    }
}

/// Waits for the next frame of the subscribed channel (forever if none).
async fn next_frame(rx: &mut Option<broadcast::Receiver<Bytes>>) -> Result<Bytes, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and then `more` in order: `write_all` for one frame,
/// `writev` for several (finishing a short `writev` with `write_all`s). The
/// slice list is allocated only when batching, which keeps the connection
/// task small.
async fn write_frames(
    stream: &mut TcpStream,
    first: &Bytes,
    more: &[Bytes],
) -> std::io::Result<()> {
    if more.is_empty() {
        return stream.write_all(first).await;
    }
    let frames = || std::iter::once(first).chain(more);
    let slices: Vec<IoSlice<'_>> = frames().map(|f| IoSlice::new(f)).collect();
    let mut done = stream.write_vectored(&slices).await?;
    for f in frames() {
        if done >= f.len() {
            done -= f.len();
        } else {
            stream.write_all(&f[done..]).await?;
            done = 0;
        }
    }
    Ok(())
}

async fn connection(mut stream: TcpStream, hub: Rc<Hub>) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let head_len = loop {
        if let Some(end) = ws::find(&buf, b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD || stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let (upgrade, response) = http_response(&buf[..head_len]);
    stream.write_all(response.as_bytes()).await?;
    if !upgrade {
        return Ok(stream.shutdown().await?);
    }
    buf.drain(..head_len);
    let mut rx: Option<broadcast::Receiver<Bytes>> = None;
    loop {
        // Handle every complete client frame in the buffer.
        while let Some(h) = ws::parse_header(&buf)? {
            if h.payload_len > MAX_CLIENT_FRAME {
                bail!("client frame of {} bytes", h.payload_len);
            }
            if buf.len() < h.total_len() {
                break;
            }
            let Some(mask) = h.mask else {
                bail!("unmasked client frame");
            };
            let payload = &mut buf[h.header_len..h.total_len()];
            ws::apply_mask(payload, mask);
            match h.opcode {
                ws::OP_TEXT if h.fin => {
                    let reply = match parse_request(payload) {
                        Request::Subscribe { channel, id } => {
                            rx = Some(hub.subscribe(channel));
                            bump(&hub.stats.subscribed, 1);
                            let mut ack =
                                format!("{{\"type\":\"subscribed\",\"channel\":\"{channel}\"");
                            if let Some(id) = id {
                                ack.push_str(",\"id\":");
                                ack.push_str(&String::from_utf8_lossy(id));
                            }
                            ack + "}"
                        }
                        Request::Invalid(why) => {
                            format!("{{\"type\":\"error\",\"message\":\"{why}\"}}")
                        }
                    };
                    stream
                        .write_all(&frame(ws::OP_TEXT, reply.as_bytes()))
                        .await?;
                }
                ws::OP_PING => stream.write_all(&frame(ws::OP_PONG, payload)).await?,
                ws::OP_CLOSE => {
                    let code = &payload[..payload.len().min(2)];
                    stream.write_all(&frame(ws::OP_CLOSE, code)).await?;
                    return Ok(stream.shutdown().await?);
                }
                _ => {} // pongs, binary and fragmented messages
            }
            buf.drain(..h.total_len());
        }
        tokio::select! {
            n = stream.read_buf(&mut buf) => {
                if n? == 0 {
                    return Ok(());
                }
            }
            first = next_frame(&mut rx) => {
                let first = match first {
                    Ok(f) => f,
                    Err(RecvError::Lagged(n)) => {
                        bump(&hub.stats.lagged, n);
                        continue;
                    }
                    Err(RecvError::Closed) => {
                        rx = None;
                        continue;
                    }
                };
                // Coalesce: take what is already queued, up to MAX_BATCH.
                let mut more = Vec::new();
                while let Some(r) = rx.as_mut().filter(|_| more.len() + 1 < MAX_BATCH) {
                    match r.try_recv() {
                        Ok(f) => more.push(f),
                        Err(TryRecvError::Lagged(n)) => bump(&hub.stats.lagged, n),
                        Err(_) => break,
                    }
                }
                write_frames(&mut stream, &first, &more).await?;
                bump(&hub.stats.written, 1 + more.len() as u64);
                bump(&hub.stats.writes, 1);
            }
        }
    }
}

/// Connects the SUB socket (retrying until the publisher is up) and feeds
/// every message to the hub.
async fn zmq_ingress(endpoint: String, hub: Rc<Hub>) -> Result<()> {
    let mut options = SocketOptions::default();
    options.connect_timeout(Duration::from_millis(250));
    let mut socket = SubSocket::with_options(options);
    socket.subscribe("").await.context("ZeroMQ subscribe")?;
    while socket.connect(&endpoint).await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("baseline-server: connected to ZeroMQ publisher {endpoint}");
    loop {
        match socket.recv().await {
            Ok(m) => match (m.get(0), m.get(1), m.get(2)) {
                (Some(c), Some(e), Some(d)) => hub.publish(c, e, d),
                _ => bump(&hub.stats.unrouted, 1),
            },
            // The publisher went away; zmq.rs reconnects by itself.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn accept_loop(listener: TcpListener, hub: Rc<Hub>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                bump(&hub.stats.connections, 1);
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(connection(stream, hub.clone()));
            }
            Err(e) => {
                eprintln!("baseline-server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves until SIGTERM or Ctrl-C, then prints its counters. Must run inside
/// a `LocalSet`.
pub async fn run(listen: &str, zmq_connect: &str) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let hub = Rc::new(Hub::default());
    eprintln!("baseline-server: listening on {listen}, ZeroMQ SUB → {zmq_connect}");
    let ingress = tokio::task::spawn_local(zmq_ingress(zmq_connect.to_string(), hub.clone()));
    tokio::select! {
        () = accept_loop(listener, hub.clone()) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        r = ingress => r.context("ZeroMQ task")??,
    }
    let s = &hub.stats;
    eprintln!(
        "baseline-server: {} connections, {} subscribes, {} publishes, {} messages not routed (no subscriber or not 3 frames), \
         {} frames queued, {} written in {} writes, {} skipped by lagging receivers",
        s.connections.get(),
        s.subscribed.get(),
        s.publishes.get(),
        s.unrouted.get(),
        s.queued.get(),
        s.written.get(),
        s.writes.get(),
        s.lagged.get()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_parse() {
        let sub = |c, id| Request::Subscribe { channel: c, id };
        assert_eq!(
            parse_request(br#"{"method":"subscribe","channel":"bench-3","id":1}"#),
            sub("bench-3", Some(&b"1"[..]))
        );
        assert_eq!(
            parse_request(br#"{ "id" : "a" , "channel": "x.y", "method" : "subscribe" }"#),
            sub("x.y", Some(&br#""a""#[..]))
        );
        assert_eq!(
            parse_request(br#"{"method":"subscribe","channel":"c"}"#),
            sub("c", None)
        );
        for bad in [
            &br#"{"method":"subscribe","id":1}"#[..],
            br#"{"method":"subscribe","channel":""}"#,
            br#"{"method":"subscribe","channel":"a\"b"}"#,
            br#"{"method":"unsubscribe","channel":"c"}"#,
            b"hello",
        ] {
            assert!(matches!(parse_request(bad), Request::Invalid(_)), "{bad:?}");
        }
    }

    #[test]
    fn envelope_and_frame() {
        let env = envelope(b"bench-1", b"ti\"ck", br#"{"t":1}"#, 7);
        assert_eq!(
            env,
            br#"{"channel":"bench-1","event":"ti\"ck","data":{"t":1},"seq":7}"#
        );
        for len in [0usize, 125, 126, 70_000] {
            let f = frame(ws::OP_TEXT, &vec![b'a'; len]);
            let h = ws::parse_header(&f).expect("ok").expect("complete");
            assert_eq!((h.fin, h.opcode, h.mask), (true, ws::OP_TEXT, None));
            assert_eq!((h.payload_len, h.total_len()), (len, f.len()));
        }
    }

    #[test]
    fn http_answers() {
        let (up, r) = http_response(
            b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert!(up);
        assert!(r.starts_with("HTTP/1.1 101 "));
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!r.contains("Extensions"));
        let (up, r) = http_response(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(!up && r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nok\n"));
        assert!(http_response(b"GET /ws HTTP/1.1\r\n\r\n")
            .1
            .contains(" 400 "));
        assert!(http_response(b"GET /x HTTP/1.1\r\n\r\n")
            .1
            .contains(" 404 "));
    }

    /// Handshake, subscribe, two publishes, ping, close over a real socket.
    #[test]
    fn end_to_end() {
        async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u8, Vec<u8>) {
            loop {
                if let Some(h) = ws::parse_header(buf).expect("frame") {
                    if buf.len() >= h.total_len() {
                        let body = buf[h.header_len..h.total_len()].to_vec();
                        buf.drain(..h.total_len());
                        return (h.opcode, body);
                    }
                }
                assert!(s.read_buf(buf).await.expect("read") > 0, "server closed");
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tokio::task::LocalSet::new().block_on(&rt, async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let hub = Rc::new(Hub::default());
            tokio::task::spawn_local(accept_loop(listener, hub.clone()));
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let url = ws::WsUrl::parse(&format!("ws://{addr}/ws")).expect("url");
            let key = ws::random_key();
            s.write_all(&ws::build_request(&url, &key, true))
                .await
                .expect("request");
            let mut buf = Vec::new();
            let head = loop {
                s.read_buf(&mut buf).await.expect("read");
                if let Some(r) = ws::parse_response(&buf, &key).expect("101") {
                    break r;
                }
            };
            assert!(!head.deflate);
            buf.drain(..head.head_len);
            let sub = br#"{"method":"subscribe","channel":"c1","id":9}"#;
            s.write_all(&ws::client_frame(ws::OP_TEXT, sub))
                .await
                .expect("subscribe");
            let ack = read_frame(&mut s, &mut buf).await;
            assert_eq!(ack.1, br#"{"type":"subscribed","channel":"c1","id":9}"#);
            hub.publish(b"c1", b"tick", b"1");
            hub.publish(b"c2", b"tick", b"2");
            hub.publish(b"c1", b"tick", b"3");
            for (data, seq) in [(1, 1), (3, 2)] {
                let want =
                    format!(r#"{{"channel":"c1","event":"tick","data":{data},"seq":{seq}}}"#);
                assert_eq!(
                    read_frame(&mut s, &mut buf).await,
                    (ws::OP_TEXT, want.into_bytes())
                );
            }
            s.write_all(&ws::client_frame(ws::OP_PING, b"hb"))
                .await
                .expect("ping");
            assert_eq!(
                read_frame(&mut s, &mut buf).await,
                (ws::OP_PONG, b"hb".to_vec())
            );
            let code = 1000u16.to_be_bytes();
            s.write_all(&ws::client_frame(ws::OP_CLOSE, &code))
                .await
                .expect("close");
            assert_eq!(
                read_frame(&mut s, &mut buf).await,
                (ws::OP_CLOSE, code.to_vec())
            );
            assert_eq!(s.read_buf(&mut buf).await.expect("eof"), 0);
            let st = &hub.stats;
            assert_eq!((st.publishes.get(), st.unrouted.get()), (3, 1));
            assert_eq!((st.queued.get(), st.written.get()), (2, 2));
            // Both frames were queued before the task ran: one writev.
            assert_eq!(st.writes.get(), 1);
        });
    }
}
