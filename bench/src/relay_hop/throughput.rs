//! The throughput round: unpaced publishers through the relay, the relay's
//! rates over the window, the drain, and the report with its limit hint.

use super::config::Config;
use super::cpu::{cpu_json, cpu_text, CpuProbe, CpuUse};
use super::data::{write_data, EVENT};
use super::relay_stats::{
    get_stats, relay_baseline, wait_subscribed, wait_unsubscribed, RelayStats,
};
use super::round::{connect_publisher, join, Shared, StopOnDrop};
use super::round1;
use super::sink::{open_sink, Sink, SinkReport, Target};
use anyhow::{Context, Result};
use pushfleet_server::publisher::{Publisher, PublisherError};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::{Duration, Instant};

/// How long an unpaced publish may block on a full queue before it counts as a stall.
pub const THROUGHPUT_SEND_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest drain after an unpaced round, whatever `--grace` says.
const MAX_DRAIN: Duration = Duration::from_secs(60);

pub(super) struct ThroughputResult {
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

pub(super) fn throughput_round(cfg: &Config) -> Result<ThroughputResult> {
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

pub(super) fn report_throughput(
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
