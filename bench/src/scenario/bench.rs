//! The setup every scenario shares and the measured round.
//!
//! [`Bench::connect`] resolves the URL, reads the server's baseline RSS and
//! opens and subscribes every connection; [`Bench::probe`] waits out the
//! ZeroMQ slow-joiner window; [`Bench::round`] runs one measured round.

use super::{ConnOpts, LoadOpts, RoundOutcome};
use crate::client::{self, ClientConfig, Shared};
use crate::procfs::{self, Proc};
use crate::publisher::{self, Publisher};
use crate::ws::WsUrl;
use anyhow::{anyhow, bail, Context, Result};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Connected and subscribed connections, with the readings taken on the way.
pub(super) struct Bench {
    pub(super) conn: ConnOpts,
    pub(super) shared: Rc<Shared>,
    pub(super) clk_tck: u64,
    pub(super) clk_assumed: bool,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_subscribed: Option<u64>,
    pub(super) connect_time: Duration,
}

impl Bench {
    /// Resolves the URL, reads the server's baseline RSS, opens and
    /// subscribes every connection.
    pub(super) async fn connect(conn: ConnOpts) -> Result<Bench> {
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

    pub(super) fn rss_per_connection(&self, after: Option<u64>) -> Option<f64> {
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
    pub(super) async fn probe(
        &self,
        publisher: &mut Publisher,
        timeout: Duration,
    ) -> Result<Duration> {
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

    pub(super) async fn round(
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
            if r.counts.received > 0 {
                total as f64 / r.counts.received as f64
            } else {
                0.0
            }
        };
        Ok(RoundOutcome {
            rate,
            publish: report,
            expected: self.expected(report.start_n, report.end_n),
            counts: r.counts,
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
}

/// The server's RSS, if its PID is known.
pub(super) fn server_rss(pid: Option<u32>) -> Result<Option<u64>> {
    pid.map(|p| procfs::rss_bytes(Proc::Pid(p))).transpose()
}
