//! Wiring: follow the edges' reports in etcd, campaign for leadership, evaluate
//! every interval, answer agent checks, serve the status page; stop on SIGTERM or
//! SIGINT.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpServer};
use pushfleet_protocol::registry::edges_prefix;
use pushfleet_server::etcd::{self, Records};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::fleet::Fleet;
use crate::score::{Evaluator, Policy};
use crate::state::State;
use crate::{agent, election, http};

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
        actix_web::rt::spawn(evaluate(config.clone(), records, leader, state.clone()));

        let data = web::Data::new(state);
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(http::routes))
                .workers(1)
                .disable_signals()
                .listen(http_listener)?
                .run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            let mut term = signal(SignalKind::terminate()).ok();
            let mut int = signal(SignalKind::interrupt()).ok();
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The evaluate loop: every interval, reports → weights → shared state (and, on the
/// leader, HAProxy).
async fn evaluate(
    config: Config,
    records: watch::Receiver<Records>,
    leader: watch::Receiver<bool>,
    state: Arc<RwLock<State>>,
) {
    let policy: Policy = config.policy();
    let mut fleet = Fleet::default();
    let mut evaluator = Evaluator::default();
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
        let Ok(mut s) = state.write() else { continue };
        s.views = evaluator.views().clone();
        s.holding = evaluator.holding;
        s.leader = *leader.borrow();
        let at = now_ms();
        for c in changes {
            s.record(at, c);
        }
    }
}
