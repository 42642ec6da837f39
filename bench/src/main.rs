//! `pushfleet-bench`: the load tool for pushfleet.
//!
//! It opens N WebSocket subscribers over C channels, publishes over ZeroMQ
//! (binding a PUB socket the server connects to) at a set rate, and reports
//! deliveries per second, loss, publish → socket latency percentiles, and
//! the server's RSS per connection and CPU per delivery read from /proc.
//!
//! Subcommands:
//! * `fanout`: one measured round at `--rate` publishes/s.
//! * `sweep`: rising rates until loss or latency break, then half that rate.
//! * `idle`: N subscribed, silent connections; server RSS per connection.
//! * `baseline-server`: a minimal fan-out server (see [`baseline`]) to run
//!   the other subcommands against, as a reference for the machine's ceiling.
//! * `relay-hop`: latency added by one `pushfleet-relay` and its forwarding
//!   throughput, over ZeroMQ only (see [`relay_hop`] and `bench/relay.sh`).
//!
//! The reader side runs on one thread (a `current_thread` tokio runtime with
//! a `LocalSet`), the publisher on a second thread with its own runtime, so
//! the tool fits the one core it is meant to be pinned to. See `bench/run.sh`
//! for the full recipe (server on core 0, tool on core 1).

mod baseline;
mod client;
mod procfs;
mod publisher;
mod relay_hop;
mod scenario;
mod stats;
mod ws;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use scenario::{ConnOpts, LoadOpts, SweepOpts};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pushfleet-bench",
    version,
    about = "Load tool for pushfleet: WebSocket subscribers + ZeroMQ publisher"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One measured round at a fixed publish rate.
    Fanout(FanoutArgs),
    /// Rising publish rates until not sustained, then one round at half the
    /// highest sustained rate.
    Sweep(SweepArgs),
    /// N idle subscribed connections; prints the server's RSS per connection.
    Idle(IdleArgs),
    /// A minimal single-threaded fan-out server (frames each message once),
    /// a reference point for what one core can do; not a product.
    BaselineServer(BaselineArgs),
    /// Latency the relay hop adds (against a direct PUSH → PULL hop) and the
    /// relay's forwarding throughput; ZeroMQ only, no WebSockets.
    RelayHop(relay_hop::RelayHopArgs),
}

#[derive(Args, Debug)]
struct BaselineArgs {
    /// Address to serve `/healthz` and the `/ws` WebSocket endpoint on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// ZeroMQ PUB endpoint to connect the SUB socket to (retried until up).
    #[arg(long, default_value = "tcp://127.0.0.1:5556")]
    zmq_connect: String,
}

#[derive(Args, Debug)]
struct ConnArgs {
    /// WebSocket URL of the server.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Number of WebSocket connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Number of channels; connection i subscribes to channel i % channels.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Negotiate permessage-deflate.
    #[arg(long)]
    compress: bool,
    /// PID of the server, for CPU and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most handshakes (connect + upgrade + subscribe) in flight at once.
    #[arg(long, default_value_t = 500)]
    max_inflight: usize,
    /// Seconds allowed for opening and subscribing all connections.
    #[arg(long, default_value_t = 180)]
    connect_timeout: u64,
    /// Channel names are PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "bench-")]
    channel_prefix: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// ZeroMQ endpoint to bind the PUB socket on (the server connects to it).
    #[arg(long, default_value = "tcp://127.0.0.1:5556")]
    zmq_bind: String,
    /// Approximate size in bytes of each delivered message envelope.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of publishing per measured round.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for stragglers after publishing stops.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// Seconds allowed for every channel to deliver a probe before measuring.
    #[arg(long, default_value_t = 15.0)]
    probe_timeout: f64,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Publishes per second across all channels (round-robin).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
}

#[derive(Args, Debug)]
struct SweepArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Publish rate of the first round.
    #[arg(long, default_value_t = 200.0)]
    start_rate: f64,
    /// Rate multiplier between rounds.
    #[arg(long, default_value_t = 1.2)]
    step_factor: f64,
    /// Largest loss fraction still counted as sustained.
    #[arg(long, default_value_t = 0.001)]
    max_loss: f64,
    /// Largest p99 latency (ms) still counted as sustained.
    #[arg(long, default_value_t = 1000.0)]
    max_p99_ms: f64,
    /// Most rounds before giving up on finding the ceiling.
    #[arg(long, default_value_t = 30)]
    max_rounds: u32,
    /// Highest publish rate to try.
    #[arg(long, default_value_t = 1_000_000.0)]
    max_rate: f64,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Seconds to hold the connections before reading RSS.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
}

fn secs(name: &str, v: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("--{name} must be a non-negative number of seconds"))
}

impl ConnArgs {
    fn opts(self) -> ConnOpts {
        ConnOpts {
            url: self.url,
            connections: self.connections,
            channels: self.channels,
            compress: self.compress,
            server_pid: self.server_pid,
            max_inflight: self.max_inflight,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            prefix: self.channel_prefix,
            json: self.json,
        }
    }
}

impl LoadArgs {
    fn opts(self) -> Result<LoadOpts> {
        Ok(LoadOpts {
            zmq_bind: self.zmq_bind,
            size: self.size,
            duration: secs("duration", self.duration)?,
            grace: secs("grace", self.grace)?,
            probe_timeout: secs("probe-timeout", self.probe_timeout)?,
        })
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Fanout(a) => scenario::fanout(a.conn.opts(), a.load.opts()?, a.rate).await,
        Cmd::Sweep(a) => {
            let opts = SweepOpts {
                start_rate: a.start_rate,
                step_factor: a.step_factor,
                max_loss: a.max_loss,
                max_p99_ms: a.max_p99_ms,
                max_rounds: a.max_rounds,
                max_rate: a.max_rate,
            };
            scenario::sweep(a.conn.opts(), a.load.opts()?, opts).await
        }
        Cmd::Idle(a) => scenario::idle(a.conn.opts(), secs("hold", a.hold)?).await,
        Cmd::BaselineServer(a) => baseline::run(&a.listen, &a.zmq_connect).await,
        // Plain threads and blocking sockets; nothing else runs on the runtime.
        Cmd::RelayHop(a) => relay_hop::run(a),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")
        .and_then(|rt| {
            let local = tokio::task::LocalSet::new();
            let r = rt.block_on(local.run_until(run(cli)));
            // Don't wait for thousands of connection tasks to be torn down
            // gracefully; the sockets close with the process.
            std::mem::forget(local);
            std::mem::forget(rt);
            r
        });
    if let Err(e) = result {
        eprintln!("pushfleet-bench: error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_parses_fanout() {
        let cli = Cli::try_parse_from([
            "pushfleet-bench",
            "fanout",
            "--url",
            "ws://127.0.0.1:9/ws",
            "--zmq-bind",
            "tcp://127.0.0.1:5556",
            "--connections",
            "200",
            "--channels",
            "10",
            "--rate",
            "1400",
            "--size",
            "1024",
            "--duration",
            "3",
            "--compress",
            "--server-pid",
            "42",
            "--json",
        ])
        .expect("parses");
        let Cmd::Fanout(a) = cli.cmd else {
            panic!("not fanout");
        };
        assert_eq!(a.conn.connections, 200);
        assert!(a.conn.compress && a.conn.json);
        assert_eq!(a.conn.server_pid, Some(42));
        assert_eq!(a.rate, 1400.0);
        assert_eq!(a.load.size, 1024);
    }

    #[test]
    fn cli_parses_sweep_and_idle() {
        let cli = Cli::try_parse_from([
            "pushfleet-bench",
            "sweep",
            "--start-rate",
            "500",
            "--step-factor",
            "1.5",
            "--max-loss",
            "0.01",
        ])
        .expect("parses");
        assert!(
            matches!(cli.cmd, Cmd::Sweep(ref s) if s.start_rate == 500.0 && s.step_factor == 1.5)
        );
        let cli = Cli::try_parse_from([
            "pushfleet-bench",
            "idle",
            "--connections",
            "10",
            "--server-pid",
            "1",
            "--hold",
            "0.5",
        ])
        .expect("parses");
        assert!(matches!(cli.cmd, Cmd::Idle(ref i) if i.hold == 0.5));
        let cli = Cli::try_parse_from([
            "pushfleet-bench",
            "baseline-server",
            "--listen",
            "127.0.0.1:9000",
            "--zmq-connect",
            "tcp://127.0.0.1:9001",
        ])
        .expect("parses");
        assert!(
            matches!(cli.cmd, Cmd::BaselineServer(ref b) if b.listen == "127.0.0.1:9000" && b.zmq_connect == "tcp://127.0.0.1:9001")
        );
        assert!(secs("x", -1.0).is_err());
    }
}
