//! The termination lifecycle hook, carried out by the leader: every instance of the
//! edge group that EC2 Auto Scaling holds in `Terminating:Wait` is drained before it
//! goes.
//!
//! Every `--aws-poll` the leader lists the group's instances in `Terminating:Wait`.
//! For each (edge id = instance id):
//! - its edge still reports in etcd: herald writes a drain order for it once (the edge
//!   tells its clients to reconnect elsewhere, with jitter, and HAProxy sees `drain`),
//!   and records a lifecycle heartbeat every [`HEARTBEAT_EVERY`] so the hook's timeout
//!   does not run out while it drains;
//! - its edge is gone (drained and exited, or never registered): herald completes the
//!   lifecycle action with `CONTINUE`, and the instance terminates;
//! - still there after `--aws-drain-timeout`: herald completes anyway (the edge's own
//!   SIGTERM drain at shutdown still tells its clients to move).
//!
//! Herald's own scale-in drains first and terminates after, so its instances arrive
//! here with no edge and complete at once; terminations started elsewhere (an
//! operator, rebalancing, a failed health check) are drained here.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use pushfleet_fleet::orders::{clear_drain, order_drain};

use crate::io::aws::AutoScaling;
use crate::state::{count_lifecycle, record_scale, LifecycleEvent, State};

/// How often a heartbeat extends the hook while an edge drains.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// Where the watcher finds its peers.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll: Duration,
    pub drain_timeout: Duration,
    pub etcd: Vec<String>,
    pub prefix: String,
}

/// An instance held by the hook, as herald has handled it so far.
#[derive(Debug)]
struct Held {
    since: Instant,
    heartbeat_at: Instant,
    ordered: bool,
}

/// Runs until the process stops.
pub async fn watch(group: AutoScaling, settings: Settings, state: Arc<RwLock<State>>) {
    let count = |event: LifecycleEvent| count_lifecycle(&state, event);
    let mut held: HashMap<String, Held> = HashMap::new();
    let mut tick = tokio::time::interval(settings.poll);
    loop {
        tick.tick().await;
        let (leader, present): (bool, BTreeSet<String>) = match state.read() {
            Ok(s) => (s.leader, s.views.keys().cloned().collect()),
            Err(_) => continue,
        };
        if !leader {
            held.clear();
            continue;
        }
        let waiting = match group.terminating().await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot list terminating instances");
                count(LifecycleEvent::Error);
                continue;
            }
        };
        held.retain(|id, _| waiting.contains(id));
        for instance in waiting {
            let now = Instant::now();
            let entry = held.entry(instance.clone()).or_insert(Held {
                since: now,
                heartbeat_at: now,
                ordered: false,
            });
            let gone = !present.contains(&instance);
            let overdue = now.duration_since(entry.since) >= settings.drain_timeout;
            if gone || overdue {
                match group.complete(&instance).await {
                    Ok(()) => {
                        let outcome = if gone {
                            "done"
                        } else {
                            "done: drain timed out, edge still reporting"
                        };
                        info!(%instance, outcome, "lifecycle action completed");
                        count(LifecycleEvent::Completed);
                        record_scale(
                            &state,
                            "lifecycle_complete",
                            &instance,
                            "instance terminating",
                            outcome,
                        );
                        held.remove(&instance);
                        if let Err(e) =
                            clear_drain(&settings.etcd, &settings.prefix, &instance).await
                        {
                            warn!(%instance, error = %e, "cannot delete the drain order");
                        }
                    }
                    Err(e) => {
                        warn!(%instance, error = %e, "cannot complete the lifecycle action");
                        count(LifecycleEvent::Error);
                    }
                }
                continue;
            }
            if !entry.ordered {
                let reason = "EC2 Auto Scaling is terminating the instance";
                match order_drain(&settings.etcd, &settings.prefix, &instance, reason).await {
                    Ok(()) => {
                        entry.ordered = true;
                        info!(%instance, "terminating instance: edge told to drain");
                        count(LifecycleEvent::Drain);
                        record_scale(&state, "lifecycle_drain", &instance, reason, "draining");
                    }
                    Err(e) => {
                        warn!(%instance, error = %e, "cannot write the drain order");
                        count(LifecycleEvent::Error);
                    }
                }
            }
            if now.duration_since(entry.heartbeat_at) >= HEARTBEAT_EVERY {
                entry.heartbeat_at = now;
                if let Err(e) = group.heartbeat(&instance).await {
                    warn!(%instance, error = %e, "cannot record a lifecycle heartbeat");
                    count(LifecycleEvent::Error);
                }
            }
        }
    }
}
