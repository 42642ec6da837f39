//! Minimal RFC 6455 client pieces, just enough for the load tool.
//!
//! * [`WsUrl`] parses `ws://host:port/path`.
//! * [`build_request`] / [`parse_response`] do the opening handshake,
//!   including the `Sec-WebSocket-Accept` check (SHA-1 + base64 are
//!   implemented here from RFC 3174 / RFC 4648 so the crate needs no extra
//!   dependencies).
//! * [`parse_header`] decodes a frame header in place from a read buffer; the
//!   caller slices the payload out of the same buffer, so no per-frame
//!   allocation happens.
//! * [`encode_client_frame`] writes a masked client frame (subscribe, pong).
//! * [`Inflater`] undoes permessage-deflate without context takeover: each
//!   message is inflated on its own after appending `00 00 ff ff`.

use anyhow::{anyhow, bail, Context, Result};
use flate2::{Decompress, FlushDecompress, Status};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest frame or reassembled message accepted from the server.
pub const MAX_MESSAGE: usize = 16 << 20;

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `host:port` to connect to.
    pub authority: String,
    /// Value of the `Host` header.
    pub host_header: String,
    /// Request target, starting with `/`.
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://host[:port][/path]` (port defaults to 80, path to `/`).
    pub fn parse(url: &str) -> Result<WsUrl> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow!("only ws:// URLs are supported, got {url:?}"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if hostport.is_empty() {
            bail!("missing host in {url:?}");
        }
        let has_port = match hostport.rfind(':') {
            // `[::1]` alone has colons but no port.
            Some(i) => !hostport[i..].contains(']'),
            None => false,
        };
        let authority = if has_port {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        Ok(WsUrl {
            authority,
            host_header: hostport.to_string(),
            path: path.to_string(),
        })
    }
}

/// Builds the HTTP/1.1 upgrade request.
pub fn build_request(url: &WsUrl, key: &str, compress: bool) -> Vec<u8> {
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
        url.path, url.host_header, key
    );
    if compress {
        req.push_str("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A random 16-byte key, base64-encoded.
pub fn random_key() -> String {
    let mut raw = [0u8; 16];
    fastrand::fill(&mut raw);
    base64(&raw)
}

/// The `Sec-WebSocket-Accept` value the server must answer for `key`.
pub fn accept_for(key: &str) -> String {
    let mut input = String::with_capacity(key.len() + WS_GUID.len());
    input.push_str(key);
    input.push_str(WS_GUID);
    base64(&sha1(input.as_bytes()))
}

/// What the handshake response said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// Bytes of the response head including the final blank line; frame
    /// bytes may follow in the same buffer.
    pub head_len: usize,
    /// The server agreed to permessage-deflate.
    pub deflate: bool,
}

/// Parses the handshake response at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, an error if the server
/// refused the upgrade or answered a wrong accept key.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<HandshakeResponse>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            bail!("handshake response head larger than 16 KiB");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("handshake response is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let _version = parts.next();
    let code = parts.next().unwrap_or_default();
    if code != "101" {
        bail!("server refused upgrade: {status:?}");
    }
    let mut accept = None;
    let mut deflate = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions")
            && value
                .split(',')
                .any(|ext| ext.trim().starts_with("permessage-deflate"))
        {
            deflate = true;
        }
    }
    let expected = accept_for(key);
    match accept {
        Some(a) if a == expected => {}
        Some(a) => bail!("bad Sec-WebSocket-Accept {a:?}, expected {expected:?}"),
        None => bail!("handshake response lacks Sec-WebSocket-Accept"),
    }
    Ok(Some(HandshakeResponse {
        head_len: end + 4,
        deflate,
    }))
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment.
    pub fin: bool,
    /// RSV1: per-message compressed (first frame of a message only).
    pub rsv1: bool,
    /// Opcode (low nibble of the first byte).
    pub opcode: u8,
    /// Bytes of header, including a mask key if present.
    pub header_len: usize,
    /// Payload bytes following the header.
    pub payload_len: usize,
    /// Mask key; servers must not mask, but we unmask if one does.
    pub mask: Option<[u8; 4]>,
}

impl FrameHeader {
    /// Header plus payload.
    pub fn total_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Decodes the frame header at the start of `buf`; `Ok(None)` if more bytes
/// are needed to know it.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x30 != 0 {
        bail!("frame with RSV2/RSV3 set (first byte {b0:#04x})");
    }
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut header_len) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut len = [0u8; 8];
            len.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(len);
            if len > MAX_MESSAGE as u64 {
                bail!("frame of {len} bytes exceeds the {MAX_MESSAGE} byte limit");
            }
            (len as usize, 10)
        }
        n => (usize::from(n), 2),
    };
    let mask = if masked {
        if buf.len() < header_len + 4 {
            return Ok(None);
        }
        let m = [
            buf[header_len],
            buf[header_len + 1],
            buf[header_len + 2],
            buf[header_len + 3],
        ];
        header_len += 4;
        Some(m)
    } else {
        None
    };
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || payload_len > 125 {
                bail!("invalid control frame (opcode {opcode}, fin {fin}, len {payload_len})");
            }
        }
        _ => bail!("unknown opcode {opcode:#x}"),
    }
    Ok(Some(FrameHeader {
        fin,
        rsv1,
        opcode,
        header_len,
        payload_len,
        mask,
    }))
}

/// XORs `payload` with `mask` (RFC 6455 section 5.3).
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Appends a single-frame (FIN) masked client frame to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0f));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

/// A masked client frame with a random mask.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_client_frame(&mut out, opcode, payload, fastrand::u32(..).to_be_bytes());
    out
}

/// Entries of the identical-payload cache in [`Inflater`]. Under heavy load
/// the server's latency spread can put thousands of distinct publishes in
/// flight at once, so this is large (about 1.5 KiB per entry for 1 KiB
/// messages, filled only as payloads arrive).
const INFLATE_CACHE: usize = 16_384;

/// Raw-DEFLATE inflater for permessage-deflate without context takeover,
/// shared by all connections of the single-threaded reader runtime.
///
/// Two things keep it cheap, which matters because the load tool must cost
/// only a few µs per delivery:
///
/// * The decompressor is *not* reset between messages. A message compressed
///   without context takeover never refers back before its own start, and
///   each message ends with a sync flush (`00 00 ff ff`, appended here), which
///   leaves the decoder at a byte-aligned block boundary, so the next message
///   decodes correctly with the old state. Resetting would zero a 32 KiB
///   window every time. The state is reset after a final block or an error
///   (and the message retried once from a fresh state).
/// * The server compresses a publish once for all subscribers of a channel,
///   so the same compressed bytes arrive on many sockets. The last
///   [`INFLATE_CACHE`] distinct payloads and their inflated text are kept,
///   indexed by a fast hash; a payload that is byte-for-byte equal to a
///   cached one (full comparison after the hash matches) reuses its text
///   instead of being inflated again.
pub struct Inflater {
    d: Decompress,
    needs_reset: bool,
    input: Vec<u8>,
    out: Vec<u8>,
    cache: Vec<(Vec<u8>, Vec<u8>, u64)>,
    index: HashMap<u64, usize, BuildHasherDefault<PrehashedKey>>,
    cache_next: usize,
    /// Payloads actually inflated.
    pub inflated: u64,
    /// Payloads served from the identical-payload cache.
    pub cache_hits: u64,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// A fresh inflater.
    pub fn new() -> Inflater {
        Inflater {
            d: Decompress::new(false),
            needs_reset: false,
            input: Vec::with_capacity(4096),
            out: Vec::with_capacity(16 * 1024),
            cache: Vec::new(),
            index: HashMap::default(),
            cache_next: 0,
            inflated: 0,
            cache_hits: 0,
        }
    }

    fn lookup(&self, payload: &[u8], hash: u64) -> Option<usize> {
        let &i = self.index.get(&hash)?;
        (self.cache[i].0 == payload).then_some(i)
    }

    /// Inflates one complete compressed message payload.
    pub fn inflate(&mut self, payload: &[u8]) -> Result<&[u8]> {
        let hash = payload_hash(payload);
        if let Some(i) = self.lookup(payload, hash) {
            self.cache_hits += 1;
            return Ok(&self.cache[i].1);
        }
        self.input.clear();
        self.input.extend_from_slice(payload);
        self.input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
        if self.needs_reset {
            self.d.reset(false);
            self.needs_reset = false;
        }
        if self.run().is_err() {
            // Maybe the carried-over state was bad: retry from scratch.
            self.d.reset(false);
            if let Err(e) = self.run() {
                self.needs_reset = true;
                return Err(e);
            }
        }
        self.inflated += 1;
        let slot = if self.cache.len() < INFLATE_CACHE {
            self.cache.push((Vec::new(), Vec::new(), 0));
            self.cache.len() - 1
        } else {
            let s = self.cache_next;
            self.cache_next = (s + 1) % INFLATE_CACHE;
            let old = self.cache[s].2;
            if self.index.get(&old) == Some(&s) {
                self.index.remove(&old);
            }
            s
        };
        self.index.insert(hash, slot);
        let (input, output, h) = &mut self.cache[slot];
        *h = hash;
        input.clear();
        input.extend_from_slice(payload);
        output.clear();
        output.extend_from_slice(&self.out);
        Ok(output)
    }

    /// Inflates `self.input` into `self.out`.
    fn run(&mut self) -> Result<()> {
        self.out.clear();
        let mut consumed = 0usize;
        loop {
            if self.out.len() == self.out.capacity() {
                if self.out.len() >= MAX_MESSAGE {
                    bail!("inflated message exceeds {MAX_MESSAGE} bytes");
                }
                self.out.reserve(self.out.capacity().max(4096));
            }
            let in_before = self.d.total_in();
            let out_before = self.out.len();
            let status = self
                .d
                .decompress_vec(
                    &self.input[consumed..],
                    &mut self.out,
                    FlushDecompress::Sync,
                )
                .context("inflate failed")?;
            consumed += (self.d.total_in() - in_before) as usize;
            let produced = self.out.len() - out_before;
            let out_full = self.out.len() == self.out.capacity();
            if status == Status::StreamEnd {
                // A final block: the next message needs a fresh decoder.
                self.needs_reset = true;
                return Ok(());
            }
            if consumed >= self.input.len() && !out_full {
                return Ok(());
            }
            if produced == 0 && !out_full && self.d.total_in() == in_before {
                bail!("inflate made no progress (truncated or corrupt message)");
            }
        }
    }
}

/// A quick non-cryptographic 64-bit hash of a whole payload: four
/// independent multiply-rotate lanes over 32-byte blocks (so the CPU can
/// overlap them), folded together with the length and the tail. A collision
/// only costs a failed full comparison.
pub fn payload_hash(data: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    #[inline]
    fn word(b: &[u8]) -> u64 {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    #[inline]
    fn mix(h: u64, v: u64) -> u64 {
        (h ^ v).wrapping_mul(K).rotate_left(31)
    }
    let mut lanes = [K, K.rotate_left(16), K.rotate_left(32), K.rotate_left(48)];
    let mut blocks = data.chunks_exact(32);
    for b in &mut blocks {
        lanes[0] = mix(lanes[0], word(&b[0..8]));
        lanes[1] = mix(lanes[1], word(&b[8..16]));
        lanes[2] = mix(lanes[2], word(&b[16..24]));
        lanes[3] = mix(lanes[3], word(&b[24..32]));
    }
    let mut h = (data.len() as u64).wrapping_mul(K);
    for lane in lanes {
        h = mix(h, lane);
    }
    let mut words = blocks.remainder().chunks_exact(8);
    for w in &mut words {
        h = mix(h, word(w));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(last));
    }
    h ^ (h >> 29)
}

/// `HashMap` hasher for keys that already are hashes.
#[derive(Default, Clone, Copy)]
pub struct PrehashedKey(u64);

impl std::hash::Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Byte-string search (short needles, short haystacks).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            Some(p) => {
                let at = i + p;
                if &hay[at..at + needle.len()] == needle {
                    return Some(at);
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

/// SHA-1 (RFC 3174), used only for the handshake accept key.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    let mut w = [0u32; 80];
    for block in msg.chunks_exact(64) {
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(char::from(ALPHABET[(v >> 18) as usize & 63]));
        out.push(char::from(ALPHABET[(v >> 12) as usize & 63]));
        if chunk.len() > 1 {
            out.push(char::from(ALPHABET[(v >> 6) as usize & 63]));
        } else {
            out.push('=');
        }
        if chunk.len() > 2 {
            out.push(char::from(ALPHABET[v as usize & 63]));
        } else {
            out.push('=');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha1_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn accept_key_from_rfc6455() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn url_parsing() {
        let u = WsUrl::parse("ws://127.0.0.1:8080/ws").expect("url");
        assert_eq!(u.authority, "127.0.0.1:8080");
        assert_eq!(u.host_header, "127.0.0.1:8080");
        assert_eq!(u.path, "/ws");
        let u = WsUrl::parse("ws://localhost").expect("url");
        assert_eq!(u.authority, "localhost:80");
        assert_eq!(u.path, "/");
        assert!(WsUrl::parse("http://x/ws").is_err());
    }

    #[test]
    fn handshake_response() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n\x81\x02hi";
        let r = parse_response(resp, key).expect("ok").expect("complete");
        assert!(r.deflate);
        assert_eq!(&resp[r.head_len..], b"\x81\x02hi");
        // Incomplete head.
        assert_eq!(parse_response(&resp[..40], key).expect("ok"), None);
        // Wrong key.
        assert!(parse_response(resp, "AAAAAAAAAAAAAAAAAAAAAA==").is_err());
        // Refused.
        assert!(parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n", key).is_err());
        // No extension.
        let plain =
            b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(
            !parse_response(plain, key)
                .expect("ok")
                .expect("some")
                .deflate
        );
    }

    #[test]
    fn frame_headers() {
        // Short text frame.
        let h = parse_header(b"\x81\x05hello").expect("ok").expect("some");
        assert_eq!((h.fin, h.rsv1, h.opcode), (true, false, OP_TEXT));
        assert_eq!((h.header_len, h.payload_len, h.total_len()), (2, 5, 7));
        // Compressed, 16-bit length.
        let h = parse_header(b"\xc1\x7e\x01\x00")
            .expect("ok")
            .expect("some");
        assert!(h.rsv1);
        assert_eq!((h.header_len, h.payload_len), (4, 256));
        // 64-bit length.
        let h = parse_header(b"\x81\x7f\0\0\0\0\0\x01\0\0")
            .expect("ok")
            .expect("some");
        assert_eq!((h.header_len, h.payload_len), (10, 65536));
        // Incomplete headers.
        assert_eq!(parse_header(b"\x81").expect("ok"), None);
        assert_eq!(parse_header(b"\x81\x7e\x01").expect("ok"), None);
        assert_eq!(parse_header(b"\x81\x7f\0\0\0").expect("ok"), None);
        assert_eq!(parse_header(b"\x81\x85\x01\x02").expect("ok"), None);
        // Masked frame.
        let h = parse_header(b"\x89\x82\x01\x02\x03\x04ab")
            .expect("ok")
            .expect("some");
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
        assert_eq!((h.header_len, h.payload_len), (6, 2));
        // Errors: fragmented ping, reserved opcode, RSV2, oversized.
        assert!(parse_header(b"\x09\x00").is_err());
        assert!(parse_header(b"\x83\x00").is_err());
        assert!(parse_header(b"\xa1\x00").is_err());
        assert!(parse_header(b"\x81\x7f\0\0\0\0\x7f\0\0\0").is_err());
    }

    #[test]
    fn client_frames_roundtrip() {
        for len in [0usize, 5, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_client_frame(&mut out, OP_BINARY, &payload, [9, 8, 7, 6]);
            let h = parse_header(&out).expect("ok").expect("some");
            assert_eq!(h.opcode, OP_BINARY);
            assert_eq!(h.payload_len, len);
            assert_eq!(h.total_len(), out.len());
            let mask = h.mask.expect("client frames are masked");
            let mut body = out[h.header_len..].to_vec();
            apply_mask(&mut body, mask);
            assert_eq!(body, payload);
        }
    }

    fn deflate_message(msg: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync)
            .expect("compress");
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    fn deflate_final(msg: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Finish)
            .expect("compress");
        out
    }

    #[test]
    fn inflate_independent_messages() {
        let mut inf = Inflater::new();
        let a = br#"{"channel":"bench-1","event":"tick","data":{"t":1,"n":2,"p":"AAPL 1.23 MSFT 4.56 AAPL 1.23"},"seq":3}"#;
        let b: Vec<u8> = (0..50_000)
            .map(|i| b"abcdefgh"[(i * 7 + i / 13) % 8])
            .collect();
        let c = br#"{"channel":"bench-2","event":"tick","data":{"t":5,"n":6,"p":"NVDA 9.99 NVDA 9.99 NVDA"},"seq":7}"#;
        assert_eq!(inf.inflate(&deflate_message(a)).expect("a"), a);
        assert_eq!(inf.inflate(&deflate_message(&b)).expect("b"), &b[..]);
        assert_eq!(inf.inflate(&deflate_message(c)).expect("c"), c);
        assert_eq!((inf.inflated, inf.cache_hits), (3, 0));
        // Identical payloads come from the cache.
        assert_eq!(inf.inflate(&deflate_message(a)).expect("a again"), a);
        assert_eq!(inf.inflate(&deflate_message(c)).expect("c again"), c);
        assert_eq!((inf.inflated, inf.cache_hits), (3, 2));
        // A final block, then ordinary messages again.
        assert_eq!(inf.inflate(&deflate_final(c)).expect("final"), c);
        assert_eq!(inf.inflate(&deflate_final(a)).expect("final a"), a);
        let d = b"something else entirely, not cached yet";
        assert_eq!(inf.inflate(&deflate_message(d)).expect("d"), d);
        // Garbage fails, and does not poison later messages.
        assert!(inf.inflate(b"\xff\xff\xff\xff").is_err());
        let e = b"after the garbage";
        assert_eq!(inf.inflate(&deflate_message(e)).expect("e"), e);
    }

    #[test]
    fn inflate_cache_evicts() {
        let mut inf = Inflater::new();
        let msgs: Vec<Vec<u8>> = (0..(INFLATE_CACHE + 5))
            .map(|i| format!("message number {i} with some text {}", i * 7919).into_bytes())
            .collect();
        let packed: Vec<Vec<u8>> = msgs.iter().map(|m| deflate_message(m)).collect();
        for _ in 0..2 {
            for (m, z) in msgs.iter().zip(&packed) {
                assert_eq!(inf.inflate(z).expect("inflate"), &m[..]);
            }
        }
        // Cycling through more distinct payloads than the cache holds misses
        // every time; the results stay right.
        assert_eq!(inf.inflated, 2 * msgs.len() as u64);
        assert_eq!(
            inf.inflate(&packed[msgs.len() - 1]).expect("last"),
            &msgs[msgs.len() - 1][..]
        );
        assert_eq!(inf.cache_hits, 1);
    }

    #[test]
    fn hash_differs() {
        assert_ne!(payload_hash(b"abc"), payload_hash(b"abd"));
        assert_ne!(payload_hash(b""), payload_hash(b"\0"));
        assert_ne!(payload_hash(b"12345678"), payload_hash(b"12345678\0"));
        assert_eq!(
            payload_hash(b"same bytes here"),
            payload_hash(b"same bytes here")
        );
        let long_a = [7u8; 500];
        let mut long_b = long_a;
        long_b[499] = 8;
        assert_ne!(payload_hash(&long_a), payload_hash(&long_b));
    }

    #[test]
    fn find_bytes() {
        assert_eq!(find(b"hello world", b"world"), Some(6));
        assert_eq!(find(b"hello", b"hello"), Some(0));
        assert_eq!(find(b"hello", b"hellos"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"", b"a"), None);
    }
}
