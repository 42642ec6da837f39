//! Wiring and lifecycle: starts the hub thread (ZeroMQ ingress, hub, reporter), the
//! public and admin HTTP servers, and runs the two-stage shutdown: the first SIGTERM
//! or SIGINT (or `POST /drain`) drains gracefully within `--drain-timeout`; a second
//! signal, or the timeout, stops at once.

use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use pushfleet_protocol::registry::relays_prefix;
use tokio::signal::unix::Signal;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::edge::config::Config;
use crate::edge::connection::upgrade;
use crate::edge::fanout::encoded::Encoder;
use crate::edge::fanout::hub::{Hub, HubSettings, HUB_COMMAND_QUEUE};
use crate::edge::http;
use crate::edge::ingress::{self, CONTROL_QUEUE};
use crate::edge::orders;
use crate::edge::state::Shared;
use crate::edge::telemetry::metrics::Metrics;
use crate::edge::telemetry::{load, reporter};
use pushfleet_fleet::etcd;
use pushfleet_fleet::signals::{next_signal, signals};

/// Serves until shut down. `public` and `admin` are already bound (tests bind port 0).
pub fn run(config: Config, public: TcpListener, admin: TcpListener) -> anyhow::Result<()> {
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let edge_id = config.edge_id(public_addr.port());
    let statsd = pushfleet_fleet::statsd::client(
        config.statsd,
        &format!(
            "{}.edge.{}",
            config.statsd_prefix,
            pushfleet_fleet::statsd::path_part(&edge_id)
        ),
    )?;
    let metrics = Arc::new(Metrics::new(edge_id.clone(), statsd.clone()));

    let (hub_tx, hub_rx) = mpsc::channel(HUB_COMMAND_QUEUE);
    let (zmq_tx, zmq_rx) = mpsc::channel(CONTROL_QUEUE);
    let (ingress_tx, ingress_rx) = mpsc::channel(config.ingress_queue);
    let hub = Hub::new(
        HubSettings {
            encoder: Encoder {
                threshold: config.compression_threshold,
                level: config.deflate_level,
            },
            max_publish_size: config.max_publish_size,
        },
        metrics.clone(),
        zmq_tx,
    );
    let fixed = config.zmq_connect.clone();
    let etcd = (!config.etcd.is_empty()).then(|| (config.etcd.clone(), config.etcd_prefix.clone()));
    let hub_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("pushfleet-hub".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the hub runtime");
                    std::process::exit(70);
                }
            };
            runtime.block_on(async move {
                let discovered = etcd.map(|(endpoints, prefix)| discover_relays(endpoints, prefix));
                if let Err(e) = ingress::spawn(
                    ingress::Upstreams { fixed, discovered },
                    zmq_rx,
                    ingress_tx,
                    hub_metrics.clone(),
                ) {
                    tracing::error!(error = %e, "cannot start the ZeroMQ ingress thread");
                    std::process::exit(70);
                }
                tokio::spawn(reporter::run(hub_metrics, statsd));
                hub.run(hub_rx, ingress_rx).await;
            });
        })
        .context("starting the hub thread")?;

    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.workers
    };
    let shared = Arc::new(Shared::new(config, metrics, hub_tx));
    let max_connections = shared.config.max_connections;
    info!(%edge_id, %public_addr, %admin_addr, workers, "pushfleet edge starting");

    actix_web::rt::System::new().block_on(async move {
        let signals = signals();
        let data = web::Data::new(shared.clone());
        let public_data = data.clone();
        let upgrade_shared = shared.clone();
        let public_server = actix_server::Server::build()
            .workers(workers)
            .backlog(4096)
            // Our own limit answers 503 with a reason; Actix's only has to stay above it.
            .max_concurrent_connections(max_connections.div_ceil(workers) + 1024)
            .disable_signals()
            .listen("pushfleet-public", public, move || {
                let shared = upgrade_shared.clone();
                let app = App::new()
                    .app_data(public_data.clone())
                    .configure(http::routes::public_routes);
                HttpService::build()
                    // Realtime: a message goes out now, not when Nagle has gathered enough.
                    .tcp_nodelay(true)
                    .upgrade(fn_service(move |req| upgrade::handle(shared.clone(), req)))
                    .finish(map_config(app, |_| AppConfig::default()))
                    .tcp()
            })?
            .run();
        let admin_server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(http::routes::admin_routes)
        })
        .workers(1)
        .disable_signals()
        .listen(admin)?
        .run();
        let public_handle = public_server.handle();
        let admin_handle = admin_server.handle();
        let (leave_etcd, leaving) = watch::channel(false);
        if !shared.config.etcd.is_empty() {
            let reporting = load::Reporting {
                etcd: shared.config.etcd.clone(),
                prefix: shared.config.etcd_prefix.clone(),
                id: edge_id.clone(),
                address: shared.config.advertise_address(public_addr),
                interval: shared.config.load_interval,
                lease_ttl: shared.config.lease_ttl,
            };
            actix_web::rt::spawn(load::report(shared.clone(), reporting, leaving));
            actix_web::rt::spawn(orders::follow(
                shared.clone(),
                shared.config.etcd.clone(),
                shared.config.etcd_prefix.clone(),
                edge_id.clone(),
            ));
        }
        actix_web::rt::spawn(async move {
            lifecycle(shared, signals).await;
            // Leave etcd before going (bounded: a dead etcd must not hold the exit).
            let _ = leave_etcd.send(true);
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Everyone has been told to leave: stop without waiting for stragglers.
            public_handle.stop(false).await;
            admin_handle.stop(false).await;
        });
        let (a, b) = tokio::join!(public_server, admin_server);
        a.and(b)
    })?;
    info!("pushfleet edge stopped");
    Ok(())
}

/// Follows the relays registered in etcd; the receiver holds their edge endpoints.
/// Runs for the life of the process (the hub thread's runtime ends with it).
fn discover_relays(endpoints: Vec<String>, prefix: String) -> watch::Receiver<Vec<String>> {
    let (records_tx, mut records_rx) = watch::channel(etcd::Records::new());
    let (endpoints_tx, endpoints_rx) = watch::channel(Vec::new());
    // Never set: the edge stops by ending its runtime.
    let (_keep, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let _keep = _keep;
        etcd::follow_prefix(endpoints, relays_prefix(&prefix), records_tx, shutdown).await;
    });
    tokio::spawn(async move {
        while records_rx.changed().await.is_ok() {
            let relays: Vec<String> = etcd::relay_records(&records_rx.borrow_and_update())
                .into_iter()
                .map(|r| r.edges)
                .collect();
            if relays.is_empty() && !endpoints_tx.borrow().is_empty() {
                // Every relay gone at once is far likelier an etcd mishap than a dead
                // tier; staying connected to a dead endpoint costs nothing.
                warn!("etcd lists no relays; keeping the last known ones");
                continue;
            }
            info!(?relays, "relays in etcd");
            endpoints_tx.send_replace(relays);
        }
    });
    endpoints_rx
}

/// Waits for a reason to drain, drains, and returns when it is time to stop.
async fn lifecycle(shared: Arc<Shared>, (mut term, mut int): (Option<Signal>, Option<Signal>)) {
    if term.is_none() || int.is_none() {
        warn!("cannot install signal handlers; POST /drain still drains this edge");
    }
    let mut drain = shared.drain.watch();
    // Signals received so far: the first (or an admin drain) drains, the second stops.
    let mut signals = 0;
    tokio::select! {
        _ = next_signal(&mut term) => { signals += 1; info!("SIGTERM: draining") }
        _ = next_signal(&mut int) => { signals += 1; info!("SIGINT: draining") }
        _ = drain.wait_for(|d| *d) => {},
    }
    shared.drain.start();
    let timeout = shared.config.drain_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        if signals >= 2 {
            warn!("second signal: stopping now");
            return;
        }
        tokio::select! {
            _ = next_signal(&mut term) => signals += 1,
            _ = next_signal(&mut int) => signals += 1,
            _ = tokio::time::sleep_until(deadline) => {
                let left = shared.metrics.connections.load(Relaxed);
                warn!(connections = left, ?timeout, "drain timeout passed: stopping");
                return;
            }
            _ = poll.tick() => {
                if shared.metrics.connections.load(Relaxed) <= 0 {
                    info!("drained: no connections left");
                    return;
                }
            }
        }
    }
}
