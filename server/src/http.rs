//! HTTP routes: the public listener (`/ws`, `/healthz`, `/stats`) and the admin
//! listener (`POST /drain`, `/stats`, `/healthz`), which never shares the public port.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix_http::ws::{hash_key, verify_handshake, HandshakeError};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tracing::info;

use crate::codec::extension::negotiate_permessage_deflate;
use crate::outbox::OutboxStream;
use crate::session;
use crate::state::Shared;
use crate::worker::Worker;

pub type SharedData = web::Data<Arc<Shared>>;

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message }))
}

/// Public routes.
pub fn public_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/ws").route(web::get().to(upgrade)))
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/stats").route(web::get().to(stats)))
        .default_service(web::to(not_found));
}

/// Admin routes.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/drain").route(web::post().to(drain)))
        .service(resource("/healthz").route(web::get().to(healthz)))
        .service(resource("/stats").route(web::get().to(stats)))
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
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {} {}", req.method(), req.path()),
    )
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
    HttpResponse::Ok().json(shared.metrics.to_json(shared.drain.state()))
}

async fn drain(shared: SharedData) -> HttpResponse {
    if shared.drain.start() {
        info!("drain requested over the admin API");
    }
    HttpResponse::Accepted().json(json!({ "status": "draining" }))
}

fn handshake_status(e: &HandshakeError) -> StatusCode {
    match e {
        HandshakeError::GetMethodRequired => StatusCode::METHOD_NOT_ALLOWED,
        HandshakeError::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `GET /ws`: validates the upgrade, negotiates permessage-deflate, and hands the
/// connection to this thread's worker.
async fn upgrade(req: HttpRequest, payload: web::Payload, shared: SharedData) -> HttpResponse {
    let metrics = &shared.metrics;
    if let Err(e) = verify_handshake(req.head()) {
        metrics.handshake_failures.fetch_add(1, Relaxed);
        let mut response = error(handshake_status(&e), "bad_handshake", &e.to_string());
        if matches!(e, HandshakeError::UnsupportedVersion) {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                header::HeaderValue::from_static("13"),
            );
        }
        return response;
    }
    if shared.drain.is_draining() {
        metrics.connections_refused.fetch_add(1, Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "this edge is draining; connect to another",
        );
    }
    if metrics.connections.load(Relaxed) >= shared.config.max_connections as i64 {
        metrics.connections_refused.fetch_add(1, Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "over_capacity",
            "this edge holds its maximum number of connections",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        metrics.handshake_failures.fetch_add(1, Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            "bad_handshake",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = hash_key(key.as_bytes());
    let agreed = if shared.config.no_compression {
        None
    } else {
        negotiate_permessage_deflate(
            req.headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .filter_map(|v| v.to_str().ok()),
        )
    };
    let worker = Worker::current(&shared);
    let session = worker.open_session(agreed.is_some());
    let body = OutboxStream::new(
        session.outbox.clone(),
        session.compressed,
        worker.metrics.clone(),
    );
    actix_web::rt::spawn(session::serve(worker, session, payload));
    let mut response = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    response.upgrade("websocket");
    response.insert_header((header::SEC_WEBSOCKET_ACCEPT, accept.as_slice()));
    if let Some(agreed) = agreed {
        response.insert_header((header::SEC_WEBSOCKET_EXTENSIONS, agreed.response_header));
    }
    response.streaming(body)
}
