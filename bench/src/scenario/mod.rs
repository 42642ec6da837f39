//! The three scenarios (`fanout`, `idle`, `sweep`) and their reports.
//!
//! A measured round: note the server's and our own CPU ticks, start counting
//! ticks with `n >= start_n`, let the publisher run for `duration`, wait the
//! grace period for stragglers, stop counting, read CPU ticks again. CPU is
//! therefore charged over publish time + grace, which covers all the work
//! the published messages caused (the server is idle otherwise, apart from
//! pings). Deliveries per second divide by the publish time only.
//!
//! Modules:
//! * [`bench`](mod@bench): the shared setup (connect, probe) and the measured round.
//! * [`outcome`]: what a round measured and the figures derived from it.
//! * [`report`]: text and JSON output.
//! * [`sweep`](mod@sweep): the sweep scenario.
//!
//! This file holds the options every scenario takes and the two short
//! entry points: `fanout` (one round) and `idle` (no round, RSS only).

mod bench;
mod outcome;
mod report;
mod sweep;

pub use outcome::RoundOutcome;
pub use sweep::{sweep, SweepOpts};

use crate::procfs::{self, Proc};
use crate::publisher::{Publisher, PublisherConfig};
use anyhow::{bail, Result};
use bench::{server_rss, Bench};
use report::{fmt_bytes, fmt_opt};
use serde_json::json;
use std::time::Duration;

/// Options shared by every scenario.
#[derive(Debug, Clone)]
pub struct ConnOpts {
    /// `ws://host:port/path`.
    pub url: String,
    /// Connections to open.
    pub connections: usize,
    /// Channels; connection `i` subscribes to `i % channels`.
    pub channels: usize,
    /// Ask for permessage-deflate.
    pub compress: bool,
    /// Server PID for /proc readings.
    pub server_pid: Option<u32>,
    /// Concurrent handshakes.
    pub max_inflight: usize,
    /// Overall time allowed for connecting + subscribing.
    pub connect_timeout: Duration,
    /// Channel name prefix.
    pub prefix: String,
    /// One JSON object instead of text.
    pub json: bool,
}

/// Options of the publishing scenarios.
#[derive(Debug, Clone)]
pub struct LoadOpts {
    /// ZeroMQ endpoint to bind.
    pub zmq_bind: String,
    /// Envelope size in bytes.
    pub size: usize,
    /// Seconds of publishing per round.
    pub duration: Duration,
    /// Wait after publishing for stragglers.
    pub grace: Duration,
    /// Limit for the slow-joiner probe phase.
    pub probe_timeout: Duration,
}

fn start_publisher(conn: &ConnOpts, load: &LoadOpts) -> Result<Publisher> {
    if load.size == 0 {
        bail!("--size must be at least 1");
    }
    Publisher::start(PublisherConfig {
        bind: load.zmq_bind.clone(),
        channels: conn.channels,
        prefix: conn.prefix.clone(),
        size: load.size,
    })
}

fn check_rate(rate: f64) -> Result<()> {
    if !(rate.is_finite() && rate > 0.0) {
        bail!("rate must be a positive number, got {rate}");
    }
    Ok(())
}

/// `fanout`: one measured round at a fixed rate.
pub async fn fanout(conn: ConnOpts, load: LoadOpts, rate: f64) -> Result<()> {
    check_rate(rate)?;
    // Bind first so the server's ZeroMQ connect succeeds while we connect.
    let mut publisher = start_publisher(&conn, &load)?;
    let bench = Bench::connect(conn).await?;
    let probe_took = bench.probe(&mut publisher, load.probe_timeout).await?;
    eprintln!(
        "all channels live after {:.2} s of probing; measuring {:.0} publishes/s for {:.0} s",
        probe_took.as_secs_f64(),
        rate,
        load.duration.as_secs_f64()
    );
    let mut n = 0u64;
    let o = bench.round(&mut publisher, &load, &mut n, rate).await?;
    let rss_after = server_rss(bench.conn.server_pid)?;
    if bench.conn.json {
        let mut v = bench.header_json("fanout");
        v["size"] = json!(load.size);
        v["round"] = o.to_json();
        v["server_rss"] = bench.rss_json(rss_after);
        println!("{v}");
    } else {
        bench.print_header(&format!(
            "fanout, {}-byte messages, {:.0} publishes/s for {:.0} s",
            load.size,
            rate,
            load.duration.as_secs_f64()
        ));
        bench.print_round(&o);
        bench.print_rss(rss_after);
    }
    Ok(())
}

/// `idle`: connect, subscribe, hold, read RSS.
pub async fn idle(conn: ConnOpts, hold: Duration) -> Result<()> {
    if conn.server_pid.is_none() {
        bail!("idle needs --server-pid to read the server's RSS");
    }
    let bench = Bench::connect(conn).await?;
    eprintln!("holding {:.0} s", hold.as_secs_f64());
    tokio::time::sleep(hold).await;
    if bench.shared.closed.get() > 0 {
        bail!(
            "{} connections closed while idle; first errors: {:?}",
            bench.shared.closed.get(),
            bench.shared.errors.borrow()
        );
    }
    let rss_after = server_rss(bench.conn.server_pid)?;
    let self_rss = procfs::rss_bytes(Proc::SelfProc).ok();
    let per_conn = bench.rss_per_connection(rss_after);
    if bench.conn.json {
        let mut v = bench.header_json("idle");
        v["hold_s"] = json!(hold.as_secs_f64());
        v["server_rss"] = json!({
            "rss_before_bytes": bench.rss_before,
            "rss_subscribed_bytes": bench.rss_subscribed,
            "rss_after_hold_bytes": rss_after,
            "rss_per_connection_bytes": per_conn,
        });
        v["load_tool_rss_bytes"] = json!(self_rss);
        println!("{v}");
    } else {
        bench.print_header("idle");
        println!(
            "server RSS            before {} / subscribed {} / after {:.0} s hold {}",
            fmt_bytes(bench.rss_before),
            fmt_bytes(bench.rss_subscribed),
            hold.as_secs_f64(),
            fmt_bytes(rss_after)
        );
        println!(
            "RSS per connection    {} B (after hold - before) / {}",
            fmt_opt(per_conn, 0),
            bench.conn.connections
        );
        println!("load tool RSS         {}", fmt_bytes(self_rss));
    }
    Ok(())
}
