//! Wiring: follow the edges' reports in etcd, campaign for leadership, evaluate
//! every interval, answer agent checks, serve the status page; stop on SIGTERM or
//! SIGINT.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::{web, App, HttpServer};
use cadence::StatsdClient;
use pushfleet_fleet::etcd::{self, Records};
use pushfleet_protocol::registry::edges_prefix;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::io::actuate::{Actuator, Step};
use crate::io::haproxy::{Client, RuntimeAddr};
use crate::io::push::{Outcome, Pusher};
use crate::io::{agent, election, http, lifecycle};
use crate::metrics;
use crate::policy::fleet::Fleet;
use crate::policy::scale::{Action, ScalePolicy, Scaler};
use crate::policy::score::{Evaluator, Policy};
use crate::policy::slots::Slots;
use crate::state::{count_scale, count_scale_failure, now_ms, record_scale, ScaleAction, State};
use pushfleet_fleet::orders::{clear_drain, order_drain};

/// A configuration problem found only once running (the AWS environment names no
/// region): `main` reports it like a flag error (exit 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidConfig(pub String);

/// Serves until SIGTERM/SIGINT. The listeners are already bound (tests bind port 0).
pub fn run(
    config: Config,
    agent_listener: TcpListener,
    http_listener: TcpListener,
) -> anyhow::Result<()> {
    let herald_id = config.herald_id();
    let state = Arc::new(RwLock::new(State {
        herald_id: herald_id.clone(),
        ..State::default()
    }));
    info!(
        %herald_id, agent = %agent_listener.local_addr()?, http = %http_listener.local_addr()?,
        "herald starting"
    );
    actix_web::rt::System::new().block_on(async move {
        // Before anything serves: a signal during start-up stops herald cleanly.
        let (mut term, mut int) = pushfleet_fleet::signals::signals();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (records_tx, records) = watch::channel(Records::new());
        actix_web::rt::spawn(etcd::follow_prefix(
            config.etcd.clone(),
            edges_prefix(&config.etcd_prefix),
            records_tx,
            shutdown.clone(),
        ));
        let (leader_tx, leader) = watch::channel(false);
        actix_web::rt::spawn(election::campaign(
            config.etcd.clone(),
            config.etcd_prefix.clone(),
            herald_id,
            config.stale_after,
            leader_tx,
            shutdown.clone(),
        ));
        agent_listener.set_nonblocking(true)?;
        let agent_listener = tokio::net::TcpListener::from_std(agent_listener)?;
        actix_web::rt::spawn(agent::serve(agent_listener, state.clone()));
        let statsd = pushfleet_fleet::statsd::client(
            config.statsd,
            &format!(
                "{}.herald.{}",
                config.statsd_prefix,
                pushfleet_fleet::statsd::path_part(&config.herald_id())
            ),
        )?;
        let actuator = config
            .actuator()
            .await
            .map_err(|e| anyhow::Error::new(InvalidConfig(e)))?;
        if let Some(Actuator::Aws(group)) = &actuator {
            let settings = lifecycle::Settings {
                poll: config.aws_poll,
                drain_timeout: config.aws_drain_timeout,
                etcd: config.etcd.clone(),
                prefix: config.etcd_prefix.clone(),
            };
            actix_web::rt::spawn(lifecycle::watch(group.clone(), settings, state.clone()));
        }
        actix_web::rt::spawn(evaluate(
            config.clone(),
            actuator,
            records,
            leader,
            state.clone(),
            statsd,
        ));

        let data = web::Data::new(state);
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(http::routes))
                .workers(1)
                .disable_signals()
                .listen(http_listener)?
                .run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            tokio::select! {
                _ = pushfleet_fleet::signals::next_signal(&mut term) => {}
                _ = pushfleet_fleet::signals::next_signal(&mut int) => {}
            }
            info!("stopping");
            let _ = shutdown_tx.send(true);
            handle.stop(true).await;
        });
        server.await?;
        anyhow::Ok(())
    })?;
    info!("herald stopped");
    Ok(())
}

/// The evaluate loop: every interval, reports → weights → shared state (and, on the
/// leader, HAProxy).
async fn evaluate(
    config: Config,
    actuator: Option<Actuator>,
    records: watch::Receiver<Records>,
    leader: watch::Receiver<bool>,
    state: Arc<RwLock<State>>,
    statsd: Option<Arc<StatsdClient>>,
) {
    let policy: Policy = config.policy();
    let clients: Vec<Client> = config
        .haproxy_runtime
        .iter()
        .filter_map(|a| RuntimeAddr::parse(a).ok())
        .map(Client::new)
        .collect();
    let mut pusher = (!clients.is_empty()).then(|| {
        Pusher::new(
            clients,
            config.haproxy_backend.clone(),
            Slots::new(&config.haproxy_slot_prefix, config.haproxy_slots),
        )
    });
    let mut fleet = Fleet::default();
    let mut evaluator = Evaluator::default();
    let mut scaling = actuator.map(|actuator| Scaling {
        actuator,
        policy: config.scale_policy(),
        scaler: Scaler::default(),
        draining: None,
        etcd: config.etcd.clone(),
        prefix: config.etcd_prefix.clone(),
    });
    let mut tick = tokio::time::interval(config.interval);
    let mut was_holding = false;
    let mut report = state.read().ok().map(|s| metrics::Report::new(&s));
    loop {
        tick.tick().await;
        let now = Instant::now();
        fleet.update(&records.borrow(), now);
        let changes = evaluator.evaluate(&policy, fleet.reports(), now);
        if evaluator.holding != was_holding {
            was_holding = evaluator.holding;
            if was_holding {
                tracing::warn!("no fresh load reports anywhere: etcd presumed unreachable; holding every weight");
            } else {
                info!("load reports flowing again");
            }
        }
        for c in &changes {
            info!(edge = %c.id, from = ?c.from, to = ?c.to, reason = %c.reason, "weight changed");
        }
        let leading = *leader.borrow();
        let outcome = match pusher.as_mut() {
            Some(p) if leading => p.round(evaluator.views()).await,
            Some(p) => {
                p.reset();
                Outcome::default()
            }
            None => Outcome::default(),
        };
        if let (Some(scaling), true) = (scaling.as_mut(), leading) {
            scaling.round(evaluator.views(), now, &state);
        }
        let Ok(mut s) = state.write() else { continue };
        s.views = evaluator.views().clone();
        s.holding = evaluator.holding;
        s.leader = leading;
        s.pushes += outcome.pushed;
        s.push_errors += outcome.failed;
        if let Some(p) = &pusher {
            s.slots = p.table();
        }
        let at = now_ms();
        for c in changes {
            s.record(at, c);
        }
        // Every evaluation: per-edge weight and load (one series per edge, bounded by
        // the fleet), herald's own state, and what was counted since the last one.
        if let (Some(client), Some(report)) = (&statsd, report.as_mut()) {
            report.send(&s, client);
        }
    }
}

/// The scaler and what it has under way.
struct Scaling {
    actuator: Actuator,
    policy: ScalePolicy,
    scaler: Scaler,
    /// The edge told to drain for a scale-in, with why.
    draining: Option<(String, String)>,
    etcd: Vec<String>,
    prefix: String,
}

impl Scaling {
    /// One evaluation: release a drained edge that has left, then maybe decide.
    fn round(
        &mut self,
        views: &std::collections::BTreeMap<String, crate::policy::score::EdgeView>,
        now: Instant,
        state: &Arc<RwLock<State>>,
    ) {
        if let Some((edge, reason)) = self.draining.clone() {
            if !views.contains_key(&edge) {
                self.draining = None;
                self.spawn(Step::Release, edge, reason, state, true);
            }
        }
        let Some(action) = self.scaler.decide(&self.policy, views, now) else {
            return;
        };
        info!(?action, "scaling decision");
        match action {
            Action::ScaleOut { reason } => {
                self.spawn(Step::ScaleOut, String::new(), reason, state, false);
            }
            Action::ScaleIn { edge, reason } => {
                count_scale(state, ScaleAction::In);
                let dry = matches!(self.actuator, Actuator::DryRun);
                record_scale(
                    state,
                    "scale_in",
                    &edge,
                    &reason,
                    if dry { "dry-run" } else { "draining" },
                );
                if dry {
                    return;
                }
                // Tell the edge to drain; HAProxy follows from its report (drain).
                let (endpoints, prefix) = (self.etcd.clone(), self.prefix.clone());
                let (id, why) = (edge.clone(), reason.clone());
                actix_web::rt::spawn(async move {
                    if let Err(e) = order_drain(&endpoints, &prefix, &id, &why).await {
                        tracing::warn!(error = %e, "cannot write the drain order");
                    }
                });
                self.draining = Some((edge, reason));
            }
        }
    }

    /// Runs the actuator for `step` in the background and records the outcome;
    /// `clear` deletes the edge's drain order once done.
    fn spawn(
        &self,
        step: Step,
        edge: String,
        reason: String,
        state: &Arc<RwLock<State>>,
        clear: bool,
    ) {
        let name = step.as_str();
        count_scale(
            state,
            match step {
                Step::ScaleOut => ScaleAction::ScaleOut,
                Step::Release => ScaleAction::Release,
            },
        );
        let (actuator, state) = (self.actuator.clone(), state.clone());
        let (endpoints, prefix) = (self.etcd.clone(), self.prefix.clone());
        actix_web::rt::spawn(async move {
            let outcome = match actuator.run(step, &edge, &reason).await {
                Ok(false) => "dry-run".to_owned(),
                Ok(true) => "done".to_owned(),
                Err(e) => {
                    count_scale_failure(&state);
                    e
                }
            };
            record_scale(&state, name, &edge, &reason, &outcome);
            if clear {
                let _ = clear_drain(&endpoints, &prefix, &edge).await;
            }
        });
    }
}
