//! From load reports to weights: the policy, with no I/O.
//!
//! **Load.** Each signal of a report is divided by its capacity, so 1.0 means "at
//! capacity": CPU (cores busy / cores usable), deliveries per second, connections
//! (of `max_connections`), send-queue depth, p99 publish-to-socket latency, RSS. The
//! edge's load is the weighted mean of those, smoothed over evaluations
//! (`L = s·L_previous + (1 − s)·load`).
//!
//! **Weight.** Feedback, not a formula: every evaluation each serving edge's level is
//! multiplied by `(mean load / edge load)^gain` (a small constant added to both
//! loads so idle edges do not divide by zero; differences under 5% ignored), the
//! levels are scaled so their mean is 100%, and clamped to `[floor, ceiling]`. An
//! edge hotter than the fleet keeps losing weight, a cooler one keeps gaining, for
//! as long as the difference lasts, and weights hold once loads are even. A plain
//! `100% × mean / load` would not do: HAProxy's `leastconn` divides connection
//! counts by weights, and idle connections count in full, so a one-shot weight
//! leaves an edge full of idle sockets under-used (measured in
//! `docs/BENCHMARKS.md`, "Balance"). The floor keeps every healthy edge in rotation
//! even when the whole fleet is over capacity; the ceiling is HAProxy's limit
//! (256%). A published weight moves only by at least `hysteresis` points.
//!
//! **States.** A draining edge is `drain` (HAProxy sends it nothing new). An edge
//! whose report stopped changing for `stale_after` is `stale` and gets the floor: it
//! may be alive but cannot say how loaded it is. When no report at all changed for
//! `stale_after`, etcd itself is presumed unreachable: [`Evaluator::evaluate`] then
//! holds every weight (fail-static) instead of flooring the whole fleet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pushfleet_protocol::registry::{EdgeState, LoadReport};
use serde::Serialize;

/// Added to loads before dividing: below ~5% of capacity, differences are noise.
const IDLE: f64 = 0.05;
/// Load ratios this close to 1 count as even: no weight change on noise.
const DEAD_BAND: f64 = 0.05;
/// The level a new edge starts at.
const START: f64 = 100.0;

/// Relative weight of each signal in the load score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalWeights {
    pub cpu: f64,
    pub msgs_out: f64,
    pub connections: f64,
    pub queue: f64,
    pub p99: f64,
    pub memory: f64,
}

impl Default for SignalWeights {
    /// CPU is the truest measure of an edge's work; deliveries per second follow it
    /// closely; connections matter only near the edge's limit; queues, latency and
    /// memory flag trouble early.
    fn default() -> Self {
        Self {
            cpu: 0.4,
            msgs_out: 0.25,
            connections: 0.1,
            queue: 0.1,
            p99: 0.1,
            memory: 0.05,
        }
    }
}

/// What counts as 100% for the signals that have no natural maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub msgs_out_per_s: f64,
    pub queue_depth: f64,
    pub p99_us: f64,
    pub rss_mib: f64,
}

impl Default for Capacity {
    /// Sized for the 2-core machines of `docs/BENCHMARKS.md`: ~50k low-latency
    /// deliveries/s per core, a 50 ms p99 budget, 4 GiB per edge.
    fn default() -> Self {
        Self {
            msgs_out_per_s: 100_000.0,
            queue_depth: 50_000.0,
            p99_us: 50_000.0,
            rss_mib: 4096.0,
        }
    }
}

/// The whole policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub weights: SignalWeights,
    pub capacity: Capacity,
    pub floor: u32,
    pub ceiling: u32,
    pub smoothing: f64,
    /// How fast levels follow a load difference: the exponent of the ratio applied
    /// per evaluation (1: all at once, which overshoots; 0.5 settles in a few rounds).
    pub gain: f64,
    pub hysteresis: u32,
    pub stale_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            weights: SignalWeights::default(),
            capacity: Capacity::default(),
            floor: 10,
            ceiling: 256,
            smoothing: 0.5,
            gain: 0.5,
            hysteresis: 5,
            stale_after: Duration::from_secs(5),
        }
    }
}

/// Each signal as a fraction of capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Signals {
    pub cpu: f64,
    pub msgs_out: f64,
    pub connections: f64,
    pub queue: f64,
    pub p99: f64,
    pub memory: f64,
}

impl Signals {
    pub fn of(report: &LoadReport, capacity: &Capacity) -> Self {
        let ratio = |value: f64, cap: f64| if cap > 0.0 { value / cap } else { 0.0 };
        Self {
            cpu: ratio(report.cpu, f64::from(report.cpus.max(1))),
            msgs_out: ratio(report.msgs_out_per_s, capacity.msgs_out_per_s),
            connections: ratio(report.connections as f64, report.max_connections as f64),
            queue: ratio(report.queue_depth as f64, capacity.queue_depth),
            p99: ratio(report.p99_us as f64, capacity.p99_us),
            memory: ratio(report.rss_bytes as f64 / 1_048_576.0, capacity.rss_mib),
        }
    }

    /// The weighted mean.
    pub fn load(&self, w: &SignalWeights) -> f64 {
        let total = w.cpu + w.msgs_out + w.connections + w.queue + w.p99 + w.memory;
        if total <= 0.0 {
            return 0.0;
        }
        (w.cpu * self.cpu
            + w.msgs_out * self.msgs_out
            + w.connections * self.connections
            + w.queue * self.queue
            + w.p99 * self.p99
            + w.memory * self.memory)
            / total
    }
}

/// How HAProxy should treat an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// In rotation at `percent`.
    Ready,
    /// The edge is draining: no new connections.
    Drain,
    /// No fresh report: in rotation at the floor.
    Stale,
}

/// herald's view of one edge after an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeView {
    pub id: String,
    pub address: String,
    pub verdict: Verdict,
    /// Weight in percent of the configured weight (0 when draining).
    pub percent: u32,
    /// The continuous weight the feedback loop carries between evaluations.
    pub level: f64,
    /// Smoothed load, 1.0 = at capacity.
    pub load: f64,
    pub signals: Signals,
    pub report: LoadReport,
}

impl EdgeView {
    /// The HAProxy 2.6 agent-check reply for this edge.
    pub fn agent_reply(&self) -> String {
        match self.verdict {
            Verdict::Drain => "drain\n".to_owned(),
            Verdict::Ready | Verdict::Stale => format!("{}% ready\n", self.percent),
        }
    }
}

/// A weight or state that changed, with why.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub id: String,
    pub from: Option<(Verdict, u32)>,
    pub to: (Verdict, u32),
    pub reason: String,
}

/// One report as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub report: LoadReport,
    /// When herald last saw this edge's report change.
    pub changed_at: Instant,
}

/// Carries smoothed loads and current weights from one evaluation to the next.
#[derive(Debug, Default)]
pub struct Evaluator {
    views: BTreeMap<String, EdgeView>,
    /// Whether the last evaluation held everything (etcd presumed unreachable).
    pub holding: bool,
}

impl Evaluator {
    /// The current view of every edge.
    pub fn views(&self) -> &BTreeMap<String, EdgeView> {
        &self.views
    }

    /// Evaluates the fleet as reported; returns what changed.
    pub fn evaluate(
        &mut self,
        policy: &Policy,
        fleet: &BTreeMap<String, Received>,
        now: Instant,
    ) -> Vec<Change> {
        let fresh = |r: &Received| now.duration_since(r.changed_at) < policy.stale_after;
        // Fail-static: nothing anywhere moved; assume we lost etcd, not the fleet.
        if !fleet.is_empty() && !fleet.values().any(fresh) {
            self.holding = true;
            return Vec::new();
        }
        self.holding = false;
        self.views.retain(|id, _| fleet.contains_key(id));

        // Smoothed loads first: the weights are relative to the fleet's mean.
        let mut loads: BTreeMap<&str, (f64, Signals)> = BTreeMap::new();
        for (id, received) in fleet {
            let signals = Signals::of(&received.report, &policy.capacity);
            let raw = signals.load(&policy.weights);
            let load = match self.views.get(id) {
                Some(v) => policy.smoothing * v.load + (1.0 - policy.smoothing) * raw,
                None => raw,
            };
            loads.insert(id, (load, signals));
        }
        let serving: Vec<f64> = fleet
            .iter()
            .filter(|(_, r)| fresh(r) && r.report.state == EdgeState::Ready)
            .map(|(id, _)| loads[id.as_str()].0)
            .collect();
        let mean = if serving.is_empty() {
            0.0
        } else {
            serving.iter().sum::<f64>() / serving.len() as f64
        };

        // Feedback on the serving edges' levels, then scaled to a mean of 100%.
        let mut levels: BTreeMap<&str, f64> = BTreeMap::new();
        for (id, received) in fleet {
            if !fresh(received) || received.report.state != EdgeState::Ready {
                continue;
            }
            let (load, _) = loads[id.as_str()];
            let mut ratio = (mean + IDLE) / (load + IDLE);
            if (ratio - 1.0).abs() < DEAD_BAND {
                ratio = 1.0;
            }
            let previous = self.views.get(id).map_or(START, |v| v.level);
            levels.insert(id, previous.max(1.0) * ratio.powf(policy.gain));
        }
        if !levels.is_empty() {
            let scale = 100.0 * levels.len() as f64 / levels.values().sum::<f64>();
            for level in levels.values_mut() {
                *level = (*level * scale).clamp(f64::from(policy.floor), f64::from(policy.ceiling));
            }
        }

        let mut changes = Vec::new();
        for (id, received) in fleet {
            let (load, signals) = loads[id.as_str()];
            let previous = self.views.get(id).map(|v| (v.verdict, v.percent));
            let level = levels.get(id.as_str()).copied();
            let (verdict, target, reason) = if received.report.state == EdgeState::Draining {
                (Verdict::Drain, 0, "the edge is draining".to_owned())
            } else if !fresh(received) {
                (
                    Verdict::Stale,
                    policy.floor,
                    format!("no fresh report for {:?}", policy.stale_after),
                )
            } else {
                (
                    Verdict::Ready,
                    level.unwrap_or(START).round() as u32,
                    format!("load {load:.2} against a fleet mean of {mean:.2}"),
                )
            };
            let percent = match previous {
                Some((Verdict::Ready, current))
                    if verdict == Verdict::Ready
                        && current.abs_diff(target) < policy.hysteresis =>
                {
                    current
                }
                _ => target,
            };
            if previous != Some((verdict, percent)) {
                changes.push(Change {
                    id: id.clone(),
                    from: previous,
                    to: (verdict, percent),
                    reason,
                });
            }
            self.views.insert(
                id.clone(),
                EdgeView {
                    id: id.clone(),
                    address: received.report.address.clone(),
                    verdict,
                    percent,
                    level: level.unwrap_or(START),
                    load,
                    signals,
                    report: received.report.clone(),
                },
            );
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, cpu: f64, msgs_out: f64) -> LoadReport {
        let mut r = crate::policy::fixtures::report(id, 8000 + id.len() as u16);
        (r.cpu, r.msgs_out_per_s) = (cpu, msgs_out);
        (r.connections, r.subscriptions, r.channels) = (100, 100, 10);
        (r.rss_bytes, r.msgs_in_per_s, r.p99_us) = (50 << 20, 10.0, 1000);
        r
    }

    fn fleet(reports: Vec<LoadReport>, at: Instant) -> BTreeMap<String, Received> {
        reports
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Received {
                        report: r,
                        changed_at: at,
                    },
                )
            })
            .collect()
    }

    fn no_smoothing() -> Policy {
        Policy {
            smoothing: 0.0,
            ..Policy::default()
        }
    }

    #[test]
    fn a_hot_edge_gets_less_and_cool_ones_more() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        let f = fleet(
            vec![
                report("hot", 0.9, 80_000.0),
                report("a", 0.2, 10_000.0),
                report("b", 0.2, 10_000.0),
            ],
            now,
        );
        e.evaluate(&no_smoothing(), &f, now);
        let first = e.views()["hot"].percent;
        assert!(first < 100, "{first}");
        // Feedback: while the difference lasts, the weights keep moving.
        e.evaluate(&no_smoothing(), &f, now);
        let v = e.views();
        assert!(
            v["hot"].percent < first,
            "{} then {}",
            first,
            v["hot"].percent
        );
        assert!(v["hot"].percent < 50, "{}", v["hot"].percent);
        assert!(v["a"].percent > 120, "{}", v["a"].percent);
        assert_eq!(v["a"].percent, v["b"].percent);
        assert_eq!(
            v["hot"].agent_reply(),
            format!("{}% ready\n", v["hot"].percent)
        );
    }

    #[test]
    fn weights_hold_once_loads_are_even() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        let uneven = fleet(
            vec![report("a", 0.9, 50_000.0), report("b", 0.1, 100.0)],
            now,
        );
        for _ in 0..3 {
            e.evaluate(&no_smoothing(), &uneven, now);
        }
        let skewed: Vec<u32> = e.views().values().map(|v| v.percent).collect();
        assert!(skewed[0] < skewed[1], "{skewed:?}");
        let even = fleet(
            vec![report("a", 0.5, 1000.0), report("b", 0.5, 1000.0)],
            now,
        );
        for _ in 0..3 {
            assert!(e.evaluate(&no_smoothing(), &even, now).is_empty());
        }
        let held: Vec<u32> = e.views().values().map(|v| v.percent).collect();
        assert_eq!(skewed, held);
        let mean = held.iter().sum::<u32>() as f64 / 2.0;
        assert!(
            (95.0..=105.0).contains(&mean),
            "levels stay centred on 100%: {held:?}"
        );
    }

    #[test]
    fn an_even_fleet_stays_at_one_hundred() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        let f = fleet(
            vec![report("a", 0.5, 1000.0), report("b", 0.5, 1000.0)],
            now,
        );
        e.evaluate(&Policy::default(), &f, now);
        assert!(e.views().values().all(|v| v.percent == 100));
    }

    #[test]
    fn the_floor_holds_when_the_whole_fleet_is_over_capacity() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        let policy = Policy {
            floor: 60,
            ..no_smoothing()
        };
        let mut hot = report("hot", 1.0, 900_000.0);
        hot.queue_depth = 500_000;
        hot.p99_us = 5_000_000;
        let mut busy = report("busy", 1.0, 300_000.0);
        busy.p99_us = 200_000;
        let f = fleet(vec![hot, busy], now);
        e.evaluate(&policy, &f, now);
        let v = e.views();
        assert!(v.values().all(|v| v.load > 1.0), "both over capacity");
        assert_eq!(v["hot"].percent, 60, "clamped to the floor, never 0");
        assert!(v["busy"].percent > 100);
    }

    #[test]
    fn hysteresis_ignores_small_moves_and_smoothing_slows_big_ones() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        let policy = Policy::default();
        let f = fleet(
            vec![report("a", 0.5, 1000.0), report("b", 0.5, 1000.0)],
            now,
        );
        e.evaluate(&policy, &f, now);
        // A small wobble: no change.
        let f = fleet(
            vec![report("a", 0.52, 1000.0), report("b", 0.5, 1000.0)],
            now,
        );
        assert!(e.evaluate(&policy, &f, now).is_empty());
        // A jump moves the weight, but smoothing takes several rounds to get there.
        let jump = || {
            fleet(
                vec![report("a", 1.0, 50_000.0), report("b", 0.2, 1000.0)],
                now,
            )
        };
        let first = e.evaluate(&policy, &jump(), now);
        assert_eq!(first.len(), 2, "{first:?}");
        let after_one = e.views()["a"].percent;
        for _ in 0..10 {
            e.evaluate(&policy, &jump(), now);
        }
        let settled = e.views()["a"].percent;
        assert!(settled < after_one, "{after_one} -> {settled}");
    }

    #[test]
    fn draining_and_stale_edges() {
        let t0 = Instant::now();
        let policy = Policy::default();
        let mut e = Evaluator::default();
        let mut draining = report("d", 0.1, 0.0);
        draining.state = EdgeState::Draining;
        let mut f = fleet(vec![draining, report("a", 0.5, 1000.0)], t0);
        let later = t0 + policy.stale_after + Duration::from_secs(1);
        // "s" stopped reporting long ago; "a" and "d" are fresh.
        f.insert(
            "s".into(),
            Received {
                report: report("s", 0.0, 0.0),
                changed_at: t0,
            },
        );
        for r in ["a", "d"] {
            f.get_mut(r).unwrap().changed_at = later;
        }
        e.evaluate(&policy, &f, later);
        let v = e.views();
        assert_eq!(
            (v["d"].verdict, v["d"].agent_reply().as_str()),
            (Verdict::Drain, "drain\n")
        );
        assert_eq!(
            (v["s"].verdict, v["s"].percent),
            (Verdict::Stale, policy.floor)
        );
        assert_eq!(v["a"].verdict, Verdict::Ready);
        assert!(!e.holding);
    }

    #[test]
    fn nothing_fresh_anywhere_holds_every_weight() {
        let t0 = Instant::now();
        let policy = Policy::default();
        let mut e = Evaluator::default();
        let f = fleet(
            vec![report("hot", 0.9, 80_000.0), report("a", 0.1, 100.0)],
            t0,
        );
        e.evaluate(&no_smoothing(), &f, t0);
        let before: Vec<u32> = e.views().values().map(|v| v.percent).collect();
        let much_later = t0 + policy.stale_after * 3;
        assert!(e.evaluate(&policy, &f, much_later).is_empty());
        assert!(e.holding);
        let after: Vec<u32> = e.views().values().map(|v| v.percent).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn gone_edges_are_forgotten() {
        let now = Instant::now();
        let mut e = Evaluator::default();
        e.evaluate(
            &Policy::default(),
            &fleet(vec![report("a", 0.1, 0.0), report("b", 0.1, 0.0)], now),
            now,
        );
        e.evaluate(
            &Policy::default(),
            &fleet(vec![report("a", 0.1, 0.0)], now),
            now,
        );
        assert_eq!(e.views().keys().collect::<Vec<_>>(), ["a"]);
    }
}
