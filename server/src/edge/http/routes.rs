//! HTTP routes: the public listener (`/ws`, `/healthz`, `/stats`, and with `--demo`
//! the demo page, see [`super::demo`]) and the admin listener (`POST /drain`,
//! `/stats`, `/healthz`, and `GET /metrics` in the Prometheus text format), which
//! never shares the public port.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tracing::info;

use super::errors::{error, not_found_response};
use super::SharedData;
use crate::edge::telemetry::catalogue::{self, EdgeSnapshot};

/// Public routes.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws").route(web::get().to(not_an_upgrade)))
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/stats").route(web::get().to(stats)))
        .configure(super::demo::routes)
        .default_service(web::to(not_found));
}

/// Admin routes.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/drain").route(web::post().to(drain)))
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/stats").route(web::get().to(stats)))
        .service(resource("/metrics").route(web::get().to(prometheus)))
        .default_service(web::to(not_found));
}

/// A resource that answers 405 (not 404) to methods it does not serve.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    not_found_response(&format!("no route for {} {}", req.method(), req.path()))
}

/// 200 while ready, 503 while draining: load balancers stop sending new clients.
async fn healthz(shared: SharedData) -> HttpResponse {
    let state = shared.drain.state();
    let status = if shared.drain.is_draining() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    HttpResponse::build(status).json(json!({ "status": state, "edge_id": shared.metrics.edge_id }))
}

async fn stats(shared: SharedData) -> HttpResponse {
    let snapshot = EdgeSnapshot::read(&shared.metrics, shared.drain.is_draining());
    HttpResponse::Ok().json(catalogue::stats_json(
        &shared.metrics.edge_id,
        shared.drain.state(),
        &snapshot,
    ))
}

async fn prometheus(shared: SharedData) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(pushfleet_fleet::prometheus::CONTENT_TYPE)
        .body(catalogue::prometheus(
            &shared.metrics.edge_id,
            &EdgeSnapshot::read(&shared.metrics, shared.drain.is_draining()),
        ))
}

async fn drain(shared: SharedData) -> HttpResponse {
    if shared.drain.start() {
        info!("drain requested over the admin API");
    }
    HttpResponse::Accepted().json(json!({ "status": "draining" }))
}

/// `GET /ws` without an upgrade: WebSocket upgrades never reach the router (the
/// upgrade handler takes them with the socket), so this is always a plain request.
async fn not_an_upgrade() -> HttpResponse {
    error(
        StatusCode::BAD_REQUEST,
        "bad_handshake",
        "GET /ws must be a WebSocket upgrade (Upgrade: websocket)",
    )
}
