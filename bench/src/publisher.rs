//! The ZeroMQ publisher, on its own OS thread with its own single-threaded
//! tokio runtime so that pacing never competes with the socket readers for a
//! scheduler slot (both threads still share the one core the tool is pinned
//! to; the kernel time-slices them).
//!
//! It binds a PUB socket and obeys [`Command`]s:
//!
//! * `Probe`: publish `[channel, "probe", {"probe":C}]` on every channel every
//!   50 ms until told to stop. This covers the slow-joiner window: the server
//!   forwards a ZeroMQ subscription only once its clients hold the channel.
//! * `Run`: publish `[channel, "tick", data]` at `rate` messages per second
//!   for `duration`, channel = `n % channels`, with `n` counting up from
//!   `start_n`. Pacing works against a deadline: every millisecond it sends
//!   however many messages are due by now (`floor(elapsed * rate)`), so
//!   timer jitter turns into small bursts, never into a lower rate.
//!
//! The `data` JSON is `{"t":<publish time, ns since the UNIX epoch>,"n":<n>,
//! "p":"<padding>"}`. The padding is made-up ticker text with varying digits
//! (`NVDA b=412.07 a=412.11 l=412.09 v=18342 c=+0.54%;...`), drawn from a pool
//! of 64 pre-generated strings, and cut so that the whole envelope the server
//! sends, `{"channel":"bench-17","event":"tick","data":<data>,"seq":N}`, is
//! about `size` bytes. It compresses like real market data does (mostly
//! repeated keys, random digits), not like a run of one letter.

use crate::stats::Histogram;
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use zeromq::{Socket as _, SocketSend as _, ZmqMessage};

/// Event name of measured messages.
pub const EVENT_TICK: &str = "tick";
/// Event name of slow-joiner probes.
pub const EVENT_PROBE: &str = "probe";

/// Bytes of the server envelope around `data`, besides the channel name and
/// the seq digits: `{"channel":"` + `","event":"` + `tick` + `","data":` +
/// `,"seq":` + `}`.
const ENVELOPE_FIXED: usize = 12 + 11 + 4 + 9 + 7 + 1;
/// Bytes of `data` besides the digits of n and the padding:
/// `{"t":` + 19 digits + `,"n":` + `,"p":"` + `"}`.
const DATA_FIXED: usize = 5 + 19 + 5 + 6 + 2;

const PAD_POOL: usize = 64;

/// Static publisher settings.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// ZeroMQ endpoint to bind, e.g. `tcp://127.0.0.1:5556`.
    pub bind: String,
    /// Number of channels.
    pub channels: usize,
    /// Channel name prefix; channel `c` is `{prefix}{c}`.
    pub prefix: String,
    /// Target size of the delivered envelope in bytes.
    pub size: usize,
}

/// Outcome of a `Run`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunReport {
    /// First `n` published.
    pub start_n: u64,
    /// One past the last `n` published.
    pub end_n: u64,
    /// Messages handed to the PUB socket.
    pub sent: u64,
    /// Messages the socket refused.
    pub send_errors: u64,
    /// Time from first to last send.
    pub elapsed: Duration,
    /// Largest backlog of due-but-unsent messages seen at a pacing tick.
    pub max_backlog: u64,
    /// How late the oldest due message was at a pacing tick: p99 and max, ns.
    /// Large values mean the publisher thread did not get the CPU in time
    /// (the messages then go out in a burst, stamped when actually sent).
    pub lag_p99_ns: u64,
    /// See `lag_p99_ns`.
    pub lag_max_ns: u64,
}

enum Command {
    Probe {
        stop: Arc<AtomicBool>,
        max: Duration,
    },
    Run {
        start_n: u64,
        rate: f64,
        duration: Duration,
        reply: oneshot::Sender<RunReport>,
    },
}

/// Handle to the publisher thread.
pub struct Publisher {
    tx: mpsc::UnboundedSender<Command>,
    probe_stop: Option<Arc<AtomicBool>>,
}

impl Publisher {
    /// Spawns the thread and waits (up to 10 s) until the PUB socket is bound.
    pub fn start(cfg: PublisherConfig) -> Result<Publisher> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = bound_tx.send(Err(anyhow!("publisher runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(publisher_main(cfg, rx, bound_tx));
            })
            .context("spawning publisher thread")?;
        bound_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("publisher did not bind within 10 s"))??;
        Ok(Publisher {
            tx,
            probe_stop: None,
        })
    }

    /// Starts probing all channels (until [`Publisher::stop_probe`] or `max`).
    pub fn start_probe(&mut self, max: Duration) -> Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        self.tx
            .send(Command::Probe {
                stop: stop.clone(),
                max,
            })
            .map_err(|_| anyhow!("publisher thread is gone"))?;
        self.probe_stop = Some(stop);
        Ok(())
    }

    /// Stops a running probe loop.
    pub fn stop_probe(&mut self) {
        if let Some(stop) = self.probe_stop.take() {
            stop.store(true, Ordering::Release);
        }
    }

    /// Publishes at `rate`/s for `duration`, numbering from `start_n`, and
    /// returns when done (bounded: duration + 30 s).
    pub async fn run(&mut self, start_n: u64, rate: f64, duration: Duration) -> Result<RunReport> {
        self.stop_probe();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Run {
                start_n,
                rate,
                duration,
                reply,
            })
            .map_err(|_| anyhow!("publisher thread is gone"))?;
        tokio::time::timeout(duration + Duration::from_secs(30), rx)
            .await
            .map_err(|_| anyhow!("publisher did not finish its run in time"))?
            .map_err(|_| anyhow!("publisher thread died during a run"))
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop_probe();
    }
}

async fn publisher_main(
    cfg: PublisherConfig,
    mut rx: mpsc::UnboundedReceiver<Command>,
    bound_tx: std::sync::mpsc::Sender<Result<()>>,
) {
    let mut socket = zeromq::PubSocket::new();
    if let Err(e) = socket.bind(&cfg.bind).await {
        let _ = bound_tx.send(Err(anyhow!("binding ZeroMQ PUB to {}: {e}", cfg.bind)));
        return;
    }
    let _ = bound_tx.send(Ok(()));
    let mut gen = MessageGen::new(&cfg);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Probe { stop, max } => {
                let start = Instant::now();
                while !stop.load(Ordering::Acquire) && start.elapsed() < max {
                    for c in 0..cfg.channels {
                        let _ = socket.send(gen.probe(c)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Command::Run {
                start_n,
                rate,
                duration,
                reply,
            } => {
                let report = run_paced(&mut socket, &mut gen, start_n, rate, duration).await;
                let _ = reply.send(report);
            }
        }
    }
}

async fn run_paced(
    socket: &mut zeromq::PubSocket,
    gen: &mut MessageGen,
    start_n: u64,
    rate: f64,
    duration: Duration,
) -> RunReport {
    let total = (rate * duration.as_secs_f64()).round().max(0.0) as u64;
    let hard_stop = duration + Duration::from_secs(20);
    let mut report = RunReport {
        start_n,
        end_n: start_n,
        ..RunReport::default()
    };
    let mut lag = Histogram::new();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let elapsed = start.elapsed();
        if elapsed > hard_stop {
            break;
        }
        // Message k (0-based) is due at k / rate seconds.
        let due = ((elapsed.as_secs_f64() * rate).floor() as u64 + 1).min(total);
        report.max_backlog = report.max_backlog.max(due.saturating_sub(sent));
        let oldest_due_s = sent as f64 / rate;
        lag.record(((elapsed.as_secs_f64() - oldest_due_s).max(0.0) * 1e9) as u64);
        while sent < due {
            let n = start_n + sent;
            if socket.send(gen.tick(n)).await.is_err() {
                report.send_errors += 1;
            }
            sent += 1;
        }
        if sent < total {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    report.elapsed = start.elapsed();
    report.lag_p99_ns = lag.percentile(0.99);
    report.lag_max_ns = lag.max();
    report.sent = sent;
    report.end_n = start_n + sent;
    report
}

/// Builds the multipart messages.
pub struct MessageGen {
    channels: Vec<Bytes>,
    tick: Bytes,
    probe: Bytes,
    pads: Vec<Vec<u8>>,
    size: usize,
    n_channels: u64,
}

impl MessageGen {
    /// Prepares channel names and the padding pool.
    pub fn new(cfg: &PublisherConfig) -> MessageGen {
        let mut rng = fastrand::Rng::with_seed(0x7075_7368_666c_6565);
        let pads = (0..PAD_POOL)
            .map(|_| ticker_text(&mut rng, cfg.size + 64))
            .collect();
        MessageGen {
            channels: (0..cfg.channels)
                .map(|c| Bytes::from(format!("{}{c}", cfg.prefix)))
                .collect(),
            tick: Bytes::from_static(EVENT_TICK.as_bytes()),
            probe: Bytes::from_static(EVENT_PROBE.as_bytes()),
            pads,
            size: cfg.size,
            n_channels: cfg.channels.max(1) as u64,
        }
    }

    /// The `data` JSON for publish index `n` at time `t_ns`.
    pub fn data(&self, n: u64, t_ns: u64) -> Vec<u8> {
        let c = (n % self.n_channels) as usize;
        let name_len = self.channels.get(c).map_or(0, Bytes::len);
        let seq_digits = digits(n / self.n_channels + 1);
        let overhead = ENVELOPE_FIXED + name_len + seq_digits + DATA_FIXED + digits(n);
        let pad_len = self.size.saturating_sub(overhead);
        let pad = &self.pads[(n % PAD_POOL as u64) as usize];
        let pad = &pad[..pad_len.min(pad.len())];
        let mut data = Vec::with_capacity(DATA_FIXED + 20 + pad.len());
        // Writing into a Vec cannot fail.
        let _ = write!(data, "{{\"t\":{t_ns},\"n\":{n},\"p\":\"");
        data.extend_from_slice(pad);
        data.extend_from_slice(b"\"}");
        data
    }

    /// The multipart message for publish index `n`, stamped now.
    pub fn tick(&mut self, n: u64) -> ZmqMessage {
        let c = (n % self.n_channels) as usize;
        let data = self.data(n, now_ns());
        multipart(
            self.channels[c].clone(),
            self.tick.clone(),
            Bytes::from(data),
        )
    }

    /// A probe for channel `c`.
    pub fn probe(&self, c: usize) -> ZmqMessage {
        multipart(
            self.channels[c].clone(),
            self.probe.clone(),
            Bytes::from(format!("{{\"probe\":{c}}}")),
        )
    }
}

fn multipart(channel: Bytes, event: Bytes, data: Bytes) -> ZmqMessage {
    let mut msg = ZmqMessage::from(channel);
    msg.push_back(event);
    msg.push_back(data);
    msg
}

/// Nanoseconds since the UNIX epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn digits(mut v: u64) -> usize {
    let mut d = 1;
    while v >= 10 {
        v /= 10;
        d += 1;
    }
    d
}

/// Made-up ticker text of at least `len` bytes: no `"` or `\`, so any prefix
/// is a valid JSON string body.
fn ticker_text(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    const SYMBOLS: [&str; 16] = [
        "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "UNH",
        "AVGO", "LLY", "COST", "ORCL",
    ];
    let mut out = Vec::with_capacity(len + 80);
    while out.len() < len {
        let sym = SYMBOLS[rng.usize(..SYMBOLS.len())];
        let whole = rng.u32(10..2000);
        let cents = rng.u32(0..100);
        let spread = rng.u32(1..30);
        let vol = rng.u32(100..500_000);
        let chg = rng.i32(-999..1000);
        let _ = write!(
            out,
            "{sym} b={whole}.{cents:02} a={whole}.{ask:02} l={whole}.{last:02} v={vol} c={sign}{cw}.{cf:02}%;",
            ask = (cents + spread) % 100,
            last = (cents + spread / 2) % 100,
            sign = if chg < 0 { '-' } else { '+' },
            cw = chg.unsigned_abs() / 100,
            cf = chg.unsigned_abs() % 100,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(size: usize, channels: usize) -> MessageGen {
        MessageGen::new(&PublisherConfig {
            bind: String::new(),
            channels,
            prefix: "bench-".into(),
            size,
        })
    }

    fn envelope(g: &MessageGen, n: u64) -> String {
        let c = n % g.n_channels;
        let data = String::from_utf8(g.data(n, 1_732_240_000_123_456_789)).expect("utf8");
        format!(
            "{{\"channel\":\"bench-{c}\",\"event\":\"tick\",\"data\":{data},\"seq\":{}}}",
            n / g.n_channels + 1
        )
    }

    #[test]
    fn data_is_json_and_sized() {
        for size in [100usize, 1024, 4096] {
            let g = gen(size, 100);
            for n in [0u64, 7, 12_345, 999_999] {
                let env = envelope(&g, n);
                let v: serde_json::Value = serde_json::from_str(&env).expect("valid JSON");
                assert_eq!(v["data"]["n"], n);
                assert_eq!(v["data"]["t"], 1_732_240_000_123_456_789u64);
                assert_eq!(env.len(), size, "size {size} n {n}: {env}");
            }
        }
    }

    #[test]
    fn tiny_size_still_valid() {
        let g = gen(10, 3);
        let env = envelope(&g, 5);
        serde_json::from_str::<serde_json::Value>(&env).expect("valid JSON");
    }

    #[test]
    fn padding_varies_and_is_string_safe() {
        let g = gen(1024, 10);
        assert!(g
            .pads
            .iter()
            .all(|p| !p.contains(&b'"') && !p.contains(&b'\\')));
        assert_ne!(g.pads[0], g.pads[1]);
        let distinct: std::collections::HashSet<u8> = g.pads[0].iter().copied().collect();
        assert!(distinct.len() > 20);
    }

    #[test]
    fn multipart_frames() {
        let mut g = gen(100, 4);
        let m = g.tick(6);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(0).map(|b| &b[..]), Some(&b"bench-2"[..]));
        assert_eq!(m.get(1).map(|b| &b[..]), Some(&b"tick"[..]));
        let p = g.probe(3);
        assert_eq!(p.get(1).map(|b| &b[..]), Some(&b"probe"[..]));
        assert_eq!(p.get(2).map(|b| &b[..]), Some(&b"{\"probe\":3}"[..]));
    }

    #[test]
    fn digit_count() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u64::MAX), 20);
    }
}
