//! `relay-hop`'s flags ([`RelayHopArgs`]) and their validated form ([`Config`]).

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pushfleet_server::publisher::MAX_DATA;
use serde_json::{json, Value};
use std::time::Duration;

/// How often the paced publisher wakes up to send what is due (default).
pub const PACE_TICK: Duration = Duration::from_millis(1);

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

/// Validated settings.
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) relay_publish: String,
    pub(super) relay_edges: String,
    pub(super) relay_http: String,
    pub(super) relay_pid: Option<u32>,
    pub(super) mode: Mode,
    pub(super) rate: f64,
    pub(super) tick: Duration,
    pub(super) duration: Duration,
    pub(super) warmup: Duration,
    pub(super) grace: Duration,
    pub(super) channels: Vec<String>,
    pub(super) prefix: String,
    pub(super) size: usize,
    pub(super) publishers: usize,
    pub(super) direct_bind: String,
    pub(super) sink_queue: i32,
    pub(super) json: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

impl Config {
    pub(super) fn from_args(a: &RelayHopArgs) -> Result<Self> {
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

    pub(super) fn describe(&self) -> String {
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

    pub(super) fn to_json(&self) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
