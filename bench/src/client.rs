//! The WebSocket subscribers: one lightweight task per connection on the
//! single-threaded reader runtime, all sharing one [`Shared`] through an `Rc`
//! (no locks, no atomics: everything runs on one thread).
//!
//! Each task connects (retrying a few times), does the handshake, sends one
//! subscribe, then loops: read into an 8 KiB buffer (grown only if a frame
//! needs it), decode every complete frame in place, answer pings, and hand
//! text messages to [`Shared::on_message`]. That classifies a message with a
//! few byte searches (no JSON parse): subscribe ack, error reply, probe, or
//! a tick whose `"t":` (publish time) and `"n":` (publish index) are read
//! directly. The receive time is taken once per `read()`, so latency is
//! publish → bytes read by the load tool.

use crate::stats::Histogram;
use crate::ws::{self, Inflater, WsUrl};
use anyhow::{anyhow, bail, Context, Result};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

const READ_BUF: usize = 8 * 1024;
const MAX_ERRORS_KEPT: usize = 20;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Resolved server address.
    pub addr: SocketAddr,
    /// The `ws://` URL.
    pub url: WsUrl,
    /// Ask for permessage-deflate.
    pub compress: bool,
    /// Number of channels; connection `i` subscribes to `i % channels`.
    pub channels: usize,
    /// Channel name prefix.
    pub prefix: String,
    /// Connect + handshake attempts per connection.
    pub attempts: u32,
    /// Timeout of one connect + handshake attempt.
    pub handshake_timeout: Duration,
}

/// Counters of the current measurement round.
pub struct Round {
    /// Ticks with `n >= lo` count; `u64::MAX` while not measuring.
    pub lo: u64,
    /// Receive times up to this (ns since epoch) are "in window".
    pub window_end_ns: u64,
    /// Counted deliveries.
    pub received: u64,
    /// Counted deliveries that arrived before `window_end_ns`.
    pub in_window: u64,
    /// Ticks from before the round (late stragglers).
    pub stale: u64,
    /// Latest-value replays (ignored).
    pub snapshots: u64,
    /// Ticks whose `n` was not above the connection's previous one.
    pub duplicates: u64,
    /// Messages that could not be understood.
    pub unparsed: u64,
    /// Frame bytes on the wire (headers included) of counted deliveries.
    pub wire_bytes: u64,
    /// Message bytes after inflating, of counted deliveries.
    pub message_bytes: u64,
    /// Counted deliveries that arrived compressed (RSV1).
    pub compressed: u64,
    /// Publish → receive latency of counted deliveries, ns.
    pub hist: Histogram,
}

impl Round {
    /// Not measuring.
    pub fn new() -> Round {
        Round {
            lo: u64::MAX,
            window_end_ns: 0,
            received: 0,
            in_window: 0,
            stale: 0,
            snapshots: 0,
            duplicates: 0,
            unparsed: 0,
            wire_bytes: 0,
            message_bytes: 0,
            compressed: 0,
            hist: Histogram::new(),
        }
    }

    /// Starts counting ticks with `n >= lo`.
    pub fn begin(&mut self, lo: u64, window_end_ns: u64) {
        self.received = 0;
        self.in_window = 0;
        self.stale = 0;
        self.snapshots = 0;
        self.duplicates = 0;
        self.unparsed = 0;
        self.wire_bytes = 0;
        self.message_bytes = 0;
        self.compressed = 0;
        self.hist.reset();
        self.lo = lo;
        self.window_end_ns = window_end_ns;
    }

    /// Stops counting (later ticks are stale).
    pub fn end(&mut self) {
        self.lo = u64::MAX;
    }
}

/// State shared by all connection tasks and the orchestrator.
pub struct Shared {
    /// Settings.
    pub cfg: ClientConfig,
    /// Connections whose subscribe was acknowledged.
    pub subscribed: Cell<usize>,
    /// Connections that gave up (connect, handshake or subscribe failed).
    pub failed: Cell<usize>,
    /// Subscribed connections that later ended.
    pub closed: Cell<usize>,
    /// Connections on which the server accepted permessage-deflate.
    pub deflate: Cell<usize>,
    /// Connect attempts that had to be retried.
    pub retries: Cell<u64>,
    /// Data messages of any kind received (for quiescence checks).
    pub messages: Cell<u64>,
    /// Subscribed connections per channel.
    pub subs_per_channel: RefCell<Vec<u64>>,
    /// First few error descriptions.
    pub errors: RefCell<Vec<String>>,
    /// Error-reply texts from the server (first few).
    pub server_errors: RefCell<Vec<String>>,
    probes: RefCell<Vec<bool>>,
    probe_channels: Cell<usize>,
    /// Current round counters.
    pub round: RefCell<Round>,
    inflater: RefCell<Inflater>,
}

impl Shared {
    /// Fresh state.
    pub fn new(cfg: ClientConfig) -> Rc<Shared> {
        let channels = cfg.channels;
        Rc::new(Shared {
            cfg,
            subscribed: Cell::new(0),
            failed: Cell::new(0),
            closed: Cell::new(0),
            deflate: Cell::new(0),
            retries: Cell::new(0),
            messages: Cell::new(0),
            subs_per_channel: RefCell::new(vec![0; channels]),
            errors: RefCell::new(Vec::new()),
            server_errors: RefCell::new(Vec::new()),
            probes: RefCell::new(vec![false; channels]),
            probe_channels: Cell::new(0),
            round: RefCell::new(Round::new()),
            inflater: RefCell::new(Inflater::new()),
        })
    }

    /// Compressed payloads inflated so far, and those served from the
    /// identical-payload cache.
    pub fn inflate_counts(&self) -> (u64, u64) {
        let inf = self.inflater.borrow();
        (inf.inflated, inf.cache_hits)
    }

    /// Channels on which at least one probe arrived.
    pub fn probe_channels(&self) -> usize {
        self.probe_channels.get()
    }

    /// Channels still waiting for a probe (first few).
    pub fn missing_probe_channels(&self, max: usize) -> Vec<usize> {
        self.probes
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, seen)| !**seen)
            .map(|(c, _)| c)
            .take(max)
            .collect()
    }

    fn note_error(&self, msg: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < MAX_ERRORS_KEPT {
            errors.push(msg);
        }
    }

    fn fail(&self, idx: usize, err: &anyhow::Error) {
        self.failed.set(self.failed.get() + 1);
        self.note_error(format!("connection {idx}: {err:#}"));
    }

    /// Handles one complete data message. Returns an error to drop the
    /// connection (only for failures before the subscription is acked).
    fn on_message(
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
                    self.round.borrow_mut().unparsed += 1;
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
                self.round.borrow_mut().unparsed += 1;
                return Ok(());
            }
        }
        if text.ends_with(b",\"snapshot\":true}") {
            self.round.borrow_mut().snapshots += 1;
            return Ok(());
        }
        let Some(tpos) = ws::find(text, b"\"t\":") else {
            if let Some(p) = ws::find(text, b"\"probe\":") {
                if let Some((c, _)) = parse_u64(&text[p + 8..]) {
                    self.mark_probe(c as usize);
                    return Ok(());
                }
            }
            self.round.borrow_mut().unparsed += 1;
            return Ok(());
        };
        let parsed = parse_u64(&text[tpos + 4..]).and_then(|(t, used)| {
            let rest = &text[tpos + 4 + used..];
            let npos = ws::find(rest, b"\"n\":")?;
            parse_u64(&rest[npos + 4..]).map(|(n, _)| (t, n))
        });
        let mut r = self.round.borrow_mut();
        let Some((t, n)) = parsed else {
            r.unparsed += 1;
            return Ok(());
        };
        if st.seen_tick && n <= st.last_n {
            r.duplicates += 1;
            return Ok(());
        }
        st.seen_tick = true;
        st.last_n = n;
        if n < r.lo {
            r.stale += 1;
            return Ok(());
        }
        r.received += 1;
        if now_ns <= r.window_end_ns {
            r.in_window += 1;
        }
        r.wire_bytes += wire_len as u64;
        r.message_bytes += text.len() as u64;
        if compressed {
            r.compressed += 1;
        }
        r.hist.record(now_ns.saturating_sub(t));
        Ok(())
    }

    fn mark_probe(&self, c: usize) {
        let mut probes = self.probes.borrow_mut();
        if let Some(seen) = probes.get_mut(c) {
            if !*seen {
                *seen = true;
                self.probe_channels.set(self.probe_channels.get() + 1);
            }
        }
    }
}

/// Parses leading ASCII digits; returns the value and digits consumed.
pub fn parse_u64(s: &[u8]) -> Option<(u64, usize)> {
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

/// Per-connection state touched by message handling.
pub struct ConnState {
    idx: usize,
    channel: usize,
    subscribed: bool,
    seen_tick: bool,
    last_n: u64,
    /// Held until the subscribe is acked, pacing concurrent handshakes.
    permit: Option<OwnedSemaphorePermit>,
}

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

enum End {
    Eof,
    Close,
}

/// Opens connection `idx`, subscribes, and reads until the server closes or
/// the runtime is dropped.
pub async fn connection(shared: Rc<Shared>, idx: usize, permit: OwnedSemaphorePermit) {
    let channel = idx % shared.cfg.channels.max(1);
    let st = ConnState {
        idx,
        channel,
        subscribed: false,
        seen_tick: false,
        last_n: 0,
        permit: Some(permit),
    };
    let mut conn = match establish(&shared, st).await {
        Ok(c) => c,
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

async fn establish(shared: &Shared, st: ConnState) -> Result<Conn> {
    let attempts = shared.cfg.attempts.max(1);
    let mut last = anyhow!("no attempt made");
    for attempt in 1..=attempts {
        match tokio::time::timeout(shared.cfg.handshake_timeout, handshake(&shared.cfg)).await {
            Ok(Ok((stream, buf, filled, deflate))) => {
                return Ok(Conn {
                    stream,
                    buf,
                    filled,
                    deflate,
                    frag: Vec::new(),
                    frag_compressed: false,
                    frag_active: false,
                    out: Vec::new(),
                    st,
                });
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = anyhow!("connect + handshake timed out"),
        }
        if attempt < attempts {
            shared.retries.set(shared.retries.get() + 1);
            let backoff = 100 * u64::from(attempt) + fastrand::u64(0..100);
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
    }
    Err(last.context(format!("after {attempts} attempts")))
}

async fn handshake(cfg: &ClientConfig) -> Result<(TcpStream, Vec<u8>, usize, bool)> {
    let mut stream = TcpStream::connect(cfg.addr)
        .await
        .with_context(|| format!("connecting to {}", cfg.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let key = ws::random_key();
    stream
        .write_all(&ws::build_request(&cfg.url, &key, cfg.compress))
        .await
        .context("sending handshake")?;
    let mut buf = vec![0u8; READ_BUF];
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            bail!("handshake response too large");
        }
        let n = stream
            .read(&mut buf[filled..])
            .await
            .context("reading handshake response")?;
        if n == 0 {
            bail!("server closed the connection during the handshake");
        }
        filled += n;
        if let Some(resp) = ws::parse_response(&buf[..filled], &key)? {
            buf.copy_within(resp.head_len..filled, 0);
            filled -= resp.head_len;
            if cfg.compress && !resp.deflate {
                bail!("server did not accept permessage-deflate");
            }
            return Ok((stream, buf, filled, resp.deflate));
        }
    }
}

impl Conn {
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

/// Opens `n` connections with at most `max_inflight` handshakes + subscribes
/// in flight, and waits until each is subscribed or has failed.
/// Progress goes to stderr. Errors if any connection failed or `timeout`
/// passes.
pub async fn open_all(
    shared: &Rc<Shared>,
    n: usize,
    max_inflight: usize,
    timeout: Duration,
) -> Result<()> {
    let sem = Arc::new(Semaphore::new(max_inflight.max(1)));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_report = started;
    let report = |shared: &Shared| {
        eprintln!(
            "  connections: {} subscribed, {} failed, {} retries ({:.1} s)",
            shared.subscribed.get(),
            shared.failed.get(),
            shared.retries.get(),
            started.elapsed().as_secs_f64()
        );
    };
    for i in 0..n {
        let permit = tokio::time::timeout_at(deadline, sem.clone().acquire_owned())
            .await
            .map_err(|_| anyhow!("timed out opening connections ({i} of {n} started)"))?
            .map_err(|_| anyhow!("semaphore closed"))?;
        tokio::task::spawn_local(connection(shared.clone(), i, permit));
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            report(shared);
        }
        if shared.failed.get() > 0 && shared.subscribed.get() == 0 && i >= max_inflight {
            // Nothing works at all: stop early instead of hammering.
            break;
        }
    }
    loop {
        let done = shared.subscribed.get() + shared.failed.get();
        if done >= n || (shared.failed.get() > 0 && shared.subscribed.get() == 0) {
            break;
        }
        if Instant::now() >= deadline {
            report(shared);
            bail!(
                "timed out after {:.0} s waiting for subscriptions: {} of {n} subscribed, {} failed",
                timeout.as_secs_f64(),
                shared.subscribed.get(),
                shared.failed.get()
            );
        }
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            report(shared);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report(shared);
    if shared.failed.get() > 0 {
        let errors = shared
            .errors
            .borrow()
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n    ");
        if shared.subscribed.get() == 0 {
            bail!(
                "no connection got subscribed (server unreachable or subscribe refused; stopped early); first errors:\n    {errors}"
            );
        }
        bail!(
            "{} of {n} connections failed (server unreachable or subscribe refused); first errors:\n    {errors}",
            shared.failed.get()
        );
    }
    Ok(())
}

/// Waits until no data message arrived for `quiet`, at most `max`.
pub async fn quiesce(shared: &Shared, quiet: Duration, max: Duration) -> bool {
    let start = Instant::now();
    let mut last = shared.messages.get();
    let mut last_change = Instant::now();
    while start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = shared.messages.get();
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if last_change.elapsed() >= quiet {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ConnState {
            idx: channel,
            channel,
            subscribed: false,
            seen_tick: false,
            last_n: 0,
            permit: None,
        }
    }

    fn tick(n: u64, t: u64) -> Vec<u8> {
        format!(
            "{{\"channel\":\"bench-3\",\"event\":\"tick\",\"data\":{{\"t\":{t},\"n\":{n},\"p\":\"AAPL b=1.2\"}},\"seq\":{n}}}"
        )
        .into_bytes()
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
        assert_eq!(sh.round.borrow().stale, 1);

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
            assert_eq!(r.received, 2);
            assert_eq!(r.in_window, 1);
            assert_eq!(r.duplicates, 1);
            assert_eq!(r.snapshots, 1);
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
        assert_eq!(sh.round.borrow().unparsed, 1);
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
        assert_eq!(r.received, 1);
        assert_eq!(r.compressed, 1);
        assert_eq!(r.message_bytes, msg.len() as u64);
        assert_eq!(r.hist.max(), 100);
    }

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
            assert_eq!(r.received, 3, "errors: {:?}", sh.errors.borrow());
            assert_eq!((r.unparsed, r.duplicates), (0, 0));
        });
    }
}
