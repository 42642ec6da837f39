//! How results are shown: the JSON objects (`--json`) and the text report
//! lines shared by the scenarios (header, one round in detail, server RSS).
//! The sweep's per-round table stays with the sweep.

use super::bench::Bench;
use super::RoundOutcome;
use crate::stats::ms;
use serde_json::{json, Value};

impl RoundOutcome {
    /// The round as one JSON object.
    pub(super) fn to_json(&self) -> Value {
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
            "received_deliveries": self.counts.received,
            "received_in_window": self.counts.in_window,
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
            "compressed_deliveries": self.counts.compressed,
            "inflated": self.inflated,
            "inflate_cache_hits": self.inflate_cache_hits,
            "stale": self.counts.stale,
            "snapshots": self.counts.snapshots,
            "duplicates": self.counts.duplicates,
            "unparsed": self.counts.unparsed,
            "connections_closed": self.closed_during,
        })
    }
}

impl Bench {
    pub(super) fn header_json(&self, mode: &str) -> Value {
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

    pub(super) fn print_header(&self, what: &str) {
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

    pub(super) fn print_round(&self, o: &RoundOutcome) {
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
            o.counts.received,
            o.counts.in_window,
            o.counts.stale,
            o.counts.snapshots,
            o.counts.duplicates,
            o.counts.unparsed
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
            o.avg_wire_bytes, o.avg_message_bytes, o.counts.compressed, o.counts.received
        );
        if o.counts.compressed > 0 {
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

    pub(super) fn print_rss(&self, after_run: Option<u64>) {
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

    pub(super) fn rss_json(&self, after_run: Option<u64>) -> Value {
        json!({
            "rss_before_bytes": self.rss_before,
            "rss_subscribed_bytes": self.rss_subscribed,
            "rss_after_run_bytes": after_run,
            "rss_per_connection_bytes": self.rss_per_connection(self.rss_subscribed),
            "rss_per_connection_after_run_bytes": self.rss_per_connection(after_run),
        })
    }
}

/// The sweep's rounds, each with its verdict.
pub(super) fn rounds_json(rounds: &[(RoundOutcome, String)]) -> Value {
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

/// `v` with `decimals` decimals, or `n/a`.
pub(super) fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

/// `v` in MiB with one decimal, or `n/a`.
pub(super) fn fmt_bytes(v: Option<u64>) -> String {
    match v {
        Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        None => "n/a".into(),
    }
}
