//! Classifying and counting one complete data message.
//!
//! A message is inflated if it arrived compressed, then classified with a
//! few byte searches (no JSON parse): subscribe ack, error reply, snapshot
//! replay, probe, or a tick whose `"t":` (publish time) and `"n":` (publish
//! index) are read directly and counted in the current [`super::Round`].

use super::shared::MAX_ERRORS_KEPT;
use super::Shared;
use crate::ws;
use anyhow::{bail, Result};
use tokio::sync::OwnedSemaphorePermit;

/// Per-connection state touched by message handling.
pub struct ConnState {
    idx: usize,
    channel: usize,
    /// The server acknowledged the subscribe.
    pub(super) subscribed: bool,
    seen_tick: bool,
    last_n: u64,
    /// Held until the subscribe is acked, pacing concurrent handshakes.
    permit: Option<OwnedSemaphorePermit>,
}

impl ConnState {
    /// Connection `idx` on channel `channel`, not subscribed yet, holding
    /// `permit` until the subscribe is acknowledged.
    pub(super) fn new(
        idx: usize,
        channel: usize,
        permit: Option<OwnedSemaphorePermit>,
    ) -> ConnState {
        ConnState {
            idx,
            channel,
            subscribed: false,
            seen_tick: false,
            last_n: 0,
            permit,
        }
    }
}

impl Shared {
    /// Handles one complete data message. Returns an error to drop the
    /// connection (only for failures before the subscription is acked).
    pub(super) fn on_message(
        &self,
        payload: &[u8],
        compressed: bool,
        wire_len: usize,
        now_ns: u64,
        st: &mut ConnState,
    ) -> Result<()> {
        self.messages.set(self.messages.get() + 1);
        if compressed {
            let mut inflater = self.inflater.borrow_mut();
            match inflater.inflate(payload) {
                Ok(text) => self.classify(text, true, wire_len, now_ns, st),
                Err(e) => {
                    self.round.borrow_mut().counts.unparsed += 1;
                    self.note_error(format!("connection {}: {e:#}", st.idx));
                    Ok(())
                }
            }
        } else {
            self.classify(payload, false, wire_len, now_ns, st)
        }
    }

    fn classify(
        &self,
        text: &[u8],
        compressed: bool,
        wire_len: usize,
        now_ns: u64,
        st: &mut ConnState,
    ) -> Result<()> {
        if !text.starts_with(b"{\"channel\"") {
            if ws::find(text, b"\"type\":\"subscribed\"").is_some() {
                if !st.subscribed {
                    st.subscribed = true;
                    st.permit = None;
                    self.subscribed.set(self.subscribed.get() + 1);
                    if let Some(c) = self.subs_per_channel.borrow_mut().get_mut(st.channel) {
                        *c += 1;
                    }
                }
                return Ok(());
            }
            if ws::find(text, b"\"type\":\"error\"").is_some() {
                let msg = String::from_utf8_lossy(text).into_owned();
                {
                    let mut errs = self.server_errors.borrow_mut();
                    if errs.len() < MAX_ERRORS_KEPT {
                        errs.push(msg.clone());
                    }
                }
                if !st.subscribed {
                    bail!("subscribe refused: {msg}");
                }
                return Ok(());
            }
            if ws::find(text, b"\"channel\"").is_none() {
                self.round.borrow_mut().counts.unparsed += 1;
                return Ok(());
            }
        }
        if text.ends_with(b",\"snapshot\":true}") {
            self.round.borrow_mut().counts.snapshots += 1;
            return Ok(());
        }
        let Some(tpos) = ws::find(text, b"\"t\":") else {
            if let Some(p) = ws::find(text, b"\"probe\":") {
                if let Some((c, _)) = parse_u64(&text[p + 8..]) {
                    self.mark_probe(c as usize);
                    return Ok(());
                }
            }
            self.round.borrow_mut().counts.unparsed += 1;
            return Ok(());
        };
        let parsed = parse_u64(&text[tpos + 4..]).and_then(|(t, used)| {
            let rest = &text[tpos + 4 + used..];
            let npos = ws::find(rest, b"\"n\":")?;
            parse_u64(&rest[npos + 4..]).map(|(n, _)| (t, n))
        });
        let mut r = self.round.borrow_mut();
        let Some((t, n)) = parsed else {
            r.counts.unparsed += 1;
            return Ok(());
        };
        if st.seen_tick && n <= st.last_n {
            r.counts.duplicates += 1;
            return Ok(());
        }
        st.seen_tick = true;
        st.last_n = n;
        if n < r.lo {
            r.counts.stale += 1;
            return Ok(());
        }
        r.counts.received += 1;
        if now_ns <= r.window_end_ns {
            r.counts.in_window += 1;
        }
        r.wire_bytes += wire_len as u64;
        r.message_bytes += text.len() as u64;
        if compressed {
            r.counts.compressed += 1;
        }
        r.hist.record(now_ns.saturating_sub(t));
        Ok(())
    }
}

/// Parses leading ASCII digits; returns the value and digits consumed.
fn parse_u64(s: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut used = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        used += 1;
    }
    (used > 0).then_some((v, used))
}

#[cfg(test)]
mod tests {
    use super::super::{test_tick as tick, ClientConfig};
    use super::*;
    use crate::ws::WsUrl;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::time::Duration;

    fn shared(channels: usize) -> Rc<Shared> {
        Shared::new(ClientConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            url: WsUrl::parse("ws://127.0.0.1:1/ws").expect("url"),
            compress: false,
            channels,
            prefix: "bench-".into(),
            attempts: 1,
            handshake_timeout: Duration::from_secs(1),
        })
    }

    fn st(channel: usize) -> ConnState {
        ConnState::new(channel, channel, None)
    }

    #[test]
    fn parse_digits() {
        assert_eq!(parse_u64(b"12345,"), Some((12345, 5)));
        assert_eq!(parse_u64(b"0}"), Some((0, 1)));
        assert_eq!(parse_u64(b"x1"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
    }

    #[test]
    fn ack_error_probe_tick() {
        let sh = shared(10);
        let mut s = st(3);
        sh.classify(
            br#"{"type":"subscribed","channel":"bench-3","id":1}"#,
            false,
            50,
            0,
            &mut s,
        )
        .expect("ack");
        assert!(s.subscribed);
        assert_eq!(sh.subscribed.get(), 1);
        assert_eq!(sh.subs_per_channel.borrow()[3], 1);

        sh.classify(
            br#"{"channel":"bench-3","event":"probe","data":{"probe":3},"seq":1}"#,
            false,
            60,
            0,
            &mut s,
        )
        .expect("probe");
        assert_eq!(sh.probe_channels(), 1);
        assert_eq!(sh.missing_probe_channels(3), vec![0, 1, 2]);

        // Not measuring yet: stale.
        sh.classify(&tick(5, 1_000), false, 100, 2_000, &mut s)
            .expect("tick");
        assert_eq!(sh.round.borrow().counts.stale, 1);

        sh.round.borrow_mut().begin(10, 1_000_000);
        sh.classify(&tick(10, 1_000), false, 102, 501_000, &mut s)
            .expect("tick");
        sh.classify(&tick(20, 1_000), false, 102, 2_000_000, &mut s)
            .expect("tick");
        // Duplicate / reordered.
        sh.classify(&tick(20, 1_000), false, 102, 2_000_000, &mut s)
            .expect("tick");
        // Snapshot replay.
        let mut snap = tick(30, 1);
        snap.pop();
        snap.extend_from_slice(b",\"snapshot\":true}");
        sh.classify(&snap, false, 100, 5, &mut s).expect("snap");
        {
            let r = sh.round.borrow();
            assert_eq!(r.counts.received, 2);
            assert_eq!(r.counts.in_window, 1);
            assert_eq!(r.counts.duplicates, 1);
            assert_eq!(r.counts.snapshots, 1);
            assert_eq!(r.wire_bytes, 204);
            assert_eq!(r.hist.count(), 2);
            assert_eq!(r.hist.max(), 1_999_000);
        }

        // Error reply after subscription is recorded, not fatal.
        sh.classify(
            br#"{"type":"error","message":"nope"}"#,
            false,
            10,
            0,
            &mut s,
        )
        .expect("error after ack is not fatal");
        assert_eq!(sh.server_errors.borrow().len(), 1);
        // ...but before the ack it is.
        let mut s2 = st(4);
        assert!(sh
            .classify(
                br#"{"type":"error","message":"nope"}"#,
                false,
                10,
                0,
                &mut s2
            )
            .is_err());
        // Junk.
        sh.classify(b"hello", false, 5, 0, &mut s).expect("junk");
        assert_eq!(sh.round.borrow().counts.unparsed, 1);
    }

    #[test]
    fn compressed_message_path() {
        use flate2::{Compress, Compression, FlushCompress};
        let sh = shared(10);
        let mut s = st(3);
        s.subscribed = true;
        sh.round.borrow_mut().begin(0, u64::MAX);
        let msg = tick(7, 100);
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(512);
        c.compress_vec(&msg, &mut z, FlushCompress::Sync)
            .expect("deflate");
        z.truncate(z.len() - 4);
        sh.on_message(&z, true, z.len() + 2, 200, &mut s)
            .expect("msg");
        let r = sh.round.borrow();
        assert_eq!(r.counts.received, 1);
        assert_eq!(r.counts.compressed, 1);
        assert_eq!(r.message_bytes, msg.len() as u64);
        assert_eq!(r.hist.max(), 100);
    }
}
