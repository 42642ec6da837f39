//! Latency rounds: the paced publisher, one round against the direct or the
//! relay target, and the report comparing the two.

use super::config::Config;
use super::cpu::{cpu_json, cpu_text, own_thread_ticks, CpuProbe, CpuUse};
use super::data::{write_data, EVENT};
use super::relay_stats::{
    get_stats, relay_baseline, wait_subscribed, wait_unsubscribed, RelayStats,
};
use super::round::{connect_publisher, join, Shared, StopOnDrop};
use super::round1;
use super::sink::{open_sink, Sink, SinkReport, Target};
use crate::stats::Histogram;
use anyhow::{Context, Result};
use pushfleet_server::publisher::{Publisher, PublisherError};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

/// How long a paced publish may block on a full queue before it is given up.
const LATENCY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

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
pub(super) struct LatencyResult {
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

pub(super) fn latency_round(cfg: &Config, target: Target) -> Result<LatencyResult> {
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

pub(super) fn report_latency(
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
