//! Wiring: bind the ZeroMQ sockets, start the core thread, serve HTTP, register in
//! etcd and follow the relay set there (or take it from `--relays`), and shut down
//! in order on SIGTERM/SIGINT: leave etcd first (publishers move this relay's
//! channels elsewhere at once), then serve what already arrived and stop. A second
//! signal exits at once.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use pushfleet_protocol::registry::{relay_key, relays_prefix, RelayRecord};
use tokio::signal::unix::Signal;
use tokio::sync::watch;
use tracing::{info, warn};

use super::config::{port_of, RelayConfig};
use super::core::{self, Core, SocketConfig, HTTP_ENDPOINT};
use super::http::{self, HttpState};
use super::metrics::{self, RelayMetrics};
use super::shards::ShardSet;
use pushfleet_fleet::etcd;
use pushfleet_fleet::signals::next_signal;

/// Serves until shut down. `http_listener` is already bound (tests bind port 0).
pub fn run(config: RelayConfig, http_listener: TcpListener) -> anyhow::Result<()> {
    let http_addr = http_listener.local_addr()?;
    let publish_port = port_of(&config.publish_bind);
    let relay_id = config.relay_id(publish_port);
    let publish_endpoint = config.advertised_publish(publish_port);
    let edge_endpoint = config.advertised_edges(port_of(&config.edge_bind));
    let statsd = pushfleet_fleet::statsd::client(
        config.statsd,
        &format!(
            "{}.relay.{}",
            config.statsd_prefix,
            pushfleet_fleet::statsd::path_part(&relay_id)
        ),
    )?;

    let ctx = zmq::Context::new();
    let socket_config = SocketConfig {
        publish_bind: config.publish_bind.clone(),
        edge_bind: config.edge_bind.clone(),
        edge_queue: config.edge_queue,
        publish_queue: config.publish_queue,
    };
    let sockets = core::bind(&ctx, &socket_config).with_context(|| {
        format!(
            "cannot bind the ZeroMQ sockets ({} and {})",
            config.publish_bind, config.edge_bind
        )
    })?;
    let http_queue = ctx.socket(zmq::PUSH)?;
    http_queue.set_sndhwm(config.publish_queue)?;
    http_queue.connect(HTTP_ENDPOINT)?;

    let metrics = Arc::new(RelayMetrics::default());
    let shards = Arc::new(ShardSet::default());
    if !config.relays.is_empty() {
        shards.set(config.relays.clone());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let core = Core::new(
        ctx,
        sockets,
        shards.clone(),
        publish_endpoint.clone(),
        &socket_config,
        config.max_publish_size,
        metrics.clone(),
    );
    let core_stop = stop.clone();
    let startup_hold = config.startup_hold;
    let core_thread = std::thread::Builder::new()
        .name("relay-core".into())
        .spawn(move || core.run(&core_stop, startup_hold))
        .context("starting the core thread")?;

    let state = web::Data::new(HttpState {
        queue: Mutex::new(http_queue),
        metrics: metrics.clone(),
        max_data: config.max_publish_size,
        relay_id: relay_id.clone(),
        publish_endpoint: publish_endpoint.clone(),
        edge_endpoint: edge_endpoint.clone(),
    });
    let record = RelayRecord {
        id: relay_id.clone(),
        publish: publish_endpoint.clone(),
        edges: edge_endpoint.clone(),
        http: Some(format!(
            "http://{}:{}",
            config.advertise_host,
            http_addr.port()
        )),
    };
    info!(
        %relay_id, publish = %publish_endpoint, edges = %edge_endpoint, http = %http_addr,
        "pushfleet relay starting"
    );

    let max_data = config.max_publish_size;
    let served = actix_web::rt::System::new().block_on(async move {
        // Before anything serves: a signal during start-up stops the relay cleanly.
        let signals = pushfleet_fleet::signals::signals();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        if !config.etcd.is_empty() {
            spawn_etcd(&config, &record, shards, shutdown_rx.clone())?;
        }
        if let Some(client) = statsd {
            actix_web::rt::spawn(metrics::report(metrics, client));
        }
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(|cfg| http::routes(cfg, max_data))
        })
        .workers(1)
        .disable_signals()
        .listen(http_listener)?
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            wait_for_signal(signals).await;
            info!("stopping: leaving etcd, then serving what already arrived");
            let _ = shutdown_tx.send(true);
            // Give the lease revoke a moment; it is best-effort.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            handle.stop(true).await;
        });
        server.await.map_err(anyhow::Error::from)
    });
    let joined = core_thread.join();
    served?;
    if joined.is_err() {
        anyhow::bail!("the relay core thread panicked");
    }
    info!("pushfleet relay stopped");
    Ok(())
}

/// Registers this relay and keeps the shard set in step with etcd.
fn spawn_etcd(
    config: &RelayConfig,
    record: &RelayRecord,
    shards: Arc<ShardSet>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let value = serde_json::to_string(record)?;
    let (_value_tx, value_rx) = watch::channel(value);
    let key = relay_key(&config.etcd_prefix, &record.id);
    actix_web::rt::spawn(etcd::keep_registered(
        config.etcd.clone(),
        key,
        value_rx,
        config.lease_ttl,
        shutdown.clone(),
    ));
    let (records_tx, mut records_rx) = watch::channel(etcd::Records::new());
    actix_web::rt::spawn(etcd::follow_prefix(
        config.etcd.clone(),
        relays_prefix(&config.etcd_prefix),
        records_tx,
        shutdown,
    ));
    actix_web::rt::spawn(async move {
        while records_rx.changed().await.is_ok() {
            let endpoints = publish_endpoints(&records_rx.borrow_and_update());
            shards.set(endpoints);
        }
    });
    Ok(())
}

/// The publish endpoints of every well-formed relay record.
pub fn publish_endpoints(records: &etcd::Records) -> Vec<String> {
    etcd::relay_records(records)
        .into_iter()
        .map(|r| r.publish)
        .collect()
}

/// Returns at the first SIGTERM or SIGINT; a second one exits the process at once.
async fn wait_for_signal((mut term, mut int): (Option<Signal>, Option<Signal>)) {
    tokio::select! {
        _ = next_signal(&mut term) => {}
        _ = next_signal(&mut int) => {}
    }
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = next_signal(&mut term) => {}
            _ = next_signal(&mut int) => {}
        }
        warn!("second signal: exiting now");
        std::process::exit(1);
    });
}
