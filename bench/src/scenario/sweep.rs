//! `sweep`: rounds at rising rates on the same connections until one is not
//! sustained (too much loss or latency, a connection closed, the publisher
//! fell behind, or the delivery rate stopped rising), then one round at half
//! the highest sustained rate.

use super::bench::{server_rss, Bench};
use super::report::{fmt_opt, rounds_json};
use super::{check_rate, start_publisher, ConnOpts, LoadOpts, RoundOutcome};
use crate::client;
use crate::stats::ms;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::time::Duration;

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
