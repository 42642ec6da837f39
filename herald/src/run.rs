//! Wiring: follow the edges' reports in etcd, campaign for leadership, evaluate
//! every interval, answer agent checks, serve the status page; stop on SIGTERM or
//! SIGINT.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix_web::{web, App, HttpServer};
use cadence::{Counted, Gauged, StatsdClient};
use pushfleet_protocol::registry::edges_prefix;
use pushfleet_server::etcd::{self, Records};
use tokio::sync::watch;
use tracing::info;

use crate::actuate::{Actuator, Step};
use crate::config::Config;
use crate::fleet::Fleet;
use crate::haproxy::{Client, RuntimeAddr};
use crate::orders::{clear_drain, order_drain};
use crate::push::{Outcome, Pusher};
use crate::scale::{Action, ScalePolicy, Scaler};
use crate::score::{Evaluator, Policy};
use crate::slots::Slots;
use crate::state::{now_ms, record_scale, State};
use crate::{agent, election, http, lifecycle};

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
        let (mut term, mut int) = pushfleet_server::run::signals();
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
        let statsd = pushfleet_server::statsd::client(
            config.statsd,
            &format!(
                "{}.herald.{}",
                config.statsd_prefix,
                pushfleet_server::statsd::path_part(&config.herald_id())
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
            actix_web::rt::spawn(lifecycle::watch(
                group.clone(),
                settings,
                state.clone(),
                statsd.clone(),
            ));
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
                _ = pushfleet_server::run::next_signal(&mut term) => {}
                _ = pushfleet_server::run::next_signal(&mut int) => {}
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

/// StatsD, every evaluation: per-edge weight and load (one series per edge, bounded
/// by the fleet), and herald's own state. Names in `monitoring/METRICS.md`.
fn report(client: &StatsdClient, evaluator: &Evaluator, leader: bool, changes: usize) {
    for view in evaluator.views().values() {
        let edge = pushfleet_server::statsd::path_part(&view.id);
        let _ = client.gauge(&format!("weight.{edge}"), u64::from(view.percent));
        let _ = client.gauge(
            &format!("load_permille.{edge}"),
            (view.load * 1000.0) as u64,
        );
    }
    let _ = client.gauge("edges", evaluator.views().len() as u64);
    let _ = client.gauge("leader", u64::from(leader));
    let _ = client.gauge("holding", u64::from(evaluator.holding));
    if changes > 0 {
        let _ = client.count("decisions", changes as u64);
    }
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
        if let Some(client) = &statsd {
            report(client, &evaluator, leading, changes.len());
        }
        let outcome = match pusher.as_mut() {
            Some(p) if leading => p.round(evaluator.views()).await,
            Some(p) => {
                p.reset();
                Outcome::default()
            }
            None => Outcome::default(),
        };
        if let (Some(client), true) = (&statsd, outcome.pushed + outcome.failed > 0) {
            let _ = client.count("haproxy.pushes", outcome.pushed);
            let _ = client.count("haproxy.push_errors", outcome.failed);
        }
        if let (Some(scaling), true) = (scaling.as_mut(), leading) {
            scaling.round(evaluator.views(), now, &state, statsd.as_ref());
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
        views: &std::collections::BTreeMap<String, crate::score::EdgeView>,
        now: Instant,
        state: &Arc<RwLock<State>>,
        statsd: Option<&Arc<StatsdClient>>,
    ) {
        if let Some((edge, reason)) = self.draining.clone() {
            if !views.contains_key(&edge) {
                self.draining = None;
                self.spawn(Step::Release, edge, reason, state, statsd, true);
            }
        }
        let Some(action) = self.scaler.decide(&self.policy, views, now) else {
            return;
        };
        info!(?action, "scaling decision");
        match action {
            Action::ScaleOut { reason } => {
                self.spawn(Step::ScaleOut, String::new(), reason, state, statsd, false);
            }
            Action::ScaleIn { edge, reason } => {
                if let Some(c) = statsd {
                    let _ = c.count("scale.in", 1);
                }
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
        statsd: Option<&Arc<StatsdClient>>,
        clear: bool,
    ) {
        let name = step.as_str();
        if let Some(c) = statsd {
            let _ = c.count(&format!("scale.{name}"), 1);
        }
        let (actuator, state, statsd) = (self.actuator.clone(), state.clone(), statsd.cloned());
        let (endpoints, prefix) = (self.etcd.clone(), self.prefix.clone());
        actix_web::rt::spawn(async move {
            let outcome = match actuator.run(step, &edge, &reason).await {
                Ok(false) => "dry-run".to_owned(),
                Ok(true) => "done".to_owned(),
                Err(e) => {
                    if let Some(c) = &statsd {
                        let _ = c.count("scale.failures", 1);
                    }
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
