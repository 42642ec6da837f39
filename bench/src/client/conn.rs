//! One connection's task: open it, send the subscribe, then read frames
//! until the server closes.
//!
//! The read loop decodes every complete frame in the buffer in place,
//! answers pings (pongs are written once per `read()`), reassembles
//! fragmented messages, and hands each data message to
//! [`Shared::on_message`]. The receive time is taken once per `read()`.

use super::handshake::{establish, Upgraded};
use super::message::ConnState;
use super::Shared;
use crate::ws;
use anyhow::{anyhow, bail, Context, Result};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// An upgraded connection and its read state.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    filled: usize,
    deflate: bool,
    frag: Vec<u8>,
    frag_compressed: bool,
    frag_active: bool,
    out: Vec<u8>,
    st: ConnState,
}

/// Why the read loop ended without an error.
enum End {
    Eof,
    Close,
}

/// Opens connection `idx`, subscribes, and reads until the server closes or
/// the runtime is dropped.
pub(super) async fn connection(shared: Rc<Shared>, idx: usize, permit: OwnedSemaphorePermit) {
    let channel = idx % shared.cfg.channels.max(1);
    let st = ConnState::new(idx, channel, Some(permit));
    let mut conn = match establish(&shared).await {
        Ok(up) => Conn::new(up, st),
        Err(e) => {
            shared.fail(idx, &e);
            return;
        }
    };
    if conn.deflate {
        shared.deflate.set(shared.deflate.get() + 1);
    }
    let sub = format!(
        "{{\"method\":\"subscribe\",\"channel\":\"{}{}\",\"id\":1}}",
        shared.cfg.prefix, channel
    );
    let frame = ws::client_frame(ws::OP_TEXT, sub.as_bytes());
    if let Err(e) = conn.stream.write_all(&frame).await {
        shared.fail(idx, &anyhow!("sending subscribe: {e}"));
        return;
    }
    let result = conn.read_loop(&shared).await;
    let what = match &result {
        Ok(End::Eof) => anyhow!("server closed the TCP connection"),
        Ok(End::Close) => anyhow!("server sent a Close frame"),
        Err(e) => anyhow!("{e:#}"),
    };
    if conn.st.subscribed {
        shared.closed.set(shared.closed.get() + 1);
        shared.note_error(format!("connection {idx} (subscribed): {what}"));
    } else {
        shared.fail(idx, &what.context("before the subscribe was acknowledged"));
    }
}

impl Conn {
    fn new(up: Upgraded, st: ConnState) -> Conn {
        Conn {
            stream: up.stream,
            buf: up.buf,
            filled: up.filled,
            deflate: up.deflate,
            frag: Vec::new(),
            frag_compressed: false,
            frag_active: false,
            out: Vec::new(),
            st,
        }
    }

    /// Reads and handles frames until the server closes or an error.
    async fn read_loop(&mut self, shared: &Shared) -> Result<End> {
        let mut now = crate::publisher::now_ns();
        loop {
            let mut pos = 0;
            let mut need = 0;
            while let Some(h) = ws::parse_header(&self.buf[pos..self.filled])? {
                let total = h.total_len();
                if self.filled - pos < total {
                    need = total;
                    break;
                }
                let start = pos + h.header_len;
                let end = pos + total;
                if let Some(mask) = h.mask {
                    ws::apply_mask(&mut self.buf[start..end], mask);
                }
                match h.opcode {
                    ws::OP_PING => {
                        ws::encode_client_frame(
                            &mut self.out,
                            ws::OP_PONG,
                            &self.buf[start..end],
                            fastrand::u32(..).to_be_bytes(),
                        );
                    }
                    ws::OP_PONG => {}
                    ws::OP_CLOSE => {
                        let code = &self.buf[start..end.min(start + 2)];
                        let reply = ws::client_frame(ws::OP_CLOSE, code);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            self.stream.write_all(&reply),
                        )
                        .await;
                        return Ok(End::Close);
                    }
                    ws::OP_TEXT | ws::OP_BINARY if h.fin => {
                        if self.frag_active {
                            bail!("new data frame inside a fragmented message");
                        }
                        shared.on_message(
                            &self.buf[start..end],
                            h.rsv1,
                            total,
                            now,
                            &mut self.st,
                        )?;
                    }
                    ws::OP_TEXT | ws::OP_BINARY => {
                        if self.frag_active {
                            bail!("new data frame inside a fragmented message");
                        }
                        self.frag_active = true;
                        self.frag_compressed = h.rsv1;
                        self.frag.clear();
                        self.frag.extend_from_slice(&self.buf[start..end]);
                    }
                    _ => {
                        // Continuation.
                        if !self.frag_active {
                            bail!("continuation frame without a started message");
                        }
                        if self.frag.len() + (end - start) > ws::MAX_MESSAGE {
                            bail!("fragmented message exceeds {} bytes", ws::MAX_MESSAGE);
                        }
                        self.frag.extend_from_slice(&self.buf[start..end]);
                        if h.fin {
                            self.frag_active = false;
                            let len = self.frag.len();
                            shared.on_message(
                                &self.frag,
                                self.frag_compressed,
                                len,
                                now,
                                &mut self.st,
                            )?;
                            self.frag = Vec::new();
                        }
                    }
                }
                pos = end;
            }
            if pos > 0 {
                self.buf.copy_within(pos..self.filled, 0);
                self.filled -= pos;
            }
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
            if !self.out.is_empty() {
                tokio::time::timeout(Duration::from_secs(5), self.stream.write_all(&self.out))
                    .await
                    .map_err(|_| anyhow!("writing pong timed out"))?
                    .context("writing pong")?;
                self.out.clear();
            }
            let n = self
                .stream
                .read(&mut self.buf[self.filled..])
                .await
                .context("reading")?;
            if n == 0 {
                return Ok(End::Eof);
            }
            self.filled += n;
            now = crate::publisher::now_ns();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_tick as tick, ClientConfig};
    use super::*;
    use crate::ws::WsUrl;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    /// A scripted server on a real socket: handshake, ack, ping, a tick
    /// dribbled out one byte per write, a fragmented tick, a tick larger
    /// than the read buffer, then Close.
    #[test]
    fn connection_end_to_end() {
        use tokio::net::TcpListener;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::task::spawn_local(async move {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while ws::find(&buf[..n], b"\r\n\r\n").is_none() {
                    n += s.read(&mut buf[n..]).await.expect("read request");
                }
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(req.starts_with("GET /ws HTTP/1.1\r\n"), "{req}");
                let key = req
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .expect("key")
                    .trim()
                    .to_string();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    ws::accept_for(&key)
                );
                s.write_all(resp.as_bytes()).await.expect("write resp");

                // Read one masked client frame.
                async fn client_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
                    let mut buf = Vec::new();
                    loop {
                        if let Some(h) = ws::parse_header(&buf).expect("client frame") {
                            if buf.len() >= h.total_len() {
                                let mut body = buf[h.header_len..h.total_len()].to_vec();
                                ws::apply_mask(&mut body, h.mask.expect("client frames are masked"));
                                return (h.opcode, body);
                            }
                        }
                        let mut chunk = [0u8; 512];
                        let n = s.read(&mut chunk).await.expect("read frame");
                        assert!(n > 0, "client went away");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                }
                fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
                    let mut out = vec![first];
                    if payload.len() < 126 {
                        out.push(payload.len() as u8);
                    } else {
                        out.push(126);
                        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                    }
                    out.extend_from_slice(payload);
                    out
                }
                let (op, sub) = client_frame(&mut s).await;
                assert_eq!(op, ws::OP_TEXT);
                assert_eq!(
                    std::str::from_utf8(&sub).expect("utf8"),
                    r#"{"method":"subscribe","channel":"bench-3","id":1}"#
                );
                s.write_all(&frame(0x81, br#"{"type":"subscribed","channel":"bench-3","id":1}"#))
                    .await
                    .expect("ack");
                s.write_all(&frame(0x89, b"hb")).await.expect("ping");
                let (op, body) = client_frame(&mut s).await;
                assert_eq!((op, &body[..]), (ws::OP_PONG, &b"hb"[..]));
                for b in frame(0x81, &tick(13, 1)) {
                    s.write_all(&[b]).await.expect("dribble");
                    s.flush().await.expect("flush");
                }
                let t = tick(23, 1);
                let (a, b) = t.split_at(30);
                let mut two = frame(0x01, a);
                two.extend_from_slice(&frame(0x80, b));
                s.write_all(&two).await.expect("fragments");
                let big = format!(
                    "{{\"channel\":\"bench-3\",\"event\":\"tick\",\"data\":{{\"t\":1,\"n\":33,\"p\":\"{}\"}},\"seq\":3}}",
                    "x".repeat(20_000)
                )
                .into_bytes();
                s.write_all(&frame(0x81, &big)).await.expect("big");
                s.write_all(&frame(0x88, &1000u16.to_be_bytes()))
                    .await
                    .expect("close");
                let (op, body) = client_frame(&mut s).await;
                assert_eq!((op, &body[..]), (ws::OP_CLOSE, &1000u16.to_be_bytes()[..]));
            });

            let sh = Shared::new(ClientConfig {
                addr,
                url: WsUrl::parse(&format!("ws://{addr}/ws")).expect("url"),
                compress: false,
                channels: 10,
                prefix: "bench-".into(),
                attempts: 1,
                handshake_timeout: Duration::from_secs(5),
            });
            sh.round.borrow_mut().begin(0, u64::MAX);
            let permit = Arc::new(Semaphore::new(1))
                .acquire_owned()
                .await
                .expect("permit");
            tokio::time::timeout(Duration::from_secs(10), connection(sh.clone(), 3, permit))
                .await
                .expect("connection ends on Close");
            server.await.expect("server script");
            assert_eq!(sh.subscribed.get(), 1);
            assert_eq!(sh.failed.get(), 0);
            assert_eq!(sh.closed.get(), 1);
            let r = sh.round.borrow();
            assert_eq!(r.counts.received, 3, "errors: {:?}", sh.errors.borrow());
            assert_eq!((r.counts.unparsed, r.counts.duplicates), (0, 0));
        });
    }
}
