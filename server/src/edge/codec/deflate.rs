//! permessage-deflate (RFC 7692) compression of whole messages.
//!
//! Outgoing: the server negotiates `server_no_context_takeover`, so each message is
//! compressed from an empty window and the result does not depend on anything sent
//! before. That is what lets a broadcast be compressed once and the same bytes be
//! written to every compressed socket.
//!
//! Incoming: the server always answers with `client_no_context_takeover`, so every
//! client message can be inflated from a fresh state. The output is capped while
//! inflating, because a few kilobytes of DEFLATE can expand to gigabytes.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 strips it on the
/// wire and §7.2.2 has the receiver put it back.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Largest payload one stored (uncompressed) DEFLATE block can carry.
const MAX_STORED_BLOCK: usize = 0xffff;

/// Smallest step by which the inflate output grows, so that highly compressed
/// messages do not cost one tiny reallocation after another.
const MIN_INFLATE_GROWTH: usize = 4096;

/// Compress one whole message for permessage-deflate with no context takeover: raw
/// DEFLATE, sync flush, trailing `00 00 FF FF` removed (RFC 7692 §7.2.1).
///
/// The result is independent of any other message, so one result can be sent to every
/// compressed socket (with RSV1 set on the first frame). `level` is the zlib level;
/// values above 9 are treated as 9. The window is 32 KiB (15 bits), which is why
/// negotiation refuses offers asking for a smaller `server_max_window_bits`.
pub fn deflate_message(payload: &[u8], level: u32) -> Bytes {
    let Some(mut out) = compress_sync(payload, level.min(9)) else {
        // The compressor cannot fail for a valid level and a buffer with room, but if
        // it ever did, stored blocks are still a correct encoding of the message.
        return Bytes::from(stored_message(payload));
    };
    // Broadcast bytes may sit in many socket queues for a while; do not let them pin
    // the slack left by the growth strategy.
    if out.capacity() - out.len() > out.len() / 8 {
        out.shrink_to_fit();
    }
    Bytes::from(out)
}

/// Raw DEFLATE with a sync flush and the sync tail removed, or `None` if the
/// compressor misbehaved (reported an error or stopped making progress).
fn compress_sync(payload: &[u8], level: u32) -> Option<Vec<u8>> {
    let mut compressor = Compress::new(Compression::new(level), false);
    // Typical JSON pushes compress to well under half; growth handles the rest.
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let consumed = usize::try_from(compressor.total_in()).ok()?;
        let written = out.len();
        compressor
            .compress_vec(payload.get(consumed..)?, &mut out, FlushCompress::Sync)
            .ok()?;
        let now_consumed = usize::try_from(compressor.total_in()).ok()?;
        // With all input taken and room left over, the sync flush has completed;
        // if the output filled up, the flush may be partial and must be resumed.
        if now_consumed == payload.len() && out.len() < out.capacity() {
            break;
        }
        if now_consumed == consumed && out.len() == written {
            return None;
        }
    }
    if !out.ends_with(&SYNC_TAIL) {
        return None;
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    Some(out)
}

/// The message as non-final stored blocks plus the one-byte remainder of the empty
/// stored block that RFC 7692 §7.2.1 appends and then strips to `00`.
fn stored_message(payload: &[u8]) -> Vec<u8> {
    let blocks = payload.len().div_ceil(MAX_STORED_BLOCK);
    let mut out = Vec::with_capacity(payload.len() + 5 * blocks + 1);
    for block in payload.chunks(MAX_STORED_BLOCK) {
        // Chunks are at most MAX_STORED_BLOCK long, so the length fits in 16 bits.
        let len = block.len() as u16;
        // BFINAL=0, BTYPE=00, then padding to the byte boundary: one zero byte.
        out.push(0x00);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.push(0x00);
    out
}

/// Why a compressed client message could not be inflated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InflateError {
    /// The message would inflate to more than the given number of bytes; inflation
    /// stopped there, so no more than about that much memory was used.
    #[error("inflated message exceeds {0} bytes")]
    TooBig(usize),
    /// The bytes are not valid raw DEFLATE data.
    #[error("corrupt deflate data")]
    Corrupt,
}

/// Inflates client messages.
///
/// We always negotiate `client_no_context_takeover`, so every message starts from a
/// fresh state; the Inflater may be reused (it is reset between messages) to avoid
/// reallocating. Its roughly 43 KiB of decompressor state is only allocated by the
/// first [`Inflater::inflate`] call, so an unused Inflater costs a few words.
#[derive(Debug, Default)]
pub struct Inflater {
    state: Option<Decompress>,
}

impl Inflater {
    /// An Inflater with no decompressor state allocated yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inflate one whole message payload (as received, without the sync tail).
    ///
    /// Returns [`InflateError::TooBig`] as soon as the output would exceed `max_size`
    /// bytes: the output buffer never grows beyond `max_size + 1` bytes, whatever the
    /// compression ratio. Data after a final (BFINAL) block is ignored, since
    /// RFC 7692 §7.2.1 can leave a stray byte there.
    pub fn inflate(&mut self, compressed: &[u8], max_size: usize) -> Result<Bytes, InflateError> {
        let fresh = self.state.is_none();
        let decompressor = self.state.get_or_insert_with(|| Decompress::new(false));
        if !fresh {
            decompressor.reset(false);
        }
        // One byte beyond the limit is enough to tell "exactly max_size" from "more".
        let limit = max_size.saturating_add(1);
        let initial = compressed.len().saturating_mul(2).max(256);
        let mut out = Vec::with_capacity(initial.min(limit));
        // Feeding the tail separately avoids copying the message to append it.
        for input in [compressed, &SYNC_TAIL[..]] {
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    let growth = out.capacity().max(MIN_INFLATE_GROWTH);
                    out.reserve_exact(growth.min(limit - out.len()));
                }
                let consumed_before = decompressor.total_in();
                let written_before = out.len();
                let status = decompressor
                    .decompress_vec(&input[pos..], &mut out, FlushDecompress::None)
                    .map_err(|_| InflateError::Corrupt)?;
                let consumed = decompressor.total_in() - consumed_before;
                pos += usize::try_from(consumed).map_err(|_| InflateError::Corrupt)?;
                if out.len() > max_size {
                    return Err(InflateError::TooBig(max_size));
                }
                if status == Status::StreamEnd {
                    return Ok(Bytes::from(out));
                }
                // The decompressor can still hold output after taking all the input
                // (a long match straddling its window), so only a call that neither
                // consumes nor produces means this input is finished.
                if consumed == 0 && out.len() == written_before {
                    if pos < input.len() {
                        // Room and input but no progress: never loop forever on it.
                        return Err(InflateError::Corrupt);
                    }
                    break;
                }
            }
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, poorly compressible bytes (xorshift), so large round trips
    /// exercise output growth in both directions.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn json_like(len: usize) -> Vec<u8> {
        let mut s = Vec::with_capacity(len);
        let mut i = 0u64;
        while s.len() < len {
            s.extend_from_slice(
                format!(r#"{{"ch":"prices:BTC","seq":{i},"px":"6{i}.25"}},"#).as_bytes(),
            );
            i += 1;
        }
        s.truncate(len);
        s
    }

    #[test]
    fn round_trip_sizes_and_levels() {
        let mut inflater = Inflater::new();
        for len in [0, 1, 5, 125, 126, 1000, 65_535, 65_536, 100 * 1024] {
            for payload in [json_like(len), noise(len), vec![0u8; len]] {
                for level in [0, 1, 6, 9, 42] {
                    let compressed = deflate_message(&payload, level);
                    assert!(!compressed.ends_with(&SYNC_TAIL), "tail must be stripped");
                    let inflated = inflater
                        .inflate(&compressed, payload.len())
                        .expect("round trip");
                    assert_eq!(inflated, payload, "len {len} level {level}");
                }
            }
        }
    }

    #[test]
    fn compression_actually_compresses_and_is_deterministic() {
        let payload = json_like(10_000);
        let a = deflate_message(&payload, 6);
        let b = deflate_message(&payload, 6);
        assert_eq!(a, b, "no context carried between messages");
        assert!(a.len() < payload.len() / 4, "{} bytes", a.len());
    }

    #[test]
    fn rfc7692_vectors_inflate_to_hello() {
        let vectors: [&[u8]; 4] = [
            // §7.2.3.1: a single compressed (fixed Huffman) block.
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            // §7.2.3.3: a stored block, then the stray 00 of the stripped empty block.
            &[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
            // §7.2.3.4: BFINAL set, followed by a stray byte.
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
            // §7.2.3.5: two blocks in one message.
            &[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ];
        let mut inflater = Inflater::new();
        for v in vectors {
            assert_eq!(
                inflater.inflate(v, 1024).as_deref(),
                Ok(&b"Hello"[..]),
                "{v:02x?}"
            );
        }
    }

    #[test]
    fn empty_message_encodings() {
        let mut inflater = Inflater::new();
        // Empty payload, and an empty fixed-Huffman block (§7.2.3.6).
        for v in [&[][..], &[0x00][..], &[0x02, 0x00][..]] {
            assert_eq!(inflater.inflate(v, 0).as_deref(), Ok(&b""[..]), "{v:02x?}");
        }
        let compressed = deflate_message(b"", 6);
        assert_eq!(inflater.inflate(&compressed, 0).as_deref(), Ok(&b""[..]));
    }

    #[test]
    fn deflate_bomb_is_stopped_at_the_limit() {
        let bomb = deflate_message(&vec![0u8; 1 << 20], 9);
        assert!(bomb.len() < 8 * 1024);
        let mut inflater = Inflater::new();
        assert_eq!(
            inflater.inflate(&bomb, 64 * 1024),
            Err(InflateError::TooBig(64 * 1024))
        );
        // The same Inflater recovers for the next message.
        let ok = deflate_message(b"after the bomb", 6);
        assert_eq!(
            inflater.inflate(&ok, 100).as_deref(),
            Ok(&b"after the bomb"[..])
        );
    }

    #[test]
    fn limit_is_exact() {
        let payload = json_like(10_000);
        let compressed = deflate_message(&payload, 6);
        let mut inflater = Inflater::new();
        assert_eq!(
            inflater.inflate(&compressed, 10_000).map(|b| b.len()),
            Ok(10_000)
        );
        assert_eq!(
            inflater.inflate(&compressed, 9_999),
            Err(InflateError::TooBig(9_999))
        );
        assert_eq!(
            inflater
                .inflate(b"\xf2\x48\xcd\xc9\xc9\x07\x00", 5)
                .map(|b| b.len()),
            Ok(5)
        );
        assert_eq!(
            inflater.inflate(b"\xf2\x48\xcd\xc9\xc9\x07\x00", 4),
            Err(InflateError::TooBig(4))
        );
    }

    #[test]
    fn garbage_is_corrupt_and_inflater_recovers() {
        let mut inflater = Inflater::new();
        // BTYPE=11 is reserved.
        assert_eq!(
            inflater.inflate(&[0xff; 16], 1024),
            Err(InflateError::Corrupt)
        );
        // A stored block whose NLEN is not the complement of LEN.
        assert_eq!(
            inflater.inflate(&[0x00, 0x05, 0x00, 0x00, 0x00, b'H'], 1024),
            Err(InflateError::Corrupt)
        );
        let ok = deflate_message(b"fine", 6);
        assert_eq!(inflater.inflate(&ok, 100).as_deref(), Ok(&b"fine"[..]));
    }

    #[test]
    fn stored_fallback_is_valid_deflate() {
        let mut inflater = Inflater::new();
        for len in [0, 1, 65_535, 65_536, 140_000] {
            let payload = noise(len);
            let stored = stored_message(&payload);
            assert_eq!(
                inflater.inflate(&stored, len).as_deref(),
                Ok(&payload[..]),
                "{len}"
            );
        }
    }

    #[test]
    fn unused_inflater_is_small() {
        assert!(std::mem::size_of::<Inflater>() <= 4 * std::mem::size_of::<usize>());
        assert!(Inflater::new().state.is_none());
    }
}
