//! herald's metric catalogue: the one table that names every figure herald exports,
//! rendered as `GET /metrics` and as the StatsD report sent every evaluation
//! (`<prefix>.herald.<herald id>.<name>`; documented in `monitoring/METRICS.md`).
//! The figures themselves live in [`State`], written by the tasks that count them.

use cadence::StatsdClient;
use pushfleet_fleet::catalogue::{self, Metric, Reading, StatsdReport, PERMILLE};
use pushfleet_fleet::prometheus::Exposition;

use crate::state::{Counters, State, LIFECYCLE_EVENTS, SCALE_ACTIONS};

/// Scaling steps as the status page records them (`ScaleEvent::step`).
pub const SCALE_STEPS: [&str; 5] = [
    "scale_out",
    "scale_in",
    "release",
    "lifecycle_drain",
    "lifecycle_complete",
];

/// herald's figures at one moment.
#[derive(Debug, Clone, Default)]
pub struct HeraldSnapshot {
    /// (edge id, weight percent, load ‰), by edge id.
    pub edges: Vec<(String, u64, u64)>,
    pub leader: bool,
    pub holding: bool,
    pub decisions: u64,
    pub agent_checks: u64,
    pub pushes: u64,
    pub push_errors: u64,
    pub scale_steps: [u64; SCALE_STEPS.len()],
    pub counters: Counters,
}

impl HeraldSnapshot {
    pub fn read(s: &State) -> Self {
        Self {
            edges: s
                .views
                .values()
                .map(|v| {
                    let permille = (v.load * 1000.0).clamp(0.0, u64::MAX as f64) as u64;
                    (v.id.clone(), u64::from(v.percent), permille)
                })
                .collect(),
            leader: s.leader,
            holding: s.holding,
            decisions: s.decisions,
            agent_checks: s.agent_checks,
            pushes: s.pushes,
            push_errors: s.push_errors,
            scale_steps: SCALE_STEPS.map(|step| s.scale_steps.get(step).copied().unwrap_or(0)),
            counters: s.counters,
        }
    }
}

fn one(v: u64) -> Reading {
    Reading::One(v)
}

/// herald's metrics.
pub static CATALOGUE: &[Metric<HeraldSnapshot>] = &[
    Metric::gauge(
        "weight",
        "percent",
        "The edge's weight, percent of its configured HAProxy weight.",
        |s: &HeraldSnapshot| {
            Reading::Keyed(s.edges.iter().map(|(id, w, _)| (id.clone(), *w)).collect())
        },
    )
    .by_key("edge")
    .prometheus_as("weight_percent"),
    Metric::gauge(
        "load_permille",
        PERMILLE,
        "The edge's smoothed load score, 1 = at capacity.",
        |s: &HeraldSnapshot| {
            Reading::Keyed(s.edges.iter().map(|(id, _, l)| (id.clone(), *l)).collect())
        },
    )
    .by_key("edge")
    .prometheus_as("load"),
    Metric::gauge(
        "edges",
        "edges",
        "Edges with a report in etcd.",
        |s: &HeraldSnapshot| one(s.edges.len() as u64),
    ),
    Metric::gauge(
        "leader",
        "0/1",
        "1 on the instance that leads.",
        |s: &HeraldSnapshot| one(u64::from(s.leader)),
    ),
    Metric::gauge(
        "holding",
        "0/1",
        "1 while no report anywhere is fresh (weights held).",
        |s: &HeraldSnapshot| one(u64::from(s.holding)),
    ),
    Metric::counter(
        "decisions",
        "changes",
        "Weight or state changes decided.",
        |s: &HeraldSnapshot| one(s.decisions),
    ),
    Metric::counter(
        "agent_checks",
        "checks",
        "HAProxy agent checks answered.",
        |s: &HeraldSnapshot| one(s.agent_checks),
    )
    .no_statsd(),
    Metric::counter(
        "haproxy.pushes",
        "changes",
        "Runtime API changes HAProxy accepted (leader).",
        |s: &HeraldSnapshot| one(s.pushes),
    ),
    Metric::counter(
        "haproxy.push_errors",
        "changes",
        "Runtime API changes HAProxy refused (leader).",
        |s: &HeraldSnapshot| one(s.push_errors),
    ),
    Metric::counter(
        "scale",
        "steps",
        "Scaling actions started, by action (leader).",
        |s: &HeraldSnapshot| Reading::Each(s.counters.scale_started.to_vec()),
    )
    .by("action", &SCALE_ACTIONS)
    .no_prometheus(),
    Metric::counter(
        "scale.failures",
        "steps",
        "Actuator steps that failed.",
        |s: &HeraldSnapshot| one(s.counters.scale_failures),
    )
    .no_prometheus(),
    Metric::counter(
        "lifecycle",
        "events",
        "Termination-hook events, by event.",
        |s: &HeraldSnapshot| Reading::Each(s.counters.lifecycle.to_vec()),
    )
    .by("event", &LIFECYCLE_EVENTS)
    .no_prometheus(),
    Metric::counter(
        "scale_steps",
        "steps",
        "Scaling steps recorded, by step.",
        |s: &HeraldSnapshot| Reading::Each(s.scale_steps.to_vec()),
    )
    .by("step", &SCALE_STEPS)
    .no_statsd(),
];

/// The `GET /metrics` exposition, each sample labelled `herald="<herald id>"`.
pub fn prometheus(state: &State) -> String {
    let mut e = Exposition::new("pushfleet_herald", &[("herald", &state.herald_id)]);
    catalogue::prometheus(CATALOGUE, &HeraldSnapshot::read(state), &mut e);
    e.finish()
}

/// The StatsD report, sent once per evaluation.
pub struct Report(StatsdReport);

impl Report {
    pub fn new(state: &State) -> Self {
        Self(StatsdReport::new(CATALOGUE, &HeraldSnapshot::read(state)))
    }

    pub fn send(&mut self, state: &State, client: &StatsdClient) {
        self.0.send(CATALOGUE, &HeraldSnapshot::read(state), client);
    }
}
