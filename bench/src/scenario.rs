//! The three scenarios (`fanout`, `idle`, `sweep`) and their reports.
//!
//! A measured round: note the server's and our own CPU ticks, start counting
//! ticks with `n >= start_n`, let the publisher run for `duration`, wait the
//! grace period for stragglers, stop counting, read CPU ticks again. CPU is
//! therefore charged over publish time + grace, which covers all the work
//! the published messages caused (the server is idle otherwise, apart from
//! pings). Deliveries per second divide by the publish time only.

use crate::client::{self, ClientConfig, Shared};
use crate::procfs::{self, Proc};
use crate::publisher::{self, Publisher, PublisherConfig, RunReport};
use crate::stats::{ms, LatencySummary};
use crate::ws::WsUrl;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::rc::Rc;
use std::time::{Duration, Instant};

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

/// Sweep parameters.
#[derive(Debug, Clone)]
pub struct SweepOpts {
    /// First rate (publishes/s).
    pub start_rate: f64,
    /// Rate multiplier per round.
    pub step_factor: f64,
    /// Largest loss fraction still called sustained.
    pub max_loss: f64,
    /// Largest p99 still called sustained, ms.
    pub max_p99_ms: f64,
    /// Round limit.
    pub max_rounds: u32,
    /// Rate limit.
    pub max_rate: f64,
}

/// Everything a round measured.
#[derive(Debug, Clone)]
pub struct RoundOutcome {
    /// Requested publish rate.
    pub rate: f64,
    /// Publisher report.
    pub publish: RunReport,
    /// Deliveries that should arrive.
    pub expected: u64,
    /// Deliveries that did arrive (by the end of the grace period).
    pub received: u64,
    /// ... of which before the end of the publish window.
    pub in_window: u64,
    /// Ticks from earlier rounds.
    pub stale: u64,
    /// Snapshot replays seen.
    pub snapshots: u64,
    /// Repeated or reordered ticks.
    pub duplicates: u64,
    /// Unintelligible messages.
    pub unparsed: u64,
    /// Counted deliveries that arrived compressed.
    pub compressed: u64,
    /// Compressed payloads actually inflated during the round.
    pub inflated: u64,
    /// Compressed payloads served from the identical-payload cache.
    pub inflate_cache_hits: u64,
    /// Average frame size on the wire.
    pub avg_wire_bytes: f64,
    /// Average message size after inflating.
    pub avg_message_bytes: f64,
    /// Latency figures.
    pub latency: LatencySummary,
    /// Wall time over which CPU was charged (publish + grace).
    pub cpu_window: Duration,
    /// Server CPU seconds over the window.
    pub server_cpu_s: Option<f64>,
    /// Load tool CPU seconds over the window.
    pub self_cpu_s: f64,
    /// Subscribed connections that ended during the round.
    pub closed_during: usize,
}

impl RoundOutcome {
    /// Lost fraction (0..1).
    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.expected.saturating_sub(self.received) as f64 / self.expected as f64
        }
    }

    /// Deliveries per second of publish time.
    pub fn deliveries_per_sec(&self) -> f64 {
        let s = self.publish.elapsed.as_secs_f64();
        if s > 0.0 {
            self.received as f64 / s
        } else {
            0.0
        }
    }

    /// Achieved publish rate.
    pub fn publish_rate(&self) -> f64 {
        let s = self.publish.elapsed.as_secs_f64();
        if s > 0.0 {
            self.publish.sent as f64 / s
        } else {
            0.0
        }
    }

    fn per_delivery_us(&self, cpu_s: f64) -> Option<f64> {
        (self.received > 0).then(|| cpu_s * 1e6 / self.received as f64)
    }

    /// Server CPU µs per delivery.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        self.server_cpu_s.and_then(|s| self.per_delivery_us(s))
    }

    /// Load tool CPU µs per delivery.
    pub fn self_us_per_delivery(&self) -> Option<f64> {
        self.per_delivery_us(self.self_cpu_s)
    }

    fn to_json(&self) -> Value {
        json!({
            "rate": self.rate,
            "duration_s": self.publish.elapsed.as_secs_f64(),
            "publishes_sent": self.publish.sent,
            "achieved_publish_rate": self.publish_rate(),
            "publisher_max_backlog": self.publish.max_backlog,
            "publisher_lag_ms": {
                "p99": ms(self.publish.lag_p99_ns),
                "max": ms(self.publish.lag_max_ns),
            },
            "publish_errors": self.publish.send_errors,
            "expected_deliveries": self.expected,
            "received_deliveries": self.received,
            "received_in_window": self.in_window,
            "loss_pct": self.loss() * 100.0,
            "deliveries_per_sec": self.deliveries_per_sec(),
            "latency_ms": {
                "p50": ms(self.latency.p50_ns),
                "p99": ms(self.latency.p99_ns),
                "p999": ms(self.latency.p999_ns),
                "max": ms(self.latency.max_ns),
                "mean": ms(self.latency.mean_ns),
            },
            "cpu_window_s": self.cpu_window.as_secs_f64(),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_us_per_delivery": self.server_us_per_delivery(),
            "load_tool_cpu_s": self.self_cpu_s,
            "load_tool_cpu_us_per_delivery": self.self_us_per_delivery(),
            "avg_wire_bytes": self.avg_wire_bytes,
            "avg_message_bytes": self.avg_message_bytes,
            "compressed_deliveries": self.compressed,
            "inflated": self.inflated,
            "inflate_cache_hits": self.inflate_cache_hits,
            "stale": self.stale,
            "snapshots": self.snapshots,
            "duplicates": self.duplicates,
            "unparsed": self.unparsed,
            "connections_closed": self.closed_during,
        })
    }
}

struct Bench {
    conn: ConnOpts,
    shared: Rc<Shared>,
    clk_tck: u64,
    clk_assumed: bool,
    rss_before: Option<u64>,
    rss_subscribed: Option<u64>,
    connect_time: Duration,
}

impl Bench {
    /// Resolves the URL, reads the server's baseline RSS, opens and
    /// subscribes every connection.
    async fn connect(conn: ConnOpts) -> Result<Bench> {
        if conn.connections == 0 || conn.channels == 0 {
            bail!("--connections and --channels must be at least 1");
        }
        let url = WsUrl::parse(&conn.url)?;
        let addr = tokio::net::lookup_host(url.authority.as_str())
            .await
            .with_context(|| format!("resolving {}", url.authority))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", url.authority))?;
        if let Some(pid) = conn.server_pid {
            procfs::check_pid(pid)?;
        }
        let (clk_tck, clk_assumed) = procfs::clock_ticks_per_sec();
        let rss_before = server_rss(conn.server_pid)?;
        let shared = Shared::new(ClientConfig {
            addr,
            url,
            compress: conn.compress,
            channels: conn.channels,
            prefix: conn.prefix.clone(),
            attempts: 5,
            handshake_timeout: Duration::from_secs(10),
        });
        eprintln!(
            "opening {} connections to {} ({} channels{}, {} handshakes in flight max)",
            conn.connections,
            conn.url,
            conn.channels,
            if conn.compress {
                ", permessage-deflate"
            } else {
                ""
            },
            conn.max_inflight
        );
        let started = Instant::now();
        client::open_all(
            &shared,
            conn.connections,
            conn.max_inflight,
            conn.connect_timeout,
        )
        .await?;
        let connect_time = started.elapsed();
        if conn.compress && shared.deflate.get() < conn.connections {
            bail!(
                "permessage-deflate accepted on only {} of {} connections",
                shared.deflate.get(),
                conn.connections
            );
        }
        let rss_subscribed = server_rss(conn.server_pid)?;
        Ok(Bench {
            conn,
            shared,
            clk_tck,
            clk_assumed,
            rss_before,
            rss_subscribed,
            connect_time,
        })
    }

    fn rss_per_connection(&self, after: Option<u64>) -> Option<f64> {
        match (self.rss_before, after) {
            (Some(b), Some(a)) => Some((a as f64 - b as f64) / self.conn.connections as f64),
            _ => None,
        }
    }

    fn server_cpu_ticks(&self) -> Result<Option<u64>> {
        self.conn
            .server_pid
            .map(|pid| procfs::cpu_ticks(Proc::Pid(pid)))
            .transpose()
    }

    /// Publishes probes until every subscribed channel delivered one.
    async fn probe(&self, publisher: &mut Publisher, timeout: Duration) -> Result<Duration> {
        let needed = self
            .shared
            .subs_per_channel
            .borrow()
            .iter()
            .filter(|&&s| s > 0)
            .count();
        let started = Instant::now();
        publisher.start_probe(timeout + Duration::from_secs(1))?;
        loop {
            if self.shared.probe_channels() >= needed {
                break;
            }
            if started.elapsed() >= timeout {
                publisher.stop_probe();
                bail!(
                    "slow-joiner probe: only {} of {needed} channels delivered a probe within {:.0} s \
                     (is the server connected to the ZeroMQ endpoint? first missing channels: {:?})",
                    self.shared.probe_channels(),
                    timeout.as_secs_f64(),
                    self.shared.missing_probe_channels(10)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        publisher.stop_probe();
        let took = started.elapsed();
        // Let the last probes drain before measuring.
        client::quiesce(
            &self.shared,
            Duration::from_millis(300),
            Duration::from_secs(5),
        )
        .await;
        Ok(took)
    }

    fn expected(&self, start_n: u64, end_n: u64) -> u64 {
        let subs = self.shared.subs_per_channel.borrow();
        let c = subs.len().max(1) as u64;
        (start_n..end_n)
            .map(|n| subs.get((n % c) as usize).copied().unwrap_or(0))
            .sum()
    }

    async fn round(
        &self,
        publisher: &mut Publisher,
        load: &LoadOpts,
        start_n: &mut u64,
        rate: f64,
    ) -> Result<RoundOutcome> {
        let closed_before = self.shared.closed.get();
        let server0 = self.server_cpu_ticks()?;
        let self0 = procfs::cpu_ticks(Proc::SelfProc)?;
        let inflate0 = self.shared.inflate_counts();
        let wall0 = Instant::now();
        self.shared.round.borrow_mut().begin(
            *start_n,
            publisher::now_ns() + load.duration.as_nanos() as u64,
        );
        let report = publisher.run(*start_n, rate, load.duration).await?;
        *start_n = report.end_n;
        tokio::time::sleep(load.grace).await;
        self.shared.round.borrow_mut().end();
        let server1 = self.server_cpu_ticks()?;
        let self1 = procfs::cpu_ticks(Proc::SelfProc)?;
        let inflate1 = self.shared.inflate_counts();
        let cpu_window = wall0.elapsed();
        let tck = self.clk_tck as f64;
        let r = self.shared.round.borrow();
        let avg = |total: u64| {
            if r.received > 0 {
                total as f64 / r.received as f64
            } else {
                0.0
            }
        };
        Ok(RoundOutcome {
            rate,
            publish: report,
            expected: self.expected(report.start_n, report.end_n),
            received: r.received,
            in_window: r.in_window,
            stale: r.stale,
            snapshots: r.snapshots,
            duplicates: r.duplicates,
            unparsed: r.unparsed,
            compressed: r.compressed,
            inflated: inflate1.0 - inflate0.0,
            inflate_cache_hits: inflate1.1 - inflate0.1,
            avg_wire_bytes: avg(r.wire_bytes),
            avg_message_bytes: avg(r.message_bytes),
            latency: r.hist.summary(),
            cpu_window,
            server_cpu_s: server0
                .zip(server1)
                .map(|(a, b)| b.saturating_sub(a) as f64 / tck),
            self_cpu_s: self1.saturating_sub(self0) as f64 / tck,
            closed_during: self.shared.closed.get() - closed_before,
        })
    }

    fn header_json(&self, mode: &str) -> Value {
        json!({
            "mode": mode,
            "url": self.conn.url,
            "connections": self.conn.connections,
            "channels": self.conn.channels,
            "compress": self.conn.compress,
            "deflate_negotiated": self.shared.deflate.get(),
            "connect_s": self.connect_time.as_secs_f64(),
            "connect_retries": self.shared.retries.get(),
            "server_pid": self.conn.server_pid,
            "clk_tck": self.clk_tck,
            "clk_tck_assumed": self.clk_assumed,
        })
    }

    fn print_header(&self, what: &str) {
        println!(
            "{what}: {} connections over {} channels{}, connected+subscribed in {:.2} s ({} retries)",
            self.conn.connections,
            self.conn.channels,
            if self.conn.compress {
                format!(
                    ", permessage-deflate ({} accepted)",
                    self.shared.deflate.get()
                )
            } else {
                ", uncompressed".into()
            },
            self.connect_time.as_secs_f64(),
            self.shared.retries.get()
        );
        if self.clk_assumed {
            println!("note: getconf CLK_TCK failed, assuming 100 ticks/s");
        }
    }

    fn print_round(&self, o: &RoundOutcome) {
        println!(
            "publishes sent        {} at {:.1}/s (asked {:.1}/s; {} send errors)",
            o.publish.sent,
            o.publish_rate(),
            o.rate,
            o.publish.send_errors
        );
        println!(
            "publisher pacing lag  p99 {:.3} ms, max {:.3} ms (backlog at most {} messages)",
            ms(o.publish.lag_p99_ns),
            ms(o.publish.lag_max_ns),
            o.publish.max_backlog
        );
        println!("expected deliveries   {}", o.expected);
        println!(
            "received deliveries   {} ({} within the publish window; {} stale, {} snapshots, {} duplicates, {} unparsed)",
            o.received, o.in_window, o.stale, o.snapshots, o.duplicates, o.unparsed
        );
        println!("loss                  {:.4} %", o.loss() * 100.0);
        println!("deliveries/s          {:.0}", o.deliveries_per_sec());
        println!(
            "latency ms            p50 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
            ms(o.latency.p50_ns),
            ms(o.latency.p99_ns),
            ms(o.latency.p999_ns),
            ms(o.latency.max_ns),
            ms(o.latency.mean_ns)
        );
        println!(
            "message size          {:.1} B on the wire (frame header included), {:.1} B of text, {} of {} compressed",
            o.avg_wire_bytes, o.avg_message_bytes, o.compressed, o.received
        );
        if o.compressed > 0 {
            println!(
                "inflate               {} payloads inflated, {} identical payloads reused (byte-compared)",
                o.inflated, o.inflate_cache_hits
            );
        }
        match o.server_cpu_s {
            Some(s) => println!(
                "server CPU            {:.2} s over {:.2} s (publish + grace) -> {} µs/delivery",
                s,
                o.cpu_window.as_secs_f64(),
                fmt_opt(o.server_us_per_delivery(), 3)
            ),
            None => println!("server CPU            n/a (no --server-pid)"),
        }
        println!(
            "load tool CPU         {:.2} s -> {} µs/delivery",
            o.self_cpu_s,
            fmt_opt(o.self_us_per_delivery(), 3)
        );
        if o.closed_during > 0 {
            println!(
                "WARNING               {} connections closed during the round",
                o.closed_during
            );
        }
    }

    fn print_rss(&self, after_run: Option<u64>) {
        if self.conn.server_pid.is_none() {
            println!("server RSS            n/a (no --server-pid)");
            return;
        }
        println!(
            "server RSS            before {} / subscribed {}{} -> {} B per connection (subscribed - before)",
            fmt_bytes(self.rss_before),
            fmt_bytes(self.rss_subscribed),
            match after_run {
                Some(a) => format!(" / after run {}", fmt_bytes(Some(a))),
                None => String::new(),
            },
            fmt_opt(self.rss_per_connection(self.rss_subscribed), 0)
        );
    }

    fn rss_json(&self, after_run: Option<u64>) -> Value {
        json!({
            "rss_before_bytes": self.rss_before,
            "rss_subscribed_bytes": self.rss_subscribed,
            "rss_after_run_bytes": after_run,
            "rss_per_connection_bytes": self.rss_per_connection(self.rss_subscribed),
            "rss_per_connection_after_run_bytes": self.rss_per_connection(after_run),
        })
    }
}

fn server_rss(pid: Option<u32>) -> Result<Option<u64>> {
    pid.map(|p| procfs::rss_bytes(Proc::Pid(p))).transpose()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_bytes(v: Option<u64>) -> String {
    match v {
        Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        None => "n/a".into(),
    }
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

/// `sweep`: rising rates until not sustained, then one round at half the
/// best rate.
pub async fn sweep(conn: ConnOpts, load: LoadOpts, opts: SweepOpts) -> Result<()> {
    check_rate(opts.start_rate)?;
    if !opts.step_factor.is_finite() || opts.step_factor <= 1.0 {
        bail!("--step-factor must be > 1");
    }
    let mut publisher = start_publisher(&conn, &load)?;
    let bench = Bench::connect(conn).await?;
    let probe_took = bench.probe(&mut publisher, load.probe_timeout).await?;
    eprintln!(
        "all channels live after {:.2} s of probing",
        probe_took.as_secs_f64()
    );
    let text = !bench.conn.json;
    if text {
        bench.print_header(&format!(
            "sweep, {}-byte messages, {:.0} s rounds, sustained = loss <= {}% and p99 <= {} ms",
            load.size,
            load.duration.as_secs_f64(),
            opts.max_loss * 100.0,
            opts.max_p99_ms
        ));
        println!(
            "{:>5} {:>9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  verdict",
            "round",
            "rate",
            "pub/s",
            "deliv/s",
            "loss%",
            "p50ms",
            "p99ms",
            "maxms",
            "srv_cpu",
            "srv_µs/d",
            "own_µs/d"
        );
    }
    let mut n = 0u64;
    let mut rate = opts.start_rate;
    let mut rounds: Vec<(RoundOutcome, String)> = Vec::new();
    let mut best: Option<RoundOutcome> = None;
    let mut stop_reason = format!("reached --max-rounds {}", opts.max_rounds);
    for i in 1..=opts.max_rounds {
        let o = bench.round(&mut publisher, &load, &mut n, rate).await?;
        let p99_ms = o.latency.p99_ns as f64 / 1e6;
        let mut verdict = String::from("sustained");
        if o.loss() > opts.max_loss {
            verdict = format!("loss {:.4}% > {}%", o.loss() * 100.0, opts.max_loss * 100.0);
        } else if p99_ms > opts.max_p99_ms {
            verdict = format!("p99 {p99_ms:.1} ms > {} ms", opts.max_p99_ms);
        } else if o.closed_during > 0 {
            verdict = format!("{} connections closed", o.closed_during);
        } else if o.publish_rate() < 0.97 * rate {
            verdict = format!("publisher reached only {:.0}/s", o.publish_rate());
        } else if let Some(b) = &best {
            if o.deliveries_per_sec() < 1.02 * b.deliveries_per_sec() {
                verdict = "delivery rate stopped rising".into();
            }
        }
        let ok = verdict == "sustained";
        if text {
            println!(
                "{:>5} {:>9.0} {:>9.0} {:>10.0} {:>9.4} {:>9.3} {:>9.3} {:>9.3} {:>9} {:>8} {:>8}  {}",
                i,
                rate,
                o.publish_rate(),
                o.deliveries_per_sec(),
                o.loss() * 100.0,
                ms(o.latency.p50_ns),
                ms(o.latency.p99_ns),
                ms(o.latency.max_ns),
                fmt_opt(o.server_cpu_s, 2),
                fmt_opt(o.server_us_per_delivery(), 2),
                fmt_opt(o.self_us_per_delivery(), 2),
                verdict
            );
        }
        rounds.push((o.clone(), verdict.clone()));
        if !ok {
            stop_reason = verdict;
            break;
        }
        best = Some(o);
        if rate >= opts.max_rate {
            stop_reason = format!("reached --max-rate {}", opts.max_rate);
            break;
        }
        rate = (rate * opts.step_factor).min(opts.max_rate);
        client::quiesce(
            &bench.shared,
            Duration::from_millis(500),
            Duration::from_secs(10),
        )
        .await;
    }
    let Some(best) = best else {
        if !text {
            let mut v = bench.header_json("sweep");
            v["rounds"] = rounds_json(&rounds);
            v["stop_reason"] = json!(stop_reason);
            v["best"] = Value::Null;
            println!("{v}");
        }
        bail!(
            "not even the start rate {} was sustained ({stop_reason}); lower --start-rate",
            opts.start_rate
        );
    };
    // Let any backlog of the failed round drain before the half-rate round.
    if !client::quiesce(
        &bench.shared,
        Duration::from_secs(1),
        Duration::from_secs(30),
    )
    .await
    {
        eprintln!("warning: server still delivering 30 s after the last round");
    }
    let half_rate = best.rate / 2.0;
    let half = bench
        .round(&mut publisher, &load, &mut n, half_rate)
        .await?;
    let rss_after = server_rss(bench.conn.server_pid)?;
    if text {
        println!("stopped: {stop_reason}");
        println!(
            "highest sustained     {:.0} publishes/s = {:.0} deliveries/s (loss {:.4} %, p99 {:.3} ms, server {} µs/delivery, load tool {} µs/delivery)",
            best.rate,
            best.deliveries_per_sec(),
            best.loss() * 100.0,
            ms(best.latency.p99_ns),
            fmt_opt(best.server_us_per_delivery(), 3),
            fmt_opt(best.self_us_per_delivery(), 3)
        );
        println!(
            "at half that rate     {:.0} publishes/s = {:.0} deliveries/s: p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, loss {:.4} %",
            half_rate,
            half.deliveries_per_sec(),
            ms(half.latency.p50_ns),
            ms(half.latency.p99_ns),
            ms(half.latency.p999_ns),
            ms(half.latency.max_ns),
            half.loss() * 100.0
        );
        println!("half-rate round in detail:");
        bench.print_round(&half);
        bench.print_rss(rss_after);
    } else {
        let mut v = bench.header_json("sweep");
        v["size"] = json!(load.size);
        v["rounds"] = rounds_json(&rounds);
        v["stop_reason"] = json!(stop_reason);
        v["best"] = best.to_json();
        v["half_rate"] = half.to_json();
        v["server_rss"] = bench.rss_json(rss_after);
        println!("{v}");
    }
    Ok(())
}

fn rounds_json(rounds: &[(RoundOutcome, String)]) -> Value {
    Value::Array(
        rounds
            .iter()
            .map(|(o, verdict)| {
                let mut v = o.to_json();
                v["verdict"] = json!(verdict);
                v
            })
            .collect(),
    )
}
