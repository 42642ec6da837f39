//! A published message after the hub has turned it into client frames: encoded once,
//! framed once, deflated once, and shared by every socket on every worker.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use pushfleet_protocol::client::write_envelope;

use crate::edge::codec::deflate::deflate_message;
use crate::edge::codec::frame::{encode_frame, OpCode};

/// How messages are compressed. One per edge.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    /// Envelopes shorter than this are not compressed.
    pub threshold: usize,
    /// Deflate level 1..=9.
    pub level: u32,
}

/// The two wire forms of one envelope: a plain text frame, and a compressed one for
/// permessage-deflate sockets when compression pays.
#[derive(Debug, Clone)]
pub struct Frames {
    pub plain: Bytes,
    pub deflated: Option<Bytes>,
}

impl Frames {
    /// The frame a socket should get.
    #[inline]
    pub fn for_socket(&self, compressed: bool) -> &Bytes {
        match (&self.deflated, compressed) {
            (Some(d), true) => d,
            _ => &self.plain,
        }
    }
}

impl Encoder {
    /// Frames `envelope`; deflates it when `deflate` is asked for, it is long enough,
    /// and the result is actually smaller. Returns the deflate input/output sizes.
    pub fn frames(&self, envelope: &[u8], deflate: bool) -> (Frames, Option<(usize, usize)>) {
        let plain = encode_frame(OpCode::Text, false, envelope);
        if !deflate || envelope.len() < self.threshold {
            return (
                Frames {
                    plain,
                    deflated: None,
                },
                None,
            );
        }
        let compressed = deflate_message(envelope, self.level);
        if compressed.len() >= envelope.len() {
            return (
                Frames {
                    plain,
                    deflated: None,
                },
                None,
            );
        }
        let sizes = (envelope.len(), compressed.len());
        let deflated = encode_frame(OpCode::Text, true, &compressed);
        (
            Frames {
                plain,
                deflated: Some(deflated),
            },
            Some(sizes),
        )
    }
}

/// One message as every worker sees it.
#[derive(Debug)]
pub struct EncodedMessage {
    pub channel: Arc<str>,
    pub seq: u64,
    /// When the edge took it off the ZeroMQ socket: the start of the latency timer.
    pub received: Instant,
    pub frames: Frames,
    event: Box<str>,
    data: Box<str>,
    encoder: Encoder,
    snapshot: OnceLock<Frames>,
}

impl EncodedMessage {
    pub fn new(
        channel: Arc<str>,
        event: &str,
        data: &str,
        seq: u64,
        received: Instant,
        encoder: Encoder,
        deflate: bool,
    ) -> (Self, Option<(usize, usize)>) {
        let mut envelope = Vec::new();
        write_envelope(&mut envelope, &channel, event, data, seq, false);
        let (frames, sizes) = encoder.frames(&envelope, deflate);
        (
            Self {
                channel,
                seq,
                received,
                frames,
                event: event.into(),
                data: data.into(),
                encoder,
                snapshot: OnceLock::new(),
            },
            sizes,
        )
    }

    /// The frames of this message marked as a snapshot (`"snapshot":true`), built the
    /// first time a subscriber needs them and then shared.
    pub fn snapshot_frames(&self) -> &Frames {
        self.snapshot.get_or_init(|| {
            let mut envelope = Vec::new();
            write_envelope(
                &mut envelope,
                &self.channel,
                &self.event,
                &self.data,
                self.seq,
                true,
            );
            self.encoder.frames(&envelope, true).0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCODER: Encoder = Encoder {
        threshold: 64,
        level: 6,
    };

    #[test]
    fn small_messages_stay_plain() {
        let (p, sizes) =
            EncodedMessage::new("c".into(), "e", "1", 1, Instant::now(), ENCODER, true);
        assert!(sizes.is_none());
        assert!(p.frames.deflated.is_none());
        assert_eq!(p.frames.for_socket(true), &p.frames.plain);
        assert_eq!(
            &p.frames.plain[2..],
            br#"{"channel":"c","event":"e","data":1,"seq":1}"#
        );
    }

    #[test]
    fn large_messages_are_deflated_once() {
        let data = format!("[{}]", vec!["\"abcdefgh\""; 50].join(","));
        let (p, sizes) =
            EncodedMessage::new("c".into(), "e", &data, 7, Instant::now(), ENCODER, true);
        let (input, output) = sizes.unwrap();
        assert!(output < input);
        let d = p.frames.deflated.as_ref().unwrap();
        assert_eq!(d[0], 0x80 | 0x40 | 0x1, "FIN + RSV1 + text");
        assert_eq!(p.frames.for_socket(true), d);
        assert_eq!(p.frames.for_socket(false), &p.frames.plain);
        let snap = p.snapshot_frames();
        assert!(std::str::from_utf8(&snap.plain[4..])
            .unwrap()
            .ends_with(r#""seq":7,"snapshot":true}"#));
        assert!(snap.deflated.is_some());
    }
}
