//! When to grow or shrink the fleet: the scaler's policy, with no I/O.
//!
//! The fleet's load is the mean smoothed load of the edges serving (ready, with a
//! fresh report). It must stay above `high` for `sustain` before herald scales out
//! (or any edge's memory stay above `memory_high`: memory runs out long before CPU
//! shows it), and below `low` for `sustain` before it scales in. The fleet stays
//! within `[min_edges, max_edges]`; after each action a cooldown must pass; and
//! while one action is under way (a new edge not registered yet, an edge not gone
//! yet) no other starts. Scale-in picks the edge whose departure costs least: the
//! one with the fewest connections (ties: the smallest id), because its clients are
//! the ones that must reconnect.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::policy::score::{EdgeView, Verdict};

/// The scaler's thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePolicy {
    pub high: f64,
    pub low: f64,
    pub memory_high: f64,
    pub sustain: Duration,
    pub min_edges: usize,
    pub max_edges: usize,
    pub cooldown: Duration,
    /// How long an action may take before the scaler stops waiting for it.
    pub action_timeout: Duration,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        Self {
            high: 0.75,
            low: 0.30,
            memory_high: 0.85,
            sustain: Duration::from_secs(60),
            min_edges: 1,
            max_edges: 16,
            cooldown: Duration::from_secs(180),
            action_timeout: Duration::from_secs(600),
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    ScaleOut { reason: String },
    ScaleIn { edge: String, reason: String },
}

#[derive(Debug, Clone)]
struct Pending {
    started: Instant,
    /// The action is done when the serving fleet has this many edges.
    target: usize,
}

/// Carries the sustain timers, the cooldown and the action under way.
#[derive(Debug, Default)]
pub struct Scaler {
    above_since: Option<Instant>,
    below_since: Option<Instant>,
    last_action: Option<Instant>,
    pending: Option<Pending>,
}

impl Scaler {
    /// Whether an action is still under way.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Looks at the fleet as of `now`; returns an action when one is due.
    pub fn decide(
        &mut self,
        policy: &ScalePolicy,
        views: &BTreeMap<String, EdgeView>,
        now: Instant,
    ) -> Option<Action> {
        let serving: Vec<&EdgeView> = views
            .values()
            .filter(|v| v.verdict == Verdict::Ready)
            .collect();
        let size = serving.len();
        if let Some(p) = &self.pending {
            if size == p.target || now.duration_since(p.started) >= policy.action_timeout {
                self.pending = None;
            } else {
                return None;
            }
        }
        if size == 0 {
            return None;
        }
        let mean = serving.iter().map(|v| v.load).sum::<f64>() / size as f64;
        let short_of_memory = serving
            .iter()
            .any(|v| v.signals.memory > policy.memory_high);
        let hot = mean > policy.high || short_of_memory;
        let cold = mean < policy.low && !short_of_memory;
        self.above_since = if hot {
            self.above_since.or(Some(now))
        } else {
            None
        };
        self.below_since = if cold {
            self.below_since.or(Some(now))
        } else {
            None
        };
        let cooled = self
            .last_action
            .is_none_or(|t| now.duration_since(t) >= policy.cooldown);
        let sustained =
            |since: Option<Instant>| since.is_some_and(|t| now.duration_since(t) >= policy.sustain);
        let action = if sustained(self.above_since) && size < policy.max_edges && cooled {
            let why = if short_of_memory {
                "an edge's memory above its high mark".to_owned()
            } else {
                format!("fleet load {mean:.2} above {:.2}", policy.high)
            };
            Some((
                Action::ScaleOut {
                    reason: format!("{why} for {:?}; {size} edges serving", policy.sustain),
                },
                size + 1,
            ))
        } else if sustained(self.below_since) && size > policy.min_edges && cooled {
            let cheapest = serving
                .iter()
                .min_by(|a, b| (a.report.connections, &a.id).cmp(&(b.report.connections, &b.id)))?;
            Some((
                Action::ScaleIn {
                    edge: cheapest.id.clone(),
                    reason: format!(
                        "fleet load {mean:.2} below {:.2} for {:?}; {} has the fewest connections ({})",
                        policy.low, policy.sustain, cheapest.id, cheapest.report.connections
                    ),
                },
                size - 1,
            ))
        } else {
            None
        };
        let (action, target) = action?;
        self.last_action = Some(now);
        self.above_since = None;
        self.below_since = None;
        self.pending = Some(Pending {
            started: now,
            target,
        });
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, load: f64, connections: u64) -> EdgeView {
        let mut v = crate::policy::fixtures::view(id, 1, Verdict::Ready, 100, load);
        v.report.connections = connections;
        v
    }

    fn fleet(list: Vec<EdgeView>) -> BTreeMap<String, EdgeView> {
        list.into_iter().map(|v| (v.id.clone(), v)).collect()
    }

    fn policy() -> ScalePolicy {
        ScalePolicy {
            sustain: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
            min_edges: 1,
            max_edges: 3,
            ..ScalePolicy::default()
        }
    }

    #[test]
    fn scales_out_only_after_the_load_is_sustained() {
        let t0 = Instant::now();
        let mut s = Scaler::default();
        let hot = fleet(vec![view("a", 0.9, 10), view("b", 0.8, 10)]);
        assert_eq!(s.decide(&policy(), &hot, t0), None);
        assert_eq!(s.decide(&policy(), &hot, t0 + Duration::from_secs(5)), None);
        // A dip resets the timer.
        let calm = fleet(vec![view("a", 0.5, 10), view("b", 0.5, 10)]);
        assert_eq!(
            s.decide(&policy(), &calm, t0 + Duration::from_secs(6)),
            None
        );
        assert_eq!(s.decide(&policy(), &hot, t0 + Duration::from_secs(7)), None);
        let out = s.decide(&policy(), &hot, t0 + Duration::from_secs(17));
        assert!(matches!(out, Some(Action::ScaleOut { .. })), "{out:?}");
        assert!(s.busy());
    }

    #[test]
    fn one_action_at_a_time_then_a_cooldown() {
        let t0 = Instant::now();
        let p = policy();
        let mut s = Scaler::default();
        let hot2 = fleet(vec![view("a", 0.9, 10), view("b", 0.9, 10)]);
        s.decide(&p, &hot2, t0);
        assert!(s.decide(&p, &hot2, t0 + Duration::from_secs(10)).is_some());
        // Still two edges: the new one has not registered; nothing else starts.
        assert_eq!(s.decide(&p, &hot2, t0 + Duration::from_secs(25)), None);
        // It registered (3 edges): done; still hot, but the cooldown holds, and
        // the fleet is at its maximum anyway.
        let hot3 = fleet(vec![
            view("a", 0.9, 10),
            view("b", 0.9, 10),
            view("c", 0.9, 0),
        ]);
        assert_eq!(s.decide(&p, &hot3, t0 + Duration::from_secs(26)), None);
        assert!(!s.busy());
        assert_eq!(
            s.decide(&p, &hot3, t0 + Duration::from_secs(100)),
            None,
            "max_edges"
        );
    }

    #[test]
    fn scales_in_the_edge_with_the_fewest_connections_and_keeps_the_minimum() {
        let t0 = Instant::now();
        let p = policy();
        let mut s = Scaler::default();
        let cold = fleet(vec![
            view("a", 0.1, 50),
            view("b", 0.1, 5),
            view("c", 0.1, 5),
        ]);
        s.decide(&p, &cold, t0);
        match s.decide(&p, &cold, t0 + Duration::from_secs(10)) {
            Some(Action::ScaleIn { edge, .. }) => assert_eq!(edge, "b", "fewest, then smallest id"),
            other => panic!("{other:?}"),
        }
        let one = fleet(vec![view("a", 0.0, 0)]);
        let mut s = Scaler::default();
        s.decide(&p, &one, t0);
        assert_eq!(
            s.decide(&p, &one, t0 + Duration::from_secs(60)),
            None,
            "min_edges"
        );
    }

    #[test]
    fn memory_short_scales_out_even_when_cpu_is_idle() {
        let t0 = Instant::now();
        let p = policy();
        let mut s = Scaler::default();
        let mut a = view("a", 0.1, 10);
        a.signals.memory = 0.9;
        let f = fleet(vec![a, view("b", 0.1, 10)]);
        s.decide(&p, &f, t0);
        let out = s.decide(&p, &f, t0 + Duration::from_secs(10));
        assert!(
            matches!(&out, Some(Action::ScaleOut { reason }) if reason.contains("memory")),
            "{out:?}"
        );
    }

    #[test]
    fn a_stuck_action_stops_blocking_after_its_timeout() {
        let t0 = Instant::now();
        let p = policy();
        let mut s = Scaler::default();
        let hot = fleet(vec![view("a", 0.9, 10)]);
        s.decide(&p, &hot, t0);
        assert!(s.decide(&p, &hot, t0 + Duration::from_secs(10)).is_some());
        assert!(s.busy());
        s.decide(&p, &hot, t0 + Duration::from_secs(10) + p.action_timeout);
        assert!(!s.busy());
    }
}
