//! The edge's load report: what herald balances on, kept in etcd.
//!
//! Every `--load-interval` the edge samples its own counters (rates over the
//! interval), its process CPU and RSS (sysinfo, refreshing only this process), and
//! its drain state into a [`LoadReport`], and rewrites `<prefix>/edges/<id>` under
//! its lease. A dead edge vanishes when the lease expires; an etcd outage never
//! stops the edge from serving, and the record is put back when etcd returns
//! ([`pushfleet_fleet::etcd::keep_registered`]). A change to draining is reported at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pushfleet_protocol::registry::{edge_key, EdgeState, LoadReport};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::watch;
use tracing::warn;

use super::catalogue::EdgeSnapshot;
use super::metrics::Metrics;
use crate::edge::state::Shared;
use pushfleet_fleet::etcd;

/// Cumulative counters a rate is computed from.
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    msgs_in: u64,
    msgs_out: u64,
    dropped: u64,
}

impl Totals {
    fn read(s: &EdgeSnapshot) -> Self {
        Self {
            msgs_in: s.ingress_received,
            msgs_out: s.workers.delivered,
            dropped: s.losses(),
        }
    }
}

/// Samples this process and the edge's counters.
pub struct Sampler {
    system: Option<System>,
    pid: Option<Pid>,
    cpus: u32,
    previous: Totals,
    previous_at: Instant,
}

impl Sampler {
    pub fn new(metrics: &Metrics) -> Self {
        let pid = sysinfo::get_current_pid().ok();
        let system = System::new().ok();
        if system.is_none() || pid.is_none() {
            warn!("cannot read process CPU and memory; reporting 0");
        }
        let mut sampler = Self {
            system,
            pid,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            previous: Totals::read(&EdgeSnapshot::read(metrics, false)),
            previous_at: Instant::now(),
        };
        // CPU usage is a difference of two samples: take the first now.
        sampler.process();
        sampler
    }

    /// (CPU in cores since the last call, RSS bytes).
    fn process(&mut self) -> (f64, u64) {
        let (Some(system), Some(pid)) = (self.system.as_mut(), self.pid) else {
            return (0.0, 0);
        };
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        system
            .process(pid)
            .map_or((0.0, 0), |p| (f64::from(p.cpu_usage()) / 100.0, p.memory()))
    }

    /// A report of the interval since the previous call.
    pub fn sample(&mut self, shared: &Shared, id: &str, address: &str) -> LoadReport {
        let draining = shared.drain.is_draining();
        let s = EdgeSnapshot::read(&shared.metrics, draining);
        let now = Totals::read(&s);
        let elapsed = self.previous_at.elapsed().as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / elapsed;
        let (cpu, rss_bytes) = self.process();
        let report = LoadReport {
            id: id.to_owned(),
            address: address.to_owned(),
            state: if draining {
                EdgeState::Draining
            } else {
                EdgeState::Ready
            },
            connections: s.connections,
            max_connections: shared.config.max_connections as u64,
            subscriptions: s.subscriptions,
            channels: s.channels,
            cpu,
            cpus: self.cpus,
            rss_bytes,
            msgs_in_per_s: rate(now.msgs_in, self.previous.msgs_in),
            msgs_out_per_s: rate(now.msgs_out, self.previous.msgs_out),
            dropped_per_s: rate(now.dropped, self.previous.dropped),
            queue_depth: s.workers.queue_depth(),
            p99_us: s.latency.p99_us,
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        self.previous = now;
        self.previous_at = Instant::now();
        report
    }
}

/// Where and how often to report.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub etcd: Vec<String>,
    pub prefix: String,
    pub id: String,
    pub address: String,
    pub interval: Duration,
    pub lease_ttl: Duration,
}

/// Keeps the edge's load report in etcd until `shutdown`.
pub async fn report(shared: Arc<Shared>, reporting: Reporting, shutdown: watch::Receiver<bool>) {
    let mut sampler = Sampler::new(&shared.metrics);
    let first = sampler.sample(&shared, &reporting.id, &reporting.address);
    let (value_tx, value_rx) = watch::channel(to_json(&first));
    let key = edge_key(&reporting.prefix, &reporting.id);
    let registration = etcd::keep_registered(
        reporting.etcd.clone(),
        key,
        value_rx,
        reporting.lease_ttl,
        shutdown.clone(),
    );
    let sampling = async {
        let mut tick = tokio::time::interval(reporting.interval);
        let mut draining = shared.drain.watch();
        let mut watching = true;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // Report the switch to draining at once, not at the next tick.
                changed = draining.changed(), if watching => watching = changed.is_ok(),
            }
            let report = sampler.sample(&shared, &reporting.id, &reporting.address);
            value_tx.send_replace(to_json(&report));
        }
    };
    tokio::select! {
        _ = registration => {}
        _ = sampling => {}
    }
}

fn to_json(report: &LoadReport) -> String {
    serde_json::to_string(report).unwrap_or_default()
}
