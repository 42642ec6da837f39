//! RFC 6455 framing: encoding of server frames, and a streaming decoder that turns
//! the bytes a client sends into complete, validated messages.
//!
//! Server frames are never masked and never fragmented: pushes are built whole, and
//! a single frame is the cheapest thing to write to thousands of sockets.
//!
//! The decoder enforces the protocol rules a server must (masking, reserved bits,
//! opcodes, fragmentation order, control frame limits, UTF-8, close codes) and a size
//! limit applied before any payload is buffered, so a client cannot make the server
//! allocate more than about `max_message_size` per connection, compressed or not.
//! Any violation is reported as a [`ProtocolError`] carrying the close code to send;
//! what the decoder returns after that is meaningless, though it never panics.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::deflate::{InflateError, Inflater};

/// Close codes we send (RFC 6455 §7.4.1, RFC 6455 IANA registry).
pub mod close_code {
    /// The purpose of the connection has been fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The server is going down or the client navigated away.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The peer sent a kind of data the endpoint does not accept.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message's content did not match its type (e.g. text that is not UTF-8).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message broke the application's policy.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A message is larger than the endpoint accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server hit an unexpected condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is restarting; the client may reconnect.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The server is overloaded; the client should reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// The frame opcodes RFC 6455 §5.2 defines, with their wire values; all others are
/// reserved and rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// A later frame of a fragmented message.
    Continuation = 0x0,
    /// The first (or only) frame of a UTF-8 text message.
    Text = 0x1,
    /// The first (or only) frame of a binary message.
    Binary = 0x2,
    /// Starts or answers the closing handshake.
    Close = 0x8,
    /// A keepalive probe, to be answered with a pong.
    Ping = 0x9,
    /// The answer to a ping, or an unsolicited heartbeat.
    Pong = 0xa,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        use OpCode::*;
        [Continuation, Text, Binary, Close, Ping, Pong]
            .into_iter()
            .find(|op| *op as u8 == bits)
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const OPCODE_BITS: u8 = 0x0f;
const MASKED: u8 = 0x80;
const LENGTH_BITS: u8 = 0x7f;
/// Length values of the 7-bit field that announce a 16-bit and a 64-bit length.
const LENGTH_16: u8 = 126;
const LENGTH_64: u8 = 127;
/// RFC 6455 §5.5: control frames carry at most 125 bytes, so their length always
/// fits the 7-bit field.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Bytes of header an unmasked frame with this payload length needs.
fn server_header_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

/// Encode one unmasked server frame with FIN set.
///
/// `compressed` sets RSV1 (only valid for Text/Binary on a permessage-deflate
/// connection, with a payload from [`super::deflate::deflate_message`]; the caller is
/// responsible). Control payloads must not exceed 125 bytes; that is not checked here
/// because every control frame the server sends is built by code that knows it.
pub fn encode_frame(opcode: OpCode, compressed: bool, payload: &[u8]) -> Bytes {
    let mut dst = BytesMut::with_capacity(server_header_len(payload.len()) + payload.len());
    encode_frame_into(&mut dst, opcode, compressed, payload);
    dst.freeze()
}

/// Same as [`encode_frame`], appending into an existing buffer, for callers that
/// batch several frames into one write.
pub fn encode_frame_into(dst: &mut BytesMut, opcode: OpCode, compressed: bool, payload: &[u8]) {
    let len = payload.len();
    dst.reserve(server_header_len(len) + len);
    let rsv1 = if compressed { RSV1 } else { 0 };
    dst.put_u8(FIN | rsv1 | opcode as u8);
    // The shortest length encoding is mandatory (RFC 6455 §5.2); the guards make the
    // narrowing casts lossless.
    match len {
        0..=125 => dst.put_u8(len as u8),
        126..=0xffff => {
            dst.put_u8(LENGTH_16);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(LENGTH_64);
            dst.put_u64(len as u64);
        }
    }
    dst.put_slice(payload);
}

/// A close frame with `code` and `reason`.
///
/// The reason is truncated on a char boundary so the payload stays within the
/// 125 bytes allowed for a control frame: a too-long reason must never turn a clean
/// close into a protocol error at the client. `code` should be one that may be sent
/// (see [`close_code`]); 1005, 1006 and 1015 never appear on the wire.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(OpCode::Close, false, &payload[..2 + end])
}

/// A complete message from the client after reassembly, inflation and validation.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// A text message; the bytes are guaranteed to be valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the server should answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong, usually the answer to one of our pings.
    Pong(Bytes),
    /// The client's close frame: `None` for an empty payload, otherwise a valid code
    /// and its (UTF-8) reason.
    Close(Option<(u16, String)>),
}

/// Why the connection must be closed, and with which code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{reason} (close code {code})")]
pub struct ProtocolError {
    /// The close code to send before dropping the connection.
    pub code: u16,
    /// A short description, fit for logs and for the close frame's reason.
    pub reason: &'static str,
}

const fn fail(code: u16, reason: &'static str) -> ProtocolError {
    ProtocolError { code, reason }
}

const fn protocol(reason: &'static str) -> ProtocolError {
    fail(close_code::PROTOCOL_ERROR, reason)
}

const fn invalid(reason: &'static str) -> ProtocolError {
    fail(close_code::INVALID_PAYLOAD, reason)
}

const TOO_BIG: ProtocolError = fail(close_code::MESSAGE_TOO_BIG, "message too big");
const INFLATED_TOO_BIG: ProtocolError =
    fail(close_code::MESSAGE_TOO_BIG, "inflated message too big");
const CORRUPT: ProtocolError = invalid("corrupt compressed message");
const BAD_TEXT: ProtocolError = invalid("text message is not valid UTF-8");
const BAD_REASON: ProtocolError = invalid("close reason is not valid UTF-8");
const NO_MESSAGE: ProtocolError = protocol("continuation frame without a message in progress");

/// Limits and negotiated options for one connection's [`Decoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Largest data message accepted, in bytes, after reassembly and after inflation.
    /// Control frames are bounded by the protocol's 125 bytes instead.
    pub max_message_size: usize,
    /// Whether permessage-deflate was negotiated, i.e. whether RSV1 may be set.
    pub deflate: bool,
}

/// Streaming decoder for the frames one client sends.
///
/// It is a few words when idle: a fragmented message's buffer is only allocated
/// when one starts and is released when it completes, and inflation state (tens of
/// kilobytes) only exists while a compressed message is being inflated. Keeping it
/// between messages would cost that much for every connection that ever sent one.
#[derive(Debug)]
pub struct Decoder {
    config: DecoderConfig,
    partial: Option<Partial>,
}

/// A fragmented data message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
}

/// What a frame header says, once it has passed every check that needs no payload.
struct Header {
    opcode: OpCode,
    fin: bool,
    rsv1: bool,
    header_len: usize,
    payload_len: usize,
    mask: [u8; 4],
}

impl Decoder {
    /// A decoder with no message in progress.
    pub fn new(config: DecoderConfig) -> Self {
        Self {
            config,
            partial: None,
        }
    }

    /// Parse as many bytes from `buf` as form the next complete message; consumes
    /// what it used.
    ///
    /// `Ok(None)` means more bytes are needed; whole frames that were part of an
    /// unfinished fragmented message may have been consumed. Control frames
    /// interleaved in a fragmented message are returned as soon as they are complete.
    /// Header errors are reported as soon as the header bytes are in, and a frame's
    /// payload is never reserved for in advance, so a client announcing a large frame
    /// and sending it slowly only costs the bytes it has actually sent.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            // parse_header only succeeds once the whole header is in `buf`.
            if buf.len() - header.header_len < header.payload_len {
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len);
            unmask(&mut payload, header.mask);
            if let Some(message) = self.on_frame(&header, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Validate the header at the start of `buf`; `Ok(None)` if it is incomplete.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & (RSV2 | RSV3) != 0 {
            return Err(protocol("reserved bit RSV2 or RSV3 set"));
        }
        let opcode = OpCode::from_bits(b0 & OPCODE_BITS).ok_or(protocol("reserved opcode"))?;
        let fin = b0 & FIN != 0;
        let rsv1 = b0 & RSV1 != 0;
        if b1 & MASKED == 0 {
            // RFC 6455 §5.1: masking defeats cache poisoning through proxies.
            return Err(protocol("client frame not masked"));
        }
        let short_len = b1 & LENGTH_BITS;
        match opcode {
            _ if opcode.is_control() => {
                if !fin {
                    return Err(protocol("fragmented control frame"));
                }
                if usize::from(short_len) > MAX_CONTROL_PAYLOAD {
                    return Err(protocol("control frame payload over 125 bytes"));
                }
                if rsv1 {
                    return Err(protocol("RSV1 set on a control frame"));
                }
            }
            OpCode::Continuation => {
                if self.partial.is_none() {
                    return Err(NO_MESSAGE);
                }
                if rsv1 {
                    // RFC 7692 §6.1: only the first frame of a message carries RSV1.
                    return Err(protocol("RSV1 set on a continuation frame"));
                }
            }
            _ => {
                if self.partial.is_some() {
                    return Err(protocol("new data frame inside a fragmented message"));
                }
                if rsv1 && !self.config.deflate {
                    return Err(protocol("RSV1 set without permessage-deflate"));
                }
            }
        }
        let (extra, declared) = match short_len {
            LENGTH_16 => match buf.get(2..4) {
                Some(&[hi, lo]) => (2, u64::from(u16::from_be_bytes([hi, lo]))),
                _ => return Ok(None),
            },
            LENGTH_64 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                Some(word) => (8, u64::from_be_bytes(word)),
                None => return Ok(None),
            },
            len => (0, u64::from(len)),
        };
        if declared >> 63 != 0 {
            return Err(protocol("64-bit payload length with the top bit set"));
        }
        let payload_len = usize::try_from(declared).map_err(|_| TOO_BIG)?;
        if !opcode.is_control() {
            // Fragments count towards one message, so the running total is what is
            // limited; checking here rejects the frame before its payload arrives.
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            let total = so_far.checked_add(payload_len).ok_or(TOO_BIG)?;
            if total > self.config.max_message_size {
                return Err(TOO_BIG);
            }
        }
        let mask_at = 2 + extra;
        let Some(&[m0, m1, m2, m3]) = buf.get(mask_at..mask_at + 4) else {
            return Ok(None);
        };
        Ok(Some(Header {
            opcode,
            fin,
            rsv1,
            header_len: mask_at + 4,
            payload_len,
            mask: [m0, m1, m2, m3],
        }))
    }

    /// Handle one complete, unmasked frame; `Some` when it completes a message.
    fn on_frame(
        &mut self,
        header: &Header,
        payload: BytesMut,
    ) -> Result<Option<Message>, ProtocolError> {
        let text = match header.opcode {
            OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Close => return parse_close(&payload).map(Some),
            OpCode::Continuation => {
                // parse_header has checked that a message is in progress.
                let mut partial = self.partial.take().ok_or(NO_MESSAGE)?;
                partial.data.extend_from_slice(&payload);
                if !header.fin {
                    self.partial = Some(partial);
                    return Ok(None);
                }
                return self
                    .finish(partial.text, partial.compressed, partial.data)
                    .map(Some);
            }
            OpCode::Text => true,
            OpCode::Binary => false,
        };
        if header.fin {
            return self.finish(text, header.rsv1, payload).map(Some);
        }
        // Copy rather than keep `payload`: it shares the connection's read buffer,
        // which could then neither be reused nor freed while the message is open.
        let mut data = BytesMut::with_capacity(payload.len());
        data.extend_from_slice(&payload);
        self.partial = Some(Partial {
            text,
            compressed: header.rsv1,
            data,
        });
        Ok(None)
    }

    /// Inflate and validate a reassembled data message.
    fn finish(
        &self,
        text: bool,
        compressed: bool,
        data: BytesMut,
    ) -> Result<Message, ProtocolError> {
        let data = if compressed {
            // A fresh Inflater per message: client_no_context_takeover is always
            // negotiated, and idle connections should not hold inflate state.
            Inflater::new()
                .inflate(&data, self.config.max_message_size)
                .map_err(|e| match e {
                    InflateError::TooBig(_) => INFLATED_TOO_BIG,
                    InflateError::Corrupt => CORRUPT,
                })?
        } else {
            data.freeze()
        };
        if !text {
            return Ok(Message::Binary(data));
        }
        if std::str::from_utf8(&data).is_err() {
            return Err(BAD_TEXT);
        }
        Ok(Message::Text(data))
    }
}

/// Decode a close frame's payload (RFC 6455 §5.5.1, §7.4).
fn parse_close(payload: &[u8]) -> Result<Message, ProtocolError> {
    let (code, reason) = match payload {
        [] => return Ok(Message::Close(None)),
        [_] => return Err(protocol("close frame with a 1-byte payload")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !is_valid_received_close_code(code) {
        return Err(protocol("invalid close code"));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| BAD_REASON)?;
    Ok(Message::Close(Some((code, reason.to_owned()))))
}

/// Codes a peer may put in a close frame: the defined ones that are not reserved
/// for local use (1004 is reserved; 1005, 1006 and 1015 must never be sent), plus
/// the ranges for libraries (3000-3999) and applications (4000-4999).
fn is_valid_received_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XOR the payload with the repeating 4-byte masking key (RFC 6455 §5.3), eight
/// bytes at a time: client frames are all masked, so this runs over every byte
/// received.
fn unmask(data: &mut [u8], key: [u8; 4]) {
    let [k0, k1, k2, k3] = key;
    // Native byte order on both sides makes the XOR bytewise on any platform.
    let wide = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The remainder starts at a multiple of 8, hence of 4: the key starts over.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::super::deflate::deflate_message;
    use super::*;

    /// The masking key of the RFC 6455 §5.7 examples.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const BIG: usize = 1 << 20;

    /// Test-only client encoder: `b0` is the whole first byte (FIN, RSV, opcode), the
    /// length uses the shortest form, and the payload is masked with [`KEY`].
    fn client(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let len = payload.len();
        match len {
            0..=125 => out.extend_from_slice(&[b0, MASKED | len as u8]),
            126..=0xffff => {
                out.extend_from_slice(&[b0, MASKED | LENGTH_16]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.extend_from_slice(&[b0, MASKED | LENGTH_64]);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    /// Turn a server frame from [`encode_frame`] into the same frame sent by a client.
    fn mask_server_frame(frame: &[u8]) -> Vec<u8> {
        let header_len = match frame[1] {
            LENGTH_16 => 4,
            LENGTH_64 => 10,
            _ => 2,
        };
        assert_eq!(frame[1] & MASKED, 0, "server frames are unmasked");
        let mut out = frame[..header_len].to_vec();
        out[1] |= MASKED;
        out.extend_from_slice(&KEY);
        let payload = &frame[header_len..];
        out.extend(payload.iter().zip(KEY.iter().cycle()).map(|(b, k)| b ^ k));
        out
    }

    fn decoder(deflate: bool) -> Decoder {
        Decoder::new(DecoderConfig {
            max_message_size: BIG,
            deflate,
        })
    }

    /// Decode everything in `bytes` at once, expecting no leftovers.
    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder.decode(&mut buf)? {
            out.push(message);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        Ok(out)
    }

    fn decode_one(decoder: &mut Decoder, bytes: &[u8]) -> Result<Message, ProtocolError> {
        let mut messages = decode_all(decoder, bytes)?;
        assert_eq!(messages.len(), 1, "{messages:?}");
        Ok(messages.remove(0))
    }

    fn error(deflate: bool, bytes: &[u8]) -> ProtocolError {
        let mut buf = BytesMut::from(bytes);
        let mut decoder = decoder(deflate);
        loop {
            match decoder.decode(&mut buf) {
                Err(e) => return e,
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error for {bytes:02x?}"),
            }
        }
    }

    fn text(s: &str) -> Message {
        Message::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rfc6455_examples() {
        assert_eq!(
            &encode_frame(OpCode::Text, false, b"Hello")[..],
            &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        let masked_hello = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_one(&mut decoder(false), &masked_hello),
            Ok(text("Hello"))
        );
        let masked_pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(
            decode_one(&mut decoder(false), &masked_pong),
            Ok(Message::Pong(Bytes::from_static(b"Hello")))
        );
        assert_eq!(
            &encode_frame(OpCode::Ping, false, b"Hello")[..],
            &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
        assert_eq!(
            &encode_frame(OpCode::Binary, false, &[0; 256])[..4],
            &[0x82, 0x7e, 0x01, 0x00]
        );
        assert_eq!(
            &encode_frame(OpCode::Binary, false, &[0; 65536])[..10],
            &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn every_length_encoding_both_ways() {
        for (len, header) in [
            (0, 2),
            (1, 2),
            (125, 2),
            (126, 4),
            (65_535, 4),
            (65_536, 10),
            (70_001, 10),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let frame = encode_frame(OpCode::Binary, false, &payload);
            assert_eq!(frame.len(), header + len, "len {len}");
            assert_eq!(frame[0], 0x82);
            let expected = Message::Binary(Bytes::from(payload.clone()));
            let from_server = mask_server_frame(&frame);
            assert_eq!(
                decode_one(&mut decoder(false), &from_server).as_ref(),
                Ok(&expected)
            );
            let from_client = client(0x82, &payload);
            assert_eq!(
                from_client, from_server,
                "same shortest encoding, len {len}"
            );
            assert_eq!(decode_one(&mut decoder(false), &from_client), Ok(expected));
        }
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        let mut frame = vec![0x81, MASKED | LENGTH_64, 0, 0, 0, 0, 0, 0, 0, 2];
        frame.extend_from_slice(&KEY);
        frame.extend([b'o' ^ KEY[0], b'k' ^ KEY[1]]);
        assert_eq!(decode_one(&mut decoder(false), &frame), Ok(text("ok")));
    }

    #[test]
    fn encode_flags_and_batching() {
        assert_eq!(encode_frame(OpCode::Text, true, b"x")[0], 0xc1);
        assert_eq!(encode_frame(OpCode::Binary, true, b"x")[0], 0xc2);
        assert_eq!(encode_frame(OpCode::Pong, false, b"")[..], [0x8a, 0x00]);
        let mut batch = BytesMut::new();
        encode_frame_into(&mut batch, OpCode::Text, false, b"a");
        encode_frame_into(&mut batch, OpCode::Binary, true, &[1; 300]);
        let mut expected = encode_frame(OpCode::Text, false, b"a").to_vec();
        expected.extend_from_slice(&encode_frame(OpCode::Binary, true, &[1; 300]));
        assert_eq!(&batch[..], &expected[..]);
    }

    #[test]
    fn encode_close_truncates_on_char_boundary() {
        assert_eq!(&encode_close(1000, "")[..], &[0x88, 0x02, 0x03, 0xe8]);
        assert_eq!(
            &encode_close(1001, "bye")[..],
            &[0x88, 0x05, 0x03, 0xe9, b'b', b'y', b'e']
        );
        let long = "a".repeat(200);
        assert_eq!(encode_close(1000, &long).len(), 2 + 125);
        // 'é' is two bytes, so 123 bytes of reason would split one: 122 are kept.
        let accented = "é".repeat(100);
        let frame = encode_close(1008, &accented);
        assert_eq!(frame[1], 124);
        let decoded = decode_one(&mut decoder(false), &mask_server_frame(&frame));
        assert_eq!(decoded, Ok(Message::Close(Some((1008, "é".repeat(61))))));
        let euro = "€".repeat(50); // three bytes each: 123 = 41 * 3, nothing to trim
        assert_eq!(encode_close(4000, &euro)[1], 125);
    }

    #[test]
    fn fragmentation_with_interleaved_control_frames() {
        let mut bytes = client(0x01, b"Hel");
        bytes.extend(client(0x89, b"ping?"));
        bytes.extend(client(0x00, b""));
        bytes.extend(client(0x8a, b""));
        bytes.extend(client(0x80, b"lo"));
        bytes.extend(client(0x02, &[1, 2]));
        bytes.extend(client(0x80, &[3]));
        let mut d = decoder(false);
        assert_eq!(
            decode_all(&mut d, &bytes),
            Ok(vec![
                Message::Ping(Bytes::from_static(b"ping?")),
                Message::Pong(Bytes::new()),
                text("Hello"),
                Message::Binary(Bytes::from_static(&[1, 2, 3])),
            ])
        );
        assert!(d.partial.is_none(), "fragment buffer released");
    }

    #[test]
    fn utf8_split_across_fragments() {
        let s = "price €12 🚀";
        let bytes = s.as_bytes();
        // Split inside the euro sign and inside the rocket.
        let mut frames = client(0x01, &bytes[..7]);
        frames.extend(client(0x00, &bytes[7..14]));
        frames.extend(client(0x80, &bytes[14..]));
        assert_eq!(decode_one(&mut decoder(false), &frames), Ok(text(s)));
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let invalid = fail(
            close_code::INVALID_PAYLOAD,
            "text message is not valid UTF-8",
        );
        assert_eq!(error(false, &client(0x81, b"ok\xff")), invalid);
        assert_eq!(error(false, &client(0x81, b"\xed\xa0\x80")), invalid); // surrogate
        let mut truncated = client(0x01, "€".as_bytes().get(..2).expect("2 bytes"));
        truncated.extend(client(0x80, b""));
        assert_eq!(error(false, &truncated), invalid);
        // Binary messages are not checked.
        let binary = decode_one(&mut decoder(false), &client(0x82, b"\xff"));
        assert_eq!(binary, Ok(Message::Binary(Bytes::from_static(b"\xff"))));
    }

    #[test]
    fn compressed_messages() {
        let payload = r#"{"op":"subscribe","channel":"prices:BTC"}"#.repeat(20);
        let compressed = deflate_message(payload.as_bytes(), 6);
        let single = client(0xc1, &compressed);
        assert_eq!(decode_one(&mut decoder(true), &single), Ok(text(&payload)));
        // Fragmented: RSV1 on the first frame only, with a ping in the middle.
        let third = compressed.len() / 3;
        let mut frames = client(0x41, &compressed[..third]);
        frames.extend(client(0x00, &compressed[third..2 * third]));
        frames.extend(client(0x89, b""));
        frames.extend(client(0x80, &compressed[2 * third..]));
        let mut d = decoder(true);
        assert_eq!(
            decode_all(&mut d, &frames),
            Ok(vec![Message::Ping(Bytes::new()), text(&payload)])
        );
        // Uncompressed messages still work on a deflate connection.
        assert_eq!(
            decode_one(&mut d, &client(0x81, b"plain")),
            Ok(text("plain"))
        );
        let binary = deflate_message(&[7; 1000], 1);
        assert_eq!(
            decode_one(&mut d, &client(0xc2, &binary)),
            Ok(Message::Binary(Bytes::from(vec![7; 1000])))
        );
        // An empty compressed message.
        assert_eq!(
            decode_one(&mut d, &client(0xc1, &deflate_message(b"", 6))),
            Ok(text(""))
        );
    }

    #[test]
    fn compressed_errors() {
        let invalid_text = deflate_message(b"\xff\xfe", 6);
        assert_eq!(
            error(true, &client(0xc1, &invalid_text)).code,
            close_code::INVALID_PAYLOAD
        );
        assert_eq!(error(true, &client(0xc2, &[0xff; 8])), CORRUPT);
        // A deflate bomb: well under the limit on the wire, far over it inflated.
        let bomb = deflate_message(&vec![b'a'; 8 * BIG], 9);
        assert!(bomb.len() < BIG / 16);
        assert_eq!(error(true, &client(0xc1, &bomb)), INFLATED_TOO_BIG);
    }

    #[test]
    fn framing_errors() {
        let cases: Vec<(bool, Vec<u8>, &str)> = vec![
            (
                false,
                vec![0x81, 0x02, b'h', b'i'],
                "client frame not masked",
            ),
            (false, client(0xa1, b"x"), "reserved bit RSV2 or RSV3 set"),
            (false, client(0x91, b"x"), "reserved bit RSV2 or RSV3 set"),
            (
                false,
                client(0xc1, b"x"),
                "RSV1 set without permessage-deflate",
            ),
            (true, client(0xc9, b""), "RSV1 set on a control frame"),
            (
                true,
                [client(0x41, b"x"), client(0xc0, b"y")].concat(),
                "RSV1 set on a continuation frame",
            ),
            (
                false,
                client(0x80, b"x"),
                "continuation frame without a message in progress",
            ),
            (
                false,
                client(0x00, b"x"),
                "continuation frame without a message in progress",
            ),
            (
                false,
                [client(0x01, b"x"), client(0x81, b"y")].concat(),
                "new data frame inside a fragmented message",
            ),
            (
                false,
                [client(0x02, b"x"), client(0x01, b"y")].concat(),
                "new data frame inside a fragmented message",
            ),
            (false, client(0x09, b""), "fragmented control frame"),
            (false, client(0x08, b""), "fragmented control frame"),
            (
                false,
                client(0x89, &[0; 126]),
                "control frame payload over 125 bytes",
            ),
            (
                false,
                vec![0x88, 0xff, 0, 0, 0, 0, 0, 0, 0, 1],
                "control frame payload over 125 bytes",
            ),
            (
                false,
                vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0],
                "64-bit payload length with the top bit set",
            ),
        ];
        for (deflate, bytes, reason) in cases {
            assert_eq!(error(deflate, &bytes), protocol(reason), "{bytes:02x?}");
        }
        for op in (0x3..=0x7).chain(0xb..=0xf) {
            assert_eq!(
                error(false, &client(0x80 | op, b"")),
                protocol("reserved opcode"),
                "{op:x}"
            );
        }
        // A control frame may sit at the 125-byte limit.
        assert_eq!(
            decode_one(&mut decoder(false), &client(0x89, &[9; 125])),
            Ok(Message::Ping(Bytes::from(vec![9; 125])))
        );
    }

    #[test]
    fn size_limit_is_checked_on_the_header() {
        let config = DecoderConfig {
            max_message_size: 1000,
            deflate: false,
        };
        let at_limit = client(0x82, &[0; 1000]);
        assert!(matches!(
            Decoder::new(config).decode(&mut BytesMut::from(&at_limit[..])),
            Ok(Some(_))
        ));
        // Only the header of an oversized frame is needed to reject it.
        let over = client(0x82, &[0; 1001]);
        let mut header_only = BytesMut::from(&over[..4]);
        assert_eq!(Decoder::new(config).decode(&mut header_only), Err(TOO_BIG));
        let mut huge =
            BytesMut::from(&[0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(Decoder::new(config).decode(&mut huge), Err(TOO_BIG));
        // The running total of a fragmented message counts too.
        let mut d = Decoder::new(config);
        let mut buf =
            BytesMut::from(&[client(0x02, &[0; 600]), client(0x00, &[0; 400])].concat()[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        let next = client(0x80, &[0; 1]);
        assert_eq!(d.decode(&mut BytesMut::from(&next[..4])), Err(TOO_BIG));
        // Control frames are not data: a ping mid-message is fine at any limit.
        let tiny = DecoderConfig {
            max_message_size: 4,
            deflate: false,
        };
        let ping = client(0x89, b"longer than four");
        assert!(matches!(
            decode_one(&mut Decoder::new(tiny), &ping),
            Ok(Message::Ping(_))
        ));
    }

    #[test]
    fn close_frames() {
        let mut d = decoder(false);
        assert_eq!(
            decode_one(&mut d, &client(0x88, b"")),
            Ok(Message::Close(None))
        );
        assert_eq!(
            error(false, &client(0x88, &[0x03])),
            protocol("close frame with a 1-byte payload")
        );
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            let mut payload = u16::to_be_bytes(code).to_vec();
            payload.extend_from_slice("bye ✓".as_bytes());
            let decoded = decode_one(&mut d, &client(0x88, &payload));
            assert_eq!(
                decoded,
                Ok(Message::Close(Some((code, "bye ✓".to_owned())))),
                "{code}"
            );
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65_535,
        ] {
            let frame = client(0x88, &u16::to_be_bytes(code));
            assert_eq!(
                error(false, &frame),
                protocol("invalid close code"),
                "{code}"
            );
        }
        let bad_reason = client(0x88, &[0x03, 0xe8, 0xc3, 0x28]);
        assert_eq!(
            error(false, &bad_reason),
            fail(
                close_code::INVALID_PAYLOAD,
                "close reason is not valid UTF-8"
            )
        );
    }

    /// A mix of everything, decoded with all bytes at once and then one at a time.
    #[test]
    fn byte_at_a_time_matches_all_at_once() {
        let compressed = deflate_message("zipped ".repeat(100).as_bytes(), 6);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = client(0x81, "héllo".as_bytes());
        stream.extend(client(0x01, "fra".as_bytes()));
        stream.extend(client(0x89, b"p"));
        stream.extend(client(0x00, "gm€".as_bytes().get(..4).expect("4 bytes")));
        stream.extend(client(0x80, "gm€".as_bytes().get(4..).expect("rest")));
        stream.extend(client(0xc1, &compressed));
        stream.extend(client(0x42, &compressed[..5]));
        stream.extend(client(0x80, &compressed[5..]));
        stream.extend(client(0x82, &big));
        stream.extend(client(0x82, &[0; 300]));
        stream.extend(client(0x8a, b"pong"));
        stream.extend(client(0x88, &[0x03, 0xe8, b'o', b'k']));
        let all = decode_all(&mut decoder(true), &stream).expect("valid stream");
        assert_eq!(all.len(), 9, "{all:?}");
        assert_eq!(all[0], text("héllo"));
        assert_eq!(all[1], Message::Ping(Bytes::from_static(b"p")));
        assert_eq!(all[2], text("fragm€"));
        assert_eq!(all[3], text(&"zipped ".repeat(100)));
        assert_eq!(all[4], Message::Binary(Bytes::from("zipped ".repeat(100))));
        assert_eq!(all[5], Message::Binary(Bytes::from(big)));
        assert_eq!(all[8], Message::Close(Some((1000, "ok".to_owned()))));

        let mut d = decoder(true);
        let mut buf = BytesMut::new();
        let mut trickled = Vec::new();
        for &byte in &stream {
            buf.put_u8(byte);
            while let Some(message) = d.decode(&mut buf).expect("valid stream") {
                trickled.push(message);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(trickled, all);
    }

    #[test]
    fn incomplete_frames_are_left_in_the_buffer() {
        let frame = client(0x82, &[5; 200]);
        let mut d = decoder(false);
        for cut in [0, 1, 2, 3, 4, 7, 8, 100, frame.len() - 1] {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(d.decode(&mut buf), Ok(None), "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
        // Two messages in one buffer come out one per call.
        let mut buf = BytesMut::from(&[client(0x81, b"a"), client(0x81, b"b")].concat()[..]);
        assert_eq!(d.decode(&mut buf), Ok(Some(text("a"))));
        assert_eq!(d.decode(&mut buf), Ok(Some(text("b"))));
        assert_eq!(d.decode(&mut buf), Ok(None));
    }

    #[test]
    fn unmask_handles_every_alignment() {
        for len in 0..40 {
            let original: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let mut data: Vec<u8> = original
                .iter()
                .zip(KEY.iter().cycle())
                .map(|(b, k)| b ^ k)
                .collect();
            unmask(&mut data, KEY);
            assert_eq!(data, original, "len {len}");
        }
    }

    /// Arbitrary bytes, biased towards plausible headers, never panic the decoder,
    /// including when it is fed more after an error.
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..3000 {
            let config = DecoderConfig {
                max_message_size: (next() % 300) as usize,
                deflate: round % 2 == 0,
            };
            let mut d = Decoder::new(config);
            let len = (next() % 400) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let [b0, b1, ..] = &mut bytes[..] {
                *b0 &= !(RSV2 | RSV3);
                *b1 |= MASKED;
            }
            let mut buf = BytesMut::new();
            for chunk in bytes.chunks(1 + (next() % 50) as usize) {
                buf.extend_from_slice(chunk);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        // As the session does: drop the bytes, keep the decoder.
                        Err(_) => {
                            buf.clear();
                            break;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decoder_is_small() {
        assert!(
            std::mem::size_of::<Decoder>() <= 64,
            "{}",
            std::mem::size_of::<Decoder>()
        );
    }

    #[test]
    fn error_codes_and_display() {
        assert_eq!(TOO_BIG.to_string(), "message too big (close code 1009)");
        assert_eq!(INFLATED_TOO_BIG.code, 1009);
        for e in [CORRUPT, BAD_TEXT, BAD_REASON] {
            assert_eq!(e.code, 1007, "{e}");
        }
        assert_eq!(NO_MESSAGE.code, 1002);
    }
}
