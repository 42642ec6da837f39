//! A byte-exact WebSocket client for tests that must send what a well-behaved
//! library never would: unmasked frames, bad UTF-8, stray RSV1 bits, deflate bombs.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use serde_json::Value;

/// One frame as received.
#[derive(Debug, Clone)]
pub struct Frame {
    pub fin: bool,
    pub rsv1: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A text frame's JSON, inflated first if it was compressed.
    pub fn text_json(&self) -> Option<Value> {
        if self.rsv1 {
            serde_json::from_slice(&inflate(&self.payload)).ok()
        } else {
            serde_json::from_slice(&self.payload).ok()
        }
    }

    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The handshake response's status code and headers (lower-cased names).
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl RawClient {
    /// Connects, subscribes to `channel`, and waits for the ack. It then reads only
    /// when asked: a subscriber that never reads still costs its edge the
    /// deliveries, which is what load tests want.
    pub fn subscribed(addr: &str, channel: &str) -> RawClient {
        let mut c = RawClient::connect(addr, None);
        c.send_text(&format!(
            r#"{{"method":"subscribe","channel":"{channel}"}}"#
        ));
        let ack = c.recv_json(Duration::from_secs(5));
        assert!(
            ack.as_ref().is_some_and(|a| a["type"] == "subscribed"),
            "subscribe {channel} at {addr}: {ack:?}"
        );
        c
    }

    /// Connects and performs the opening handshake, offering `extensions` if given.
    pub fn connect(addr: &str, extensions: Option<&str>) -> RawClient {
        let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).ok();
        let mut request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(ext) = extensions {
            request.push_str(&format!("Sec-WebSocket-Extensions: {ext}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .unwrap_or_else(|e| panic!("handshake write: {e}"));
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            status: 0,
            headers: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let end = loop {
            if let Some(i) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(client.fill(deadline), "no handshake response");
        };
        let head = String::from_utf8_lossy(&client.buf[..end]).into_owned();
        client.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        client.status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        client.headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        assert_eq!(client.status, 101, "handshake refused: {head}");
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; false on EOF, error or deadline.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).ok();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        // The edge may already have closed on us; that is what some tests expect.
        let _ = self.stream.write_all(bytes);
    }

    /// Builds and sends one frame. `mask` as a client must; tests may not.
    pub fn send_frame(&mut self, fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: bool) {
        let bytes = encode_client_frame(fin, rsv1, opcode, payload, mask);
        self.send_raw(&bytes);
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, false, 1, text.as_bytes(), true);
    }

    /// Next frame within `timeout`; None on EOF or timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Next text message as JSON (inflating compressed frames, skipping pings).
    pub fn recv_json(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.read_frame(deadline.saturating_duration_since(Instant::now()))?;
            match frame.opcode {
                1 => return frame.text_json(),
                9 | 10 => continue,
                _ => return None,
            }
        }
    }

    /// Collects every text message (as JSON) until a close frame; returns them with
    /// its code (None if the connection just ended or `timeout` passed).
    pub fn messages_until_close(&mut self, timeout: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::new();
        while let Some(frame) = self.read_frame(deadline.saturating_duration_since(Instant::now()))
        {
            match frame.opcode {
                1 => messages.extend(frame.text_json()),
                8 => return (messages, frame.close_code()),
                _ => {}
            }
        }
        (messages, None)
    }

    /// Reads until a close frame; returns its code (None if the connection just ended).
    pub fn expect_close(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let frame = self.read_frame(deadline.saturating_duration_since(Instant::now()))?;
            if frame.opcode == 8 {
                return frame.close_code();
            }
        }
    }

    /// True when the edge has closed the TCP connection (EOF) within `timeout`.
    pub fn eof_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let before = self.buf.len();
            if !self.fill(deadline) {
                return Instant::now() < deadline;
            }
            self.buf.truncate(before);
        }
    }
}

/// Sends an upgrade request for `path` with `Sec-WebSocket-Version: version` and
/// returns the response's status and full text (for refused upgrades).
pub fn upgrade_response(addr: &str, path: &str, version: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A client frame, masked (with a fixed non-zero key) or not.
pub fn encode_client_frame(
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: &[u8],
    mask: bool,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if mask {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn parse_server_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (fin, rsv1, opcode) = (buf[0] & 0x80 != 0, buf[0] & 0x40 != 0, buf[0] & 0x0f);
    assert_eq!(buf[1] & 0x80, 0, "server frames must not be masked");
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    let frame = Frame {
        fin,
        rsv1,
        opcode,
        payload: buf[start..start + len].to_vec(),
    };
    Some((frame, start + len))
}

/// Inflates one permessage-deflate message (no context takeover).
pub fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(input.len() * 4);
    loop {
        out.reserve(64 * 1024);
        let before = d.total_in();
        d.decompress_vec(
            &input[d.total_in() as usize..],
            &mut out,
            FlushDecompress::Sync,
        )
        .unwrap_or_else(|e| panic!("server sent corrupt deflate data: {e}"));
        if d.total_in() as usize >= input.len()
            || d.total_in() == before && out.len() < out.capacity()
        {
            return out;
        }
    }
}

/// Compresses as a client would (raw deflate, trailing 00 00 ff ff removed).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    loop {
        out.reserve(64 * 1024);
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .unwrap_or_else(|e| panic!("deflate: {e}"));
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}
