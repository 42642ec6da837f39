//! `relay-hop`: what one `pushfleet-relay` adds between a publisher and an edge.
//!
//! Everything runs in this one process, so send and receive times come from the
//! same monotonic clock (an [`Instant`] taken at start; stamps are nanoseconds
//! since it) and need no clock sync.
//!
//! **Latency** (`--mode latency`): a publisher thread (named `publisher`) uses
//! the project's own [`Publisher`] (one libzmq PUSH socket) and paces by
//! deadline: every tick (`--tick-us`, default [`PACE_TICK`]) it sends every
//! message that is due by then,
//! round-robin over the channels. Each message's data is JSON text
//! `{"n":N,"t":T,"p":"xx…"}`: `n` a counter, `t` the send time, `p` padding
//! up to `--size` bytes. A sink thread reads with a libzmq socket and records
//! receive time − `t` in a [`Histogram`] (messages of the first `--warmup`
//! seconds are counted but not timed). Losses are counters never seen,
//! duplicates counters seen twice. The round runs twice at the same rate and
//! size:
//! * *direct*: publisher PUSH → sink PULL bound by this tool: the same libzmq
//!   TCP hop with nothing in between;
//! * *relay*: publisher PUSH → relay PULL … relay XPUB → sink SUB subscribed to
//!   every channel (and the relay's `/stats` showing them held before the
//!   first publish). The sink also checks that every message carries the
//!   relay's 4th frame (per-channel sequence number) and counts sequence gaps
//!   (copies the relay dropped for this subscriber).
//!
//! The difference of the two percentiles is reported as what the relay adds.
//! Both rounds share the tool's core: its I/O threads, the publisher and the
//! sink, so the subtraction also cancels most of the tool's own cost.
//!
//! **Throughput** (`--mode throughput`): `--publishers` threads publish
//! unpaced (a full queue blocks for up to [`THROUGHPUT_SEND_TIMEOUT`], then
//! counts as a stall and is retried) for `--warmup` + `--duration` seconds;
//! the sink only counts. Over the `--duration` window after the warm-up the
//! tool reads the relay's `/stats` (`received.zmq`, `forwarded`, drops) and
//! CPU time from `/proc` (the relay's per thread with `--relay-pid`, and its
//! own), then waits for the queues to drain and reports totals. The relay
//! counts a message `forwarded` when its XPUB socket takes it; if the sink's
//! queue in the relay (`--edge-queue`) is full, libzmq silently drops the
//! sink's copy, which shows here as forwarded − received and as sequence gaps.
//!
//! Every round also reports CPU: the relay's and this tool's, per thread, from
//! `/proc/PID/task/*/stat`, and each core's busy share from `/proc/stat` (wall time
//! minus idle and steal). What the cores did beyond the two processes shows as
//! "elsewhere" (other processes, and kernel work such as loopback TCP softirqs
//! charged to neither): a run where it is large shared the machine.
//!
//! Progress goes to stderr, the report to stdout; with `--json` stdout is one
//! JSON object and the text report goes to stderr.

use crate::procfs::{self, Proc};
use crate::stats::Histogram;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use pushfleet_server::publisher::{Publisher, PublisherError, MAX_DATA};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How often the paced publisher wakes up to send what is due (default).
pub const PACE_TICK: Duration = Duration::from_millis(1);
/// How long an unpaced publish may block on a full queue before it counts as a stall.
pub const THROUGHPUT_SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a paced publish may block on a full queue before it is given up.
const LATENCY_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the sink blocks in `recv` before looking at the stop flag.
const SINK_POLL_MS: i32 = 50;
/// Time allowed for connections and for the relay to show subscriptions.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest counter the sink tracks individually (a 32 MiB bitmap).
const MAX_TRACKED: u64 = 1 << 28;
/// Longest drain after an unpaced round, whatever `--grace` says.
const MAX_DRAIN: Duration = Duration::from_secs(60);
/// Event name of every publish.
const EVENT: &str = "tick";

/// What to measure.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Paced latency, direct and through the relay.
    Latency,
    /// Unpaced forwarding throughput through the relay.
    Throughput,
    /// Latency, then throughput.
    Both,
}

/// Flags of `relay-hop`.
#[derive(Args, Debug)]
pub struct RelayHopArgs {
    /// The relay's publish endpoint (its PULL socket; the publisher PUSHes to it).
    #[arg(long, default_value = "tcp://127.0.0.1:5560")]
    pub relay_publish: String,
    /// The relay's edge endpoint (its XPUB socket; the sink's SUB connects to it).
    #[arg(long, default_value = "tcp://127.0.0.1:5561")]
    pub relay_edges: String,
    /// The relay's HTTP listener (`host:port`), for `GET /stats`.
    #[arg(long, default_value = "127.0.0.1:8070")]
    pub relay_http: String,
    /// PID of the relay, for its CPU time (per thread) from /proc.
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Publishes per second of the latency rounds, over all channels.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Microseconds between the paced publisher's wake-ups: each sends a burst of
    /// rate × tick messages.
    #[arg(long, default_value_t = PACE_TICK.as_micros() as u64)]
    pub tick_us: u64,
    /// Seconds measured per round (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds published before measuring (latency: not timed; throughput: not counted in rates).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds to wait for stragglers once publishing stops (throughput: since
    /// the last progress).
    #[arg(long, default_value_t = 2.0)]
    pub grace: f64,
    /// Channels, published round-robin; the sink subscribes to all of them.
    #[arg(long, default_value_t = 100)]
    pub channels: usize,
    /// Bytes of each publish's data frame (JSON text, padded; at least ~40).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publisher threads of the throughput round (one PUSH connection each).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Where the direct round's sink binds its PULL socket (`*`: any free port).
    #[arg(long, default_value = "tcp://127.0.0.1:*")]
    pub direct_bind: String,
    /// Channel names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "relayhop-")]
    pub channel_prefix: String,
    /// Receive queue of the sink's socket, in messages (libzmq RCVHWM).
    #[arg(long, default_value_t = 100_000)]
    pub sink_queue: i32,
    /// Print one JSON object on stdout (the text report then goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(args: RelayHopArgs) -> Result<()> {
    let cfg = Config::from_args(&args)?;
    let mut text = String::new();
    let mut out = serde_json::Map::new();
    out.insert("config".into(), cfg.to_json());
    let _ = writeln!(text, "{}", cfg.describe());
    if matches!(cfg.mode, Mode::Latency | Mode::Both) {
        let direct = latency_round(&cfg, Target::Direct)?;
        let relay = latency_round(&cfg, Target::Relay)?;
        report_latency(&cfg, &direct, &relay, &mut text, &mut out);
    }
    if matches!(cfg.mode, Mode::Throughput | Mode::Both) {
        let t = throughput_round(&cfg)?;
        report_throughput(&cfg, &t, &mut text, &mut out);
    }
    if cfg.json {
        eprint!("{text}");
        println!("{}", Value::Object(out));
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Validated settings.
#[derive(Debug, Clone)]
struct Config {
    relay_publish: String,
    relay_edges: String,
    relay_http: String,
    relay_pid: Option<u32>,
    mode: Mode,
    rate: f64,
    tick: Duration,
    duration: Duration,
    warmup: Duration,
    grace: Duration,
    channels: Vec<String>,
    prefix: String,
    size: usize,
    publishers: usize,
    direct_bind: String,
    sink_queue: i32,
    json: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

impl Config {
    fn from_args(a: &RelayHopArgs) -> Result<Self> {
        if !(a.rate.is_finite() && a.rate > 0.0) {
            bail!("--rate must be a positive number");
        }
        if a.channels == 0 {
            bail!("--channels must be at least 1");
        }
        if !(1..=16).contains(&a.publishers) {
            bail!("--publishers must be 1 to 16");
        }
        if a.size > MAX_DATA {
            bail!(
                "--size {} exceeds the publish limit of {MAX_DATA} bytes",
                a.size
            );
        }
        if a.sink_queue < 0 {
            bail!("--sink-queue must be 0 (unbounded) or more");
        }
        if a.tick_us == 0 || a.tick_us > 1_000_000 {
            bail!("--tick-us must be 1 to 1000000");
        }
        let duration = secs("duration", a.duration)?;
        if duration.is_zero() {
            bail!("--duration must be more than 0");
        }
        let channels: Vec<String> = (0..a.channels)
            .map(|i| format!("{}{i}", a.channel_prefix))
            .collect();
        for c in &channels {
            pushfleet_protocol::channel::validate_channel(c)
                .with_context(|| format!("channel name {c:?} (from --channel-prefix)"))?;
        }
        let relay_http = a
            .relay_http
            .strip_prefix("http://")
            .unwrap_or(&a.relay_http)
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            relay_publish: a.relay_publish.clone(),
            relay_edges: a.relay_edges.clone(),
            relay_http,
            relay_pid: a.relay_pid,
            mode: a.mode,
            rate: a.rate,
            tick: Duration::from_micros(a.tick_us),
            duration,
            warmup: secs("warmup", a.warmup)?,
            grace: secs("grace", a.grace)?,
            channels,
            prefix: a.channel_prefix.clone(),
            size: a.size,
            publishers: a.publishers,
            direct_bind: a.direct_bind.clone(),
            sink_queue: a.sink_queue,
            json: a.json,
        })
    }

    fn describe(&self) -> String {
        format!(
            "relay-hop: relay publish {} edges {} http {}; {} channels, {}-byte data, \
             {:.0} s measured after {:.0} s warm-up",
            self.relay_publish,
            self.relay_edges,
            self.relay_http,
            self.channels.len(),
            self.size,
            self.duration.as_secs_f64(),
            self.warmup.as_secs_f64(),
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "relay_publish": self.relay_publish,
            "relay_edges": self.relay_edges,
            "relay_http": self.relay_http,
            "relay_pid": self.relay_pid,
            "rate": self.rate,
            "tick_us": self.tick.as_micros() as u64,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "channels": self.channels.len(),
            "size": self.size,
            "publishers": self.publishers,
            "sink_queue": self.sink_queue,
        })
    }
}

// ---------------------------------------------------------------------------
// Message data: {"n":N,"t":T,"p":"xx…"}

/// Writes the data of message `n` sent at `t` ns into `buf`, padded to `size` bytes
/// (or left at its natural length when that is already longer).
fn write_data(buf: &mut String, n: u64, t: u64, size: usize) {
    buf.clear();
    let _ = write!(buf, "{{\"n\":{n},\"t\":{t},\"p\":\"");
    let pad = size.saturating_sub(buf.len() + 2);
    buf.extend(std::iter::repeat_n('x', pad));
    buf.push_str("\"}");
}

/// Reads `(n, t)` back from data written by [`write_data`].
fn parse_data(data: &[u8]) -> Option<(u64, u64)> {
    let rest = data.strip_prefix(b"{\"n\":")?;
    let (n, rest) = leading_u64(rest)?;
    let rest = rest.strip_prefix(b",\"t\":")?;
    let (t, _) = leading_u64(rest)?;
    Some((n, t))
}

/// The decimal number at the start of `s` and what follows it.
fn leading_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let mut v = 0u64;
    for &b in &s[..digits] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[digits..]))
}

/// A whole decimal number (the relay's sequence frame, a channel's index).
fn parse_u64(s: &[u8]) -> Option<u64> {
    match leading_u64(s)? {
        (v, []) => Some(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The relay's /stats over a plain HTTP/1.1 GET.

/// The `/stats` fields this tool uses.
#[derive(Debug, Clone, Copy, Default)]
struct RelayStats {
    received_zmq: u64,
    forwarded: u64,
    no_subscribers: u64,
    dropped: u64,
    channels: u64,
    edges: u64,
}

impl RelayStats {
    fn from_json(v: &Value) -> Result<Self> {
        let field = |ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("/stats has no number at {ptr}"))
        };
        let dropped = v
            .get("dropped")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("/stats has no dropped object"))?
            .values()
            .filter_map(Value::as_u64)
            .sum();
        Ok(Self {
            received_zmq: field("/received/zmq")?,
            forwarded: field("/forwarded")?,
            no_subscribers: field("/no_subscribers")?,
            dropped,
            channels: field("/channels")?,
            edges: field("/edges")?,
        })
    }

    /// Counter increases from `before` to `self` (gauges are `self`'s).
    fn since(&self, before: &RelayStats) -> RelayStats {
        RelayStats {
            received_zmq: self.received_zmq.saturating_sub(before.received_zmq),
            forwarded: self.forwarded.saturating_sub(before.forwarded),
            no_subscribers: self.no_subscribers.saturating_sub(before.no_subscribers),
            dropped: self.dropped.saturating_sub(before.dropped),
            channels: self.channels,
            edges: self.edges,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "received_zmq": self.received_zmq,
            "forwarded": self.forwarded,
            "no_subscribers": self.no_subscribers,
            "dropped": self.dropped,
        })
    }
}

fn get_stats(addr: &str) -> Result<RelayStats> {
    let body = http_get(addr, "/stats").with_context(|| format!("GET http://{addr}/stats"))?;
    let v: Value = serde_json::from_slice(&body).context("parsing /stats")?;
    RelayStats::from_json(&v)
}

/// One `GET` with `Connection: close`; the body of a 200 response.
fn http_get(addr: &str, path: &str) -> Result<Vec<u8>> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_http_response(&response)
}

/// The body of a complete HTTP/1.1 200 response (plain or chunked).
fn parse_http_response(response: &[u8]) -> Result<Vec<u8>> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP status line {status:?}");
    }
    if !head.contains("transfer-encoding: chunked") {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk header"))?;
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| anyhow!("truncated chunk"))?;
    }
}

/// Polls `/stats` until `ok` holds; the last reading.
fn wait_stats(cfg: &Config, what: &str, ok: impl Fn(&RelayStats) -> bool) -> Result<RelayStats> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let s = get_stats(&cfg.relay_http)?;
        if ok(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not reached within {SETUP_TIMEOUT:?} (relay shows {} channels, {} edges)",
                s.channels,
                s.edges
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// CPU time per thread from /proc.

/// CPU ticks of every thread of a process, by thread id.
#[derive(Debug, Clone, Default)]
struct ThreadTicks {
    threads: Vec<(u32, String, u64)>,
    total: u64,
}

impl ThreadTicks {
    fn read(p: Proc) -> Result<Self> {
        let dir = match p {
            Proc::SelfProc => "/proc/self/task".to_owned(),
            Proc::Pid(pid) => format!("/proc/{pid}/task"),
        };
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let path = entry?.path();
            let Some(tid) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // A thread may exit between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
                continue;
            };
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            threads.push((
                tid,
                name.trim().to_owned(),
                procfs::parse_stat_cpu_ticks(&stat)?,
            ));
        }
        Ok(Self {
            threads,
            total: procfs::cpu_ticks(p)?,
        })
    }

    /// Per-thread-name tick increases since `before`, busiest first, and the total.
    fn since(&self, before: &ThreadTicks) -> (Vec<(String, u64)>, u64) {
        let mut by_name: Vec<(String, u64)> = Vec::new();
        for (tid, name, ticks) in &self.threads {
            let old = before
                .threads
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0, |(_, _, v)| *v);
            let delta = ticks.saturating_sub(old);
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => *v += delta,
                None => by_name.push((name.clone(), delta)),
            }
        }
        by_name.retain(|(_, v)| *v > 0);
        by_name.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        (by_name, self.total.saturating_sub(before.total))
    }
}

/// CPU ticks the calling thread has used so far (0 if /proc cannot tell).
fn own_thread_ticks() -> u64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| procfs::parse_stat_cpu_ticks(&s).ok())
        .unwrap_or(0)
}

/// CPU use of both processes over a window.
#[derive(Debug, Clone, Default)]
struct CpuUse {
    /// Percent of one core, total and per thread name.
    relay: Option<(f64, Vec<(String, f64)>)>,
    tool: (f64, Vec<(String, f64)>),
    /// Busy percent of each core (`/proc/stat`), whoever used it.
    cores: Vec<(String, f64)>,
    /// Steal percent (time the hypervisor ran something else), summed over cores.
    steal: f64,
}

impl CpuUse {
    /// Busy time of all cores not charged to the relay or this tool, in percent
    /// of one core: other processes, and kernel work (softirq) not charged to either.
    fn elsewhere(&self) -> f64 {
        let all: f64 = self.cores.iter().map(|(_, p)| p).sum();
        let ours = self.tool.0 + self.relay.as_ref().map_or(0.0, |r| r.0);
        (all - ours).max(0.0)
    }
}

/// Ticks of one core from `/proc/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Only idle (with iowait) and steal are used: with a tickless kernel they are
/// measured exactly, while user and system time are sampled at the timer tick,
/// which misses work that runs between ticks (like this tool's 1 ms bursts).
/// Busy time is therefore wall time minus idle minus steal.
struct CoreTicks {
    name: String,
    /// idle + iowait.
    idle: u64,
    steal: u64,
}

/// Every `cpuN` line of `/proc/stat`.
fn core_ticks() -> Vec<CoreTicks> {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    parse_core_ticks(&stat)
}

fn parse_core_ticks(stat: &str) -> Vec<CoreTicks> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_owned();
            // user nice system idle iowait irq softirq steal (guest is inside user).
            let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if v.len() < 8 {
                return None;
            }
            Some(CoreTicks {
                name,
                idle: v[3] + v[4],
                steal: v[7],
            })
        })
        .collect()
}

struct CpuProbe {
    relay: Option<ThreadTicks>,
    tool: ThreadTicks,
    cores: Vec<CoreTicks>,
    at: Instant,
}

impl CpuProbe {
    fn start(cfg: &Config) -> Result<Self> {
        Ok(Self {
            relay: cfg
                .relay_pid
                .map(|pid| ThreadTicks::read(Proc::Pid(pid)))
                .transpose()?,
            tool: ThreadTicks::read(Proc::SelfProc)?,
            cores: core_ticks(),
            at: Instant::now(),
        })
    }

    /// CPU use since [`CpuProbe::start`]. `tool_threads`: the tool's own threads'
    /// ticks as they measured themselves (for threads that ended before now; the
    /// rest of the tool's time shows as "other"); `None`: read them from /proc now.
    fn finish(self, cfg: &Config, tool_threads: Option<Vec<(String, u64)>>) -> Result<CpuUse> {
        let now = Self::start(cfg)?;
        let secs = now.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let hz = procfs::clock_ticks_per_sec().0 as f64;
        let pct = |t: u64| t as f64 / hz / secs * 100.0;
        let conv = |(threads, total): (Vec<(String, u64)>, u64)| {
            (
                pct(total),
                threads.into_iter().map(|(n, t)| (n, pct(t))).collect(),
            )
        };
        Ok(CpuUse {
            relay: match (now.relay, self.relay) {
                (Some(n), Some(b)) => Some(conv(n.since(&b))),
                _ => None,
            },
            tool: match tool_threads {
                Some(mut threads) => {
                    let total = now.tool.total.saturating_sub(self.tool.total);
                    let own: u64 = threads.iter().map(|(_, t)| t).sum();
                    threads.push((
                        "other (libzmq I/O, main)".to_owned(),
                        total.saturating_sub(own),
                    ));
                    conv((threads, total))
                }
                None => conv(now.tool.since(&self.tool)),
            },
            cores: now
                .cores
                .iter()
                .filter_map(|c| {
                    let c0 = self.cores.iter().find(|c0| c0.name == c.name)?;
                    let not_busy = (c.idle + c.steal).saturating_sub(c0.idle + c0.steal);
                    Some((c.name.clone(), (100.0 - pct(not_busy)).clamp(0.0, 100.0)))
                })
                .collect(),
            steal: now
                .cores
                .iter()
                .filter_map(|c| {
                    let c0 = self.cores.iter().find(|c0| c0.name == c.name)?;
                    Some(pct(c.steal.saturating_sub(c0.steal)))
                })
                .sum(),
        })
    }
}

fn cpu_json(c: &CpuUse) -> Value {
    let part = |(total, threads): &(f64, Vec<(String, f64)>)| {
        let t: serde_json::Map<String, Value> = threads
            .iter()
            .map(|(n, p)| (n.clone(), json!(round1(*p))))
            .collect();
        json!({ "percent": round1(*total), "threads": t })
    };
    let cores: serde_json::Map<String, Value> = c
        .cores
        .iter()
        .map(|(n, p)| (n.clone(), json!(round1(*p))))
        .collect();
    json!({
        "relay": c.relay.as_ref().map(part),
        "tool": part(&c.tool),
        "cores_busy": cores,
        "elsewhere_percent": round1(c.elsewhere()),
        "steal_percent": round1(c.steal),
    })
}

fn cpu_text(text: &mut String, c: &CpuUse) {
    let fmt = |(total, threads): &(f64, Vec<(String, f64)>)| {
        let parts: Vec<String> = threads
            .iter()
            .filter(|(_, p)| *p >= 0.5)
            .map(|(n, p)| format!("{n} {p:.0}%"))
            .collect();
        if parts.is_empty() {
            format!("{total:.0}% of a core")
        } else {
            format!("{total:.0}% of a core ({})", parts.join(", "))
        }
    };
    match &c.relay {
        Some(r) => {
            let _ = writeln!(text, "  relay CPU      {}", fmt(r));
        }
        None => {
            let _ = writeln!(text, "  relay CPU      n/a (no --relay-pid)");
        }
    }
    let _ = writeln!(text, "  tool CPU       {}", fmt(&c.tool));
    let cores: Vec<String> = c
        .cores
        .iter()
        .map(|(n, p)| format!("{n} {p:.0}%"))
        .collect();
    let _ = writeln!(
        text,
        "  cores busy     {}; elsewhere (other processes, uncharged kernel work) {:.0}% of a core; \
         steal {:.1}%",
        cores.join(", "),
        c.elsewhere(),
        c.steal
    );
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------
// The sink.

/// Where the sink reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A PULL socket this tool binds; the publisher connects straight to it.
    Direct,
    /// A SUB socket on the relay's edge endpoint.
    Relay,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Relay => "relay",
        }
    }
}

/// Counters shared by the controller, the publishers and the sink.
struct Shared {
    base: Instant,
    /// Messages sent, summed over publishers (updated as they go).
    sent: AtomicU64,
    /// Messages the sink received.
    received: AtomicU64,
    /// Relay sequence numbers the sink found missing (copies dropped for it).
    seq_gaps: AtomicU64,
    /// Publishers stop (unpaced mode).
    stop_publishing: AtomicBool,
    /// The sink stops.
    stop_sink: AtomicBool,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            stop_publishing: AtomicBool::new(false),
            stop_sink: AtomicBool::new(false),
        })
    }

    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

/// Tells every thread of a round to stop when dropped, so that an early return
/// (an error) inside a thread scope cannot leave the scope waiting forever.
struct StopOnDrop<'a>(&'a Shared);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop_publishing.store(true, Relaxed);
        self.0.stop_sink.store(true, Relaxed);
    }
}

/// Counters seen once each, in a growable bitmap.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    unique: u64,
}

impl Seen {
    /// `Some(true)` if `n` is new, `Some(false)` if seen before, `None` if too large.
    fn insert(&mut self, n: u64) -> Option<bool> {
        if n >= MAX_TRACKED {
            return None;
        }
        let (word, bit) = ((n / 64) as usize, 1u64 << (n % 64));
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let fresh = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.unique += u64::from(fresh);
        Some(fresh)
    }
}

/// What the sink saw.
#[derive(Default)]
struct SinkReport {
    received: u64,
    unique: u64,
    duplicates: u64,
    untracked: u64,
    bad_data: u64,
    /// Messages without the relay's 4th frame (relay target only).
    missing_seq: u64,
    /// Sequence numbers skipped within a channel (relay target only).
    seq_gaps: u64,
    /// Sequence numbers that did not move forward.
    seq_backwards: u64,
    /// Messages on a channel name this tool does not publish.
    foreign: u64,
    latency: Option<Histogram>,
    /// CPU ticks of the sink thread.
    cpu_ticks: u64,
}

struct Sink {
    socket: zmq::Socket,
    target: Target,
    prefix: Vec<u8>,
    channels: usize,
    /// Counters below this are received but not timed.
    timed_from: u64,
    record_latency: bool,
}

impl Sink {
    fn run(self, shared: &Shared) -> Result<SinkReport> {
        let ticks0 = own_thread_ticks();
        self.socket.set_rcvtimeo(SINK_POLL_MS)?;
        let mut frames: [zmq::Message; 5] = std::array::from_fn(|_| zmq::Message::new());
        let mut report = SinkReport {
            latency: self.record_latency.then(Histogram::new),
            ..SinkReport::default()
        };
        let mut seen = Seen::default();
        let mut last_seq = vec![0u64; self.channels];
        while !shared.stop_sink.load(Relaxed) {
            let count = match recv_message(&self.socket, &mut frames) {
                Ok(Some(count)) => count,
                Ok(None) => continue,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e).context("sink recv"),
            };
            let now = shared.now_ns();
            report.received += 1;
            shared.received.store(report.received, Relaxed);
            if count < 3 {
                report.bad_data += 1;
                continue;
            }
            let Some((n, t)) = parse_data(&frames[2]) else {
                report.bad_data += 1;
                continue;
            };
            match seen.insert(n) {
                Some(true) => {
                    if n >= self.timed_from {
                        if let Some(h) = report.latency.as_mut() {
                            h.record(now.saturating_sub(t));
                        }
                    }
                }
                Some(false) => report.duplicates += 1,
                None => report.untracked += 1,
            }
            if self.target == Target::Relay {
                let gaps = report.seq_gaps;
                self.check_seq(&frames, count, &mut last_seq, &mut report);
                if report.seq_gaps != gaps {
                    shared.seq_gaps.store(report.seq_gaps, Relaxed);
                }
            }
        }
        report.unique = seen.unique;
        report.cpu_ticks = own_thread_ticks().saturating_sub(ticks0);
        Ok(report)
    }

    /// Checks the relay's sequence frame against the channel's previous one.
    fn check_seq(
        &self,
        frames: &[zmq::Message; 5],
        count: usize,
        last_seq: &mut [u64],
        report: &mut SinkReport,
    ) {
        let channel = frames[0]
            .strip_prefix(self.prefix.as_slice())
            .and_then(parse_u64)
            .filter(|&i| (i as usize) < self.channels);
        let Some(channel) = channel else {
            report.foreign += 1;
            return;
        };
        if count != 4 {
            report.missing_seq += 1;
            return;
        }
        let Some(seq) = parse_u64(&frames[3]) else {
            report.missing_seq += 1;
            return;
        };
        let last = &mut last_seq[channel as usize];
        // The first number seen on a channel is taken as is: the relay may have
        // numbered it before this sink subscribed.
        if *last != 0 {
            if seq > *last + 1 {
                report.seq_gaps += seq - *last - 1;
            } else if seq <= *last {
                report.seq_backwards += 1;
            }
        }
        *last = seq;
    }
}

/// Reads one multipart message: `None` on timeout, else its frame count
/// (frames past the 4th are read into the last slot and dropped).
fn recv_message(
    socket: &zmq::Socket,
    frames: &mut [zmq::Message; 5],
) -> Result<Option<usize>, zmq::Error> {
    match socket.recv(&mut frames[0], 0) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut count = 1;
    let mut more = frames[0].get_more();
    while more {
        let slot = count.min(4);
        // The rest of a multipart message arrives with its first frame.
        socket.recv(&mut frames[slot], 0)?;
        more = frames[slot].get_more();
        count += 1;
    }
    Ok(Some(count))
}

/// The sink's socket for `target`, subscribed or bound; and the endpoint the
/// publisher must connect to.
fn open_sink(cfg: &Config, ctx: &zmq::Context, target: Target) -> Result<(zmq::Socket, String)> {
    match target {
        Target::Direct => {
            let s = ctx.socket(zmq::PULL)?;
            s.set_rcvhwm(cfg.sink_queue)?;
            s.set_linger(0)?;
            s.bind(&cfg.direct_bind)
                .with_context(|| format!("binding {}", cfg.direct_bind))?;
            let endpoint = s
                .get_last_endpoint()?
                .map_err(|_| anyhow!("the bound endpoint is not UTF-8"))?;
            Ok((s, endpoint))
        }
        Target::Relay => {
            let s = ctx.socket(zmq::SUB)?;
            s.set_rcvhwm(cfg.sink_queue)?;
            s.set_linger(0)?;
            s.connect(&cfg.relay_edges)
                .with_context(|| format!("connecting to {}", cfg.relay_edges))?;
            for c in &cfg.channels {
                s.set_subscribe(c.as_bytes())?;
            }
            Ok((s, cfg.relay_publish.clone()))
        }
    }
}

fn connect_publisher(endpoint: &str, send_timeout: Duration) -> Result<Publisher> {
    let mut p = Publisher::new(vec![endpoint.to_owned()])
        .with_context(|| format!("publisher for {endpoint}"))?;
    p.wait_connected(SETUP_TIMEOUT)
        .with_context(|| format!("connecting the publisher to {endpoint}"))?;
    p.set_send_timeout(send_timeout);
    Ok(p)
}

/// Relay channels before this tool subscribes, and a check that it is reachable.
fn relay_baseline(cfg: &Config) -> Result<RelayStats> {
    let s = get_stats(&cfg.relay_http)?;
    if s.channels > 0 {
        eprintln!(
            "relay-hop: warning: the relay already holds {} channels (other edges?)",
            s.channels
        );
    }
    Ok(s)
}

/// Waits until the relay holds this tool's channels on top of `baseline`.
fn wait_subscribed(cfg: &Config, baseline: &RelayStats) -> Result<()> {
    let want = baseline.channels + cfg.channels.len() as u64;
    wait_stats(cfg, "the relay holding every subscribed channel", |s| {
        s.channels >= want
    })?;
    Ok(())
}

/// After the sink closed: waits until the relay let its channels go, so the next
/// round starts from the same state.
fn wait_unsubscribed(cfg: &Config, baseline: &RelayStats) {
    if let Err(e) = wait_stats(cfg, "the relay releasing the channels", |s| {
        s.channels <= baseline.channels
    }) {
        eprintln!("relay-hop: warning: {e:#}");
    }
}

// ---------------------------------------------------------------------------
// Latency rounds.

/// What the paced publisher did.
#[derive(Debug, Default, Clone, Copy)]
struct PacedReport {
    sent: u64,
    busy: u64,
    /// Seconds from the first to the last send.
    elapsed: f64,
    /// Largest delay of a tick behind its schedule, seconds.
    max_lag: f64,
    /// When that was, seconds into the round.
    max_lag_at: f64,
    /// Ticks that started more than two ticks behind schedule.
    late_ticks: u64,
    /// CPU ticks of the publisher thread.
    cpu_ticks: u64,
}

/// One latency round's results.
struct LatencyResult {
    target: Target,
    publisher: PacedReport,
    sink: SinkReport,
    relay: Option<RelayStats>,
    cpu: CpuUse,
}

impl LatencyResult {
    fn lost(&self) -> u64 {
        self.publisher.sent.saturating_sub(self.sink.unique)
    }

    fn hist(&self) -> Option<&Histogram> {
        self.sink.latency.as_ref()
    }

    fn pct(&self, q: f64) -> u64 {
        self.hist().map_or(0, |h| h.percentile(q))
    }
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// Publishes `total` messages at `cfg.rate`, a burst of what is due every `cfg.tick`.
fn paced_publish(
    mut publisher: Publisher,
    shared: &Shared,
    cfg: &Config,
    total: u64,
) -> Result<PacedReport> {
    let (channels, rate, size, tick) = (&cfg.channels, cfg.rate, cfg.size, cfg.tick);
    let ticks0 = own_thread_ticks();
    let mut report = PacedReport::default();
    let mut data = String::with_capacity(size + 64);
    let start = Instant::now();
    let mut n = 0u64;
    while n < total {
        let elapsed = start.elapsed().as_secs_f64();
        let lag = elapsed - n as f64 / rate;
        if lag > report.max_lag {
            report.max_lag = lag;
            report.max_lag_at = elapsed;
        }
        if lag > 2.0 * tick.as_secs_f64() {
            report.late_ticks += 1;
        }
        let due = ((elapsed * rate) as u64 + 1).min(total);
        while n < due {
            let t = shared.now_ns();
            write_data(&mut data, n, t, size);
            let channel = &channels[(n % channels.len() as u64) as usize];
            match publisher.publish(channel, EVENT, &data) {
                Ok(()) => report.sent += 1,
                Err(PublisherError::Busy(_)) => report.busy += 1,
                Err(e) => return Err(e).context("publishing"),
            }
            n += 1;
        }
        shared.sent.store(report.sent, Relaxed);
        report.elapsed = start.elapsed().as_secs_f64();
        // Sleep to the next tick boundary.
        let now = start.elapsed();
        let next_tick = now.as_nanos() / tick.as_nanos() + 1;
        let next = Duration::from_nanos((next_tick * tick.as_nanos()) as u64);
        thread::sleep(next.saturating_sub(now));
    }
    drop(publisher);
    report.cpu_ticks = own_thread_ticks().saturating_sub(ticks0);
    Ok(report)
}

fn latency_round(cfg: &Config, target: Target) -> Result<LatencyResult> {
    let warmup_n = (cfg.warmup.as_secs_f64() * cfg.rate).round() as u64;
    let total = warmup_n + (cfg.duration.as_secs_f64() * cfg.rate).round() as u64;
    eprintln!(
        "relay-hop: latency round, {}: {} messages at {:.0}/s ({} warm-up)",
        target.name(),
        total,
        cfg.rate,
        warmup_n
    );
    let ctx = zmq::Context::new();
    let baseline = match target {
        Target::Relay => Some(relay_baseline(cfg)?),
        Target::Direct => None,
    };
    let (socket, endpoint) = open_sink(cfg, &ctx, target)?;
    if let Some(b) = &baseline {
        wait_subscribed(cfg, b)?;
    }
    let publisher = connect_publisher(&endpoint, LATENCY_SEND_TIMEOUT)?;
    let shared = Shared::new();
    let before = match target {
        Target::Relay => Some(get_stats(&cfg.relay_http)?),
        Target::Direct => None,
    };
    let cpu = CpuProbe::start(cfg)?;
    let sink = Sink {
        socket,
        target,
        prefix: cfg.prefix.as_bytes().to_vec(),
        channels: cfg.channels.len(),
        timed_from: warmup_n,
        record_latency: true,
    };
    let (sink_report, pub_report) = thread::scope(|s| -> Result<_> {
        let _stop = StopOnDrop(&shared);
        let sink = thread::Builder::new()
            .name("sink".into())
            .spawn_scoped(s, || sink.run(&shared))?;
        let publisher = thread::Builder::new()
            .name("publisher".into())
            .spawn_scoped(s, || paced_publish(publisher, &shared, cfg, total));
        let pub_report = match publisher {
            Ok(handle) => join(handle, "publisher"),
            Err(e) => Err(e.into()),
        };
        // Stragglers: wait until everything sent arrived or the grace period ends.
        let deadline = Instant::now() + cfg.grace;
        while shared.received.load(Relaxed) < shared.sent.load(Relaxed)
            && Instant::now() < deadline
            && !sink.is_finished()
        {
            thread::sleep(Duration::from_millis(10));
        }
        shared.stop_sink.store(true, Relaxed);
        let sink_report = join(sink, "sink");
        Ok((sink_report?, pub_report?))
    })?;
    let cpu = cpu.finish(
        cfg,
        Some(vec![
            ("publisher".to_owned(), pub_report.cpu_ticks),
            ("sink".to_owned(), sink_report.cpu_ticks),
        ]),
    )?;
    let relay = match before {
        Some(b) => Some(get_stats(&cfg.relay_http)?.since(&b)),
        None => None,
    };
    drop(ctx);
    if let Some(b) = &baseline {
        wait_unsubscribed(cfg, b);
    }
    Ok(LatencyResult {
        target,
        publisher: pub_report,
        sink: sink_report,
        relay,
        cpu,
    })
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("the {what} thread panicked"))?
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn latency_json(r: &LatencyResult) -> Value {
    let mut lat = serde_json::Map::new();
    for (name, q) in QUANTILES {
        lat.insert(format!("{name}_us"), json!(round1(us(r.pct(q)))));
    }
    lat.insert(
        "max_us".into(),
        json!(round1(us(r.hist().map_or(0, Histogram::max)))),
    );
    lat.insert(
        "mean_us".into(),
        json!(round1(us(r.hist().map_or(0, Histogram::mean)))),
    );
    lat.insert("timed".into(), json!(r.hist().map_or(0, Histogram::count)));
    json!({
        "sent": r.publisher.sent,
        "publisher_busy": r.publisher.busy,
        "achieved_rate": round1(r.publisher.sent as f64 / r.publisher.elapsed.max(1e-9)),
        "publisher_max_lag_ms": round1(r.publisher.max_lag * 1000.0),
        "publisher_max_lag_at_s": round1(r.publisher.max_lag_at),
        "publisher_late_ticks": r.publisher.late_ticks,
        "received": r.sink.received,
        "lost": r.lost(),
        "duplicates": r.sink.duplicates,
        "bad_data": r.sink.bad_data,
        "missing_seq": r.sink.missing_seq,
        "seq_gaps": r.sink.seq_gaps,
        "seq_backwards": r.sink.seq_backwards,
        "foreign": r.sink.foreign,
        "latency": Value::Object(lat),
        "relay_stats_delta": r.relay.map(RelayStats::to_json),
        "cpu": cpu_json(&r.cpu),
    })
}

fn report_latency(
    cfg: &Config,
    direct: &LatencyResult,
    relay: &LatencyResult,
    text: &mut String,
    out: &mut serde_json::Map<String, Value>,
) {
    let _ = writeln!(
        text,
        "\nlatency at {:.0} msg/s (bursts of {:.0} every {} µs), {} channels, {}-byte data: \
         publisher send → sink receive",
        cfg.rate,
        cfg.rate * cfg.tick.as_secs_f64(),
        cfg.tick.as_micros(),
        cfg.channels.len(),
        cfg.size,
    );
    let _ = writeln!(
        text,
        "  {:<8} {:>9} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "path", "sent", "received", "lost", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for r in [direct, relay] {
        let _ = writeln!(
            text,
            "  {:<8} {:>9} {:>9} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1}",
            r.target.name(),
            r.publisher.sent,
            r.sink.received,
            r.lost(),
            us(r.pct(0.5)),
            us(r.pct(0.9)),
            us(r.pct(0.99)),
            us(r.pct(0.999)),
            us(r.hist().map_or(0, Histogram::max)),
        );
    }
    let added: Vec<(String, f64)> = QUANTILES
        .iter()
        .map(|(name, q)| ((*name).to_owned(), us(relay.pct(*q)) - us(direct.pct(*q))))
        .collect();
    let line: Vec<String> = added
        .iter()
        .map(|(n, v)| format!("{n} {v:+.1} µs"))
        .collect();
    let _ = writeln!(text, "  added by relay: {}", line.join(", "));
    for r in [direct, relay] {
        let p = &r.publisher;
        let _ = writeln!(
            text,
            "  {}: publisher {:.0} msg/s achieved, {} ticks > {} µs late (worst {:.2} ms at {:.1} s), \
             {} busy; sink {} duplicates, {} malformed",
            r.target.name(),
            p.sent as f64 / p.elapsed.max(1e-9),
            p.late_ticks,
            2 * cfg.tick.as_micros(),
            p.max_lag * 1000.0,
            p.max_lag_at,
            p.busy,
            r.sink.duplicates,
            r.sink.bad_data,
        );
    }
    let s = &relay.sink;
    let _ = writeln!(
        text,
        "  relay: seq frame missing on {} of {} messages, {} seq gaps, {} backwards, {} foreign",
        s.missing_seq, s.received, s.seq_gaps, s.seq_backwards, s.foreign
    );
    if let Some(d) = relay.relay {
        let _ = writeln!(
            text,
            "  relay /stats Δ: received.zmq {}, forwarded {}, no_subscribers {}, dropped {}",
            d.received_zmq, d.forwarded, d.no_subscribers, d.dropped
        );
    }
    for r in [direct, relay] {
        let _ = writeln!(text, "  {} round:", r.target.name());
        cpu_text(text, &r.cpu);
    }
    let added_json: serde_json::Map<String, Value> = added
        .iter()
        .map(|(n, v)| (format!("{n}_us"), json!(round1(*v))))
        .collect();
    out.insert(
        "latency".into(),
        json!({
            "direct": latency_json(direct),
            "relay": latency_json(relay),
            "added_by_relay": Value::Object(added_json),
        }),
    );
}

// ---------------------------------------------------------------------------
// Throughput round.

struct ThroughputResult {
    window: f64,
    published_window: u64,
    received_window: u64,
    relay_window: RelayStats,
    published_total: u64,
    stalls: u64,
    relay_total: RelayStats,
    sink: SinkReport,
    drain: f64,
    cpu: CpuUse,
}

/// Publishes unpaced until told to stop; counters are `k, k + P, k + 2P, …`.
fn unpaced_publish(
    mut publisher: Publisher,
    shared: &Shared,
    channels: &[String],
    id: u64,
    publishers: u64,
    size: usize,
) -> Result<u64> {
    /// Messages between looks at the stop flag and updates of the shared count.
    const BATCH: u64 = 64;
    let mut data = String::with_capacity(size + 64);
    let mut stalls = 0u64;
    let mut i = 0u64;
    let mut counted = 0u64;
    // Spread publishers over the channels from different starting points.
    let offset = id as usize * channels.len() / publishers as usize;
    'publishing: while !shared.stop_publishing.load(Relaxed) {
        for _ in 0..BATCH {
            let n = id + i * publishers;
            write_data(&mut data, n, shared.now_ns(), size);
            let channel = &channels[(i as usize + offset) % channels.len()];
            loop {
                match publisher.publish(channel, EVENT, &data) {
                    Ok(()) => break,
                    Err(PublisherError::Busy(_)) => {
                        stalls += 1;
                        if shared.stop_publishing.load(Relaxed) {
                            break 'publishing;
                        }
                    }
                    Err(e) => {
                        shared.sent.fetch_add(i - counted, Relaxed);
                        return Err(e).context("publishing");
                    }
                }
            }
            i += 1;
        }
        shared.sent.fetch_add(i - counted, Relaxed);
        counted = i;
    }
    shared.sent.fetch_add(i - counted, Relaxed);
    Ok(stalls)
}

fn throughput_round(cfg: &Config) -> Result<ThroughputResult> {
    eprintln!(
        "relay-hop: throughput round: {} unpaced publisher(s), {:.0} s warm-up + {:.0} s",
        cfg.publishers,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    );
    let ctx = zmq::Context::new();
    let baseline = relay_baseline(cfg)?;
    let (socket, endpoint) = open_sink(cfg, &ctx, Target::Relay)?;
    wait_subscribed(cfg, &baseline)?;
    let publishers = (0..cfg.publishers)
        .map(|_| connect_publisher(&endpoint, THROUGHPUT_SEND_TIMEOUT))
        .collect::<Result<Vec<_>>>()?;
    let shared = Shared::new();
    let start_stats = get_stats(&cfg.relay_http)?;
    let sink = Sink {
        socket,
        target: Target::Relay,
        prefix: cfg.prefix.as_bytes().to_vec(),
        channels: cfg.channels.len(),
        timed_from: 0,
        record_latency: false,
    };
    let p = cfg.publishers as u64;
    let result = thread::scope(|s| -> Result<ThroughputResult> {
        let _stop = StopOnDrop(&shared);
        let sink = thread::Builder::new()
            .name("sink".into())
            .spawn_scoped(s, || sink.run(&shared))?;
        let mut handles = Vec::new();
        for (id, publisher) in publishers.into_iter().enumerate() {
            let shared = &shared;
            let spawned = thread::Builder::new()
                .name("publisher".into())
                .spawn_scoped(s, move || {
                    unpaced_publish(publisher, shared, &cfg.channels, id as u64, p, cfg.size)
                });
            handles.push(spawned?);
        }
        // Measure the window, then stop publishing whatever happened.
        let window = (|| -> Result<_> {
            thread::sleep(cfg.warmup);
            let s0 = get_stats(&cfg.relay_http)?;
            let (sent0, recv0) = (shared.sent.load(Relaxed), shared.received.load(Relaxed));
            let cpu = CpuProbe::start(cfg)?;
            let t0 = Instant::now();
            thread::sleep(cfg.duration);
            let s1 = get_stats(&cfg.relay_http)?;
            let (sent1, recv1) = (shared.sent.load(Relaxed), shared.received.load(Relaxed));
            let secs = t0.elapsed().as_secs_f64();
            let cpu = cpu.finish(cfg, None)?;
            Ok((secs, s1.since(&s0), sent1 - sent0, recv1 - recv0, cpu))
        })();
        shared.stop_publishing.store(true, Relaxed);
        let mut stalls = 0;
        let mut pub_error = None;
        for h in handles {
            match join(h, "publisher") {
                Ok(n) => stalls += n,
                Err(e) => pub_error = Some(e),
            }
        }
        let published_total = shared.sent.load(Relaxed);
        // Drain: until the relay took everything and the sink read or saw a gap
        // for everything it forwarded, or nothing moved for the grace period.
        let drain_start = Instant::now();
        let mut last_progress = Instant::now();
        let mut last = (0, 0);
        let relay_total = loop {
            let st = get_stats(&cfg.relay_http)?.since(&start_stats);
            let now = (st.received_zmq, shared.received.load(Relaxed));
            let accounted = now.1 + shared.seq_gaps.load(Relaxed);
            let done = st.received_zmq >= published_total && accounted >= st.forwarded;
            if now != last {
                last = now;
                last_progress = Instant::now();
            }
            if done
                || last_progress.elapsed() >= cfg.grace
                || drain_start.elapsed() >= MAX_DRAIN
                || sink.is_finished()
            {
                break st;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let drain = drain_start.elapsed().as_secs_f64();
        shared.stop_sink.store(true, Relaxed);
        let sink_report = join(sink, "sink")?;
        if let Some(e) = pub_error {
            return Err(e);
        }
        let (window, relay_window, published_window, received_window, cpu) = window?;
        Ok(ThroughputResult {
            window,
            published_window,
            received_window,
            relay_window,
            published_total,
            stalls,
            relay_total,
            sink: sink_report,
            drain,
            cpu,
        })
    })?;
    drop(ctx);
    wait_unsubscribed(cfg, &baseline);
    Ok(result)
}

fn report_throughput(
    cfg: &Config,
    t: &ThroughputResult,
    text: &mut String,
    out: &mut serde_json::Map<String, Value>,
) {
    let rate = |n: u64| n as f64 / t.window.max(1e-9);
    let w = &t.relay_window;
    let _ = writeln!(
        text,
        "\nthroughput, {} unpaced publisher(s), {} channels, {}-byte data, {:.1} s window after {:.0} s warm-up",
        cfg.publishers,
        cfg.channels.len(),
        cfg.size,
        t.window,
        cfg.warmup.as_secs_f64()
    );
    let _ = writeln!(
        text,
        "  rates (msg/s)  published {:.0}, relay received {:.0}, relay forwarded {:.0}, sink received {:.0}",
        rate(t.published_window),
        rate(w.received_zmq),
        rate(w.forwarded),
        rate(t.received_window)
    );
    let r = &t.relay_total;
    let lost = r.forwarded.saturating_sub(t.sink.unique);
    let _ = writeln!(
        text,
        "  totals         published {}, relay received {}, forwarded {}, no_subscribers {}, \
         dropped {}; sink received {} ({} lost after the relay, {} seq gaps, {} duplicates, \
         seq frame missing on {}); {} publisher stalls ≥ {} ms; {:.1} s to drain",
        t.published_total,
        r.received_zmq,
        r.forwarded,
        r.no_subscribers,
        r.dropped,
        t.sink.received,
        lost,
        t.sink.seq_gaps,
        t.sink.duplicates,
        t.sink.missing_seq,
        t.stalls,
        THROUGHPUT_SEND_TIMEOUT.as_millis(),
        t.drain
    );
    cpu_text(text, &t.cpu);
    let limit = limit_hint(&t.cpu);
    let _ = writeln!(text, "  limit          {limit}");
    out.insert(
        "throughput".into(),
        json!({
            "window_s": round1(t.window),
            "published_per_s": round1(rate(t.published_window)),
            "relay_received_per_s": round1(rate(w.received_zmq)),
            "relay_forwarded_per_s": round1(rate(w.forwarded)),
            "sink_received_per_s": round1(rate(t.received_window)),
            "relay_window_delta": w.to_json(),
            "published_total": t.published_total,
            "relay_total_delta": r.to_json(),
            "sink_received": t.sink.received,
            "lost_after_relay": lost,
            "seq_gaps": t.sink.seq_gaps,
            "duplicates": t.sink.duplicates,
            "missing_seq": t.sink.missing_seq,
            "publisher_stalls": t.stalls,
            "drain_s": round1(t.drain),
            "cpu": cpu_json(&t.cpu),
            "limit": limit,
        }),
    );
}

/// Which side's core ran out during an unpaced round, from the CPU figures.
fn limit_hint(cpu: &CpuUse) -> &'static str {
    const BUSY: f64 = 90.0;
    /// More than this much of a core spent elsewhere means the run shared the machine.
    const ELSEWHERE: f64 = 10.0;
    if cpu.elsewhere() > ELSEWHERE {
        return "other load took part of the cores (see 'elsewhere'): rerun on a quiet machine";
    }
    let tool = cpu.tool.0 >= BUSY;
    match cpu.relay.as_ref().map(|r| r.0 >= BUSY) {
        None if tool => "the tool's core was busy (relay CPU unknown: no --relay-pid)",
        None => "unknown (no --relay-pid)",
        Some(true) if tool => "both cores busy: the relay's rate is about what this machine allows",
        Some(true) => "the relay's core was busy: this is the relay's ceiling here",
        Some(false) if tool => {
            "the tool's core was busy and the relay's was not: a lower bound for the relay"
        }
        Some(false) => "neither core was busy: queues or the network path limited the rate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_at_the_requested_size() {
        let mut buf = String::new();
        for (n, t, size) in [(0, 0, 100), (123_456, 9_876_543_210, 100), (7, 8, 10)] {
            write_data(&mut buf, n, t, size);
            assert_eq!(parse_data(buf.as_bytes()), Some((n, t)));
            assert!(
                buf.len() == size || (size < 30 && buf.len() > size),
                "{buf}"
            );
            serde_json::from_str::<Value>(&buf).expect("valid JSON");
        }
        assert_eq!(parse_data(b"{\"n\":1}"), None);
        assert_eq!(parse_data(b"{\"n\":,\"t\":2}"), None);
    }

    #[test]
    fn flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: RelayHopArgs,
        }
        let cli = Cli::try_parse_from([
            "relay-hop",
            "--relay-publish",
            "tcp://127.0.0.1:1",
            "--relay-edges",
            "tcp://127.0.0.1:2",
            "--relay-http",
            "http://127.0.0.1:3/",
            "--mode",
            "throughput",
            "--rate",
            "5000",
            "--publishers",
            "2",
            "--json",
        ])
        .expect("parses");
        let cfg = Config::from_args(&cli.args).expect("valid");
        assert_eq!(cfg.relay_http, "127.0.0.1:3");
        assert_eq!(cfg.mode, Mode::Throughput);
        assert_eq!(
            (cfg.rate, cfg.publishers, cfg.channels.len()),
            (5000.0, 2, 100)
        );
        assert_eq!(cfg.channels[7], "relayhop-7");
        let mut bad = cli.args;
        bad.channel_prefix = "no spaces ".into();
        assert!(Config::from_args(&bad).is_err());
    }

    #[test]
    fn proc_stat_cores() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 2 0 1 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1\n";
        let cores = parse_core_ticks(stat);
        assert_eq!(cores.len(), 2);
        assert_eq!(
            cores[0],
            CoreTicks {
                name: "cpu0".into(),
                idle: 52,
                steal: 0,
            }
        );
        assert_eq!(cores[1].idle, 50);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"42"), Some(42));
        assert_eq!(parse_u64(b"42x"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
    }

    #[test]
    fn seen_counts_duplicates() {
        let mut s = Seen::default();
        assert_eq!(s.insert(5), Some(true));
        assert_eq!(s.insert(5), Some(false));
        assert_eq!(s.insert(100_000), Some(true));
        assert_eq!(s.insert(MAX_TRACKED), None);
        assert_eq!(s.unique, 2);
    }

    #[test]
    fn http_bodies() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_http_response(plain).expect("plain"), b"{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).expect("chunked"), b"{\"a\":1}");
        assert!(parse_http_response(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn stats_fields() {
        let v = json!({
            "received": {"zmq": 10, "http": 1},
            "forwarded": 7, "no_subscribers": 2,
            "dropped": {"data": 1, "frames": 0},
            "channels": 3, "edges": 1
        });
        let s = RelayStats::from_json(&v).expect("stats");
        assert_eq!((s.received_zmq, s.forwarded, s.dropped), (10, 7, 1));
        let d = s.since(&RelayStats {
            received_zmq: 4,
            ..RelayStats::default()
        });
        assert_eq!(d.received_zmq, 6);
        assert!(RelayStats::from_json(&json!({})).is_err());
    }
}
