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
//!
//! Files: [`config`] (flags → validated settings), [`data`] (the publishes'
//! data text), [`relay_stats`] (the relay's `/stats`), [`cpu`] (CPU time from
//! `/proc`), [`round`] (what both kinds of round share), [`sink`] (the
//! receiving side), [`latency`] and [`throughput`] (the rounds and their reports).
//!
//! [`Instant`]: std::time::Instant
//! [`Publisher`]: pushfleet_server::publisher::Publisher
//! [`Histogram`]: crate::stats::Histogram
//! [`PACE_TICK`]: config::PACE_TICK
//! [`THROUGHPUT_SEND_TIMEOUT`]: throughput::THROUGHPUT_SEND_TIMEOUT

mod config;
mod cpu;
mod data;
mod latency;
mod relay_stats;
mod round;
mod sink;
mod throughput;

pub use config::RelayHopArgs;

use anyhow::Result;
use config::{Config, Mode};
use latency::{latency_round, report_latency};
use serde_json::Value;
use sink::Target;
use std::fmt::Write as _;
use throughput::{report_throughput, throughput_round};

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

/// `v` rounded to one decimal, for the JSON report.
fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
