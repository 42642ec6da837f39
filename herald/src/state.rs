//! What herald's tasks share: the latest evaluation, recent decisions, and whether
//! this instance leads. Written by the evaluate loop, read by the agent-check
//! server and the status page.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::policy::score::{Change, EdgeView};

/// Decisions kept for the status page.
pub const RECENT: usize = 100;

/// One logged decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// ms since the UNIX epoch.
    pub at_ms: u64,
    #[serde(flatten)]
    pub change: Change,
}

/// Scaling actions, in the order of [`Counters::scale_started`], as StatsD names them.
pub const SCALE_ACTIONS: [&str; 3] = ["scale_out", "in", "release"];
/// The termination hook's events, in the order of [`Counters::lifecycle`].
pub const LIFECYCLE_EVENTS: [&str; 3] = ["drains", "completed", "errors"];
/// What herald counts, since start.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counters {
    /// Scaling actions started, by [`SCALE_ACTIONS`] (leader).
    pub scale_started: [u64; SCALE_ACTIONS.len()],
    /// Actuator steps that failed.
    pub scale_failures: u64,
    /// Lifecycle-hook events, by [`LIFECYCLE_EVENTS`].
    pub lifecycle: [u64; LIFECYCLE_EVENTS.len()],
}

/// A scaling action that started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleAction {
    ScaleOut = 0,
    In = 1,
    Release = 2,
}

/// A lifecycle-hook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// A terminating instance whose edge herald told to drain.
    Drain = 0,
    /// A lifecycle action completed (`CONTINUE`).
    Completed = 1,
    /// An AWS or etcd call of the watcher failed.
    Error = 2,
}

#[derive(Debug, Default, Serialize)]
pub struct State {
    pub herald_id: String,
    pub leader: bool,
    /// No report changed anywhere for `stale_after`: etcd is presumed unreachable
    /// and every weight is held as it was.
    pub holding: bool,
    pub views: BTreeMap<String, EdgeView>,
    pub recent: VecDeque<Decision>,
    pub agent_checks: u64,
    /// Weight or state changes decided, since start.
    pub decisions: u64,
    /// Runtime API pushes that HAProxy accepted, and that failed.
    pub pushes: u64,
    pub push_errors: u64,
    /// Scaling decisions and what became of them, newest last.
    pub scaling: VecDeque<ScaleEvent>,
    /// Scaling steps recorded since start, by step (as in [`ScaleEvent::step`]).
    pub scale_steps: BTreeMap<String, u64>,
    /// HAProxy server-template slot → edge id (on the leader, with a runtime API).
    pub slots: BTreeMap<String, String>,
    /// Scaling and lifecycle-hook counts (StatsD).
    pub counters: Counters,
}

/// One scaling step.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleEvent {
    pub at_ms: u64,
    /// `scale_out`, `scale_in`, `release`, or for the AWS termination hook
    /// `lifecycle_drain` / `lifecycle_complete`.
    pub step: String,
    pub edge: String,
    pub reason: String,
    /// `dry-run`, `started`, `done`, or the failure.
    pub outcome: String,
}

impl State {
    pub fn scaled(&mut self, event: ScaleEvent) {
        *self.scale_steps.entry(event.step.clone()).or_default() += 1;
        if self.scaling.len() == RECENT {
            self.scaling.pop_front();
        }
        self.scaling.push_back(event);
    }

    pub fn record(&mut self, at_ms: u64, change: Change) {
        self.decisions += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Decision { at_ms, change });
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Counts a scaling action that started.
pub fn count_scale(state: &Arc<RwLock<State>>, action: ScaleAction) {
    if let Ok(mut s) = state.write() {
        s.counters.scale_started[action as usize] += 1;
    }
}

/// Counts an actuator step that failed.
pub fn count_scale_failure(state: &Arc<RwLock<State>>) {
    if let Ok(mut s) = state.write() {
        s.counters.scale_failures += 1;
    }
}

/// Counts a lifecycle-hook event.
pub fn count_lifecycle(state: &Arc<RwLock<State>>, event: LifecycleEvent) {
    if let Ok(mut s) = state.write() {
        s.counters.lifecycle[event as usize] += 1;
    }
}

/// Appends a scaling step to the shared state (shown on the status page).
pub fn record_scale(
    state: &Arc<RwLock<State>>,
    step: &str,
    edge: &str,
    reason: &str,
    outcome: &str,
) {
    if let Ok(mut s) = state.write() {
        s.scaled(ScaleEvent {
            at_ms: now_ms(),
            step: step.to_owned(),
            edge: edge.to_owned(),
            reason: reason.to_owned(),
            outcome: outcome.to_owned(),
        });
    }
}
