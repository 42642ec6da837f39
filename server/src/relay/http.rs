//! The relay's HTTP API, for backends that would rather not speak ZeroMQ:
//!
//! - `POST /publish` with `{"channel": "...", "event": "...", "data": <any JSON>}`;
//! - `POST /publish/batch` with a JSON array of such objects (at most [`MAX_BATCH`]);
//! - `GET /healthz`, `GET /stats`, and `GET /metrics` (Prometheus text format).
//!
//! Publishes are validated by the same rules as ZeroMQ ones (`docs/PROTOCOL.md`) and
//! handed to the core thread through an in-process queue. `data` is forwarded as
//! the exact JSON text the caller sent. A batch is validated as a whole first: one
//! bad item refuses the batch (400, naming the item) and publishes nothing.

use std::sync::{Arc, Mutex};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use pushfleet_protocol::publish;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering::Relaxed;

use super::metrics::RelayMetrics;

/// Most publishes in one batch request.
pub const MAX_BATCH: usize = 1000;
/// Largest batch body: 1000 items of several KiB each.
pub const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;
/// Room for the channel, event and JSON punctuation around `data` in a single publish.
const ENVELOPE_ALLOWANCE: usize = 4096;

/// What the handlers share.
pub struct HttpState {
    /// PUSH end of the HTTP → core queue.
    pub queue: Mutex<zmq::Socket>,
    pub metrics: Arc<RelayMetrics>,
    pub max_data: usize,
    pub relay_id: String,
    pub publish_endpoint: String,
    pub edge_endpoint: String,
}

pub type State = web::Data<HttpState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    channel: String,
    event: String,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn error(state: &HttpState, status: StatusCode, code: &str, message: &str) -> HttpResponse {
    state.metrics.http_rejected.fetch_add(1, Relaxed);
    HttpResponse::build(status).json(json!({ "error": code, "message": message }))
}

/// Routes; `max_data` sizes the single-publish body limit.
pub fn routes(cfg: &mut web::ServiceConfig, max_data: usize) {
    cfg.service(
        web::resource("/publish")
            .app_data(web::PayloadConfig::new(max_data + ENVELOPE_ALLOWANCE))
            .route(web::post().to(publish_one))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/publish/batch")
            .app_data(web::PayloadConfig::new(MAX_BATCH_BODY))
            .route(web::post().to(publish_batch))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/stats")
            .route(web::get().to(stats))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(prometheus))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

/// Checks one publish by the ZeroMQ rules; the error text names what is wrong.
fn validate(body: &PublishBody<'_>, max_data: usize) -> Result<(), String> {
    let frames = [
        body.channel.as_bytes(),
        body.event.as_bytes(),
        body.data.get().as_bytes(),
    ];
    publish::parse(&frames, max_data)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Queues validated publishes for the core; `Err(n)` when the queue filled after `n`.
fn enqueue(state: &HttpState, items: &[PublishBody<'_>]) -> Result<(), usize> {
    let Ok(socket) = state.queue.lock() else {
        return Err(0);
    };
    for (i, item) in items.iter().enumerate() {
        let sent = socket
            .send(item.channel.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| socket.send(item.event.as_bytes(), zmq::SNDMORE))
            .and_then(|()| socket.send(item.data.get().as_bytes(), 0));
        if sent.is_err() {
            return Err(i);
        }
        state.metrics.received_http.fetch_add(1, Relaxed);
    }
    Ok(())
}

fn busy(state: &HttpState, accepted: usize) -> HttpResponse {
    state.metrics.http_rejected.fetch_add(1, Relaxed);
    HttpResponse::ServiceUnavailable().json(json!({
        "error": "busy",
        "message": "the relay's publish queue is full; retry with backoff",
        "accepted": accepted,
    }))
}

async fn publish_one(state: State, body: web::Bytes) -> HttpResponse {
    let item: PublishBody<'_> = match serde_json::from_slice(&body) {
        Ok(item) => item,
        Err(e) => {
            return error(
                &state,
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("expected {{\"channel\", \"event\", \"data\"}}: {e}"),
            )
        }
    };
    if let Err(message) = validate(&item, state.max_data) {
        return error(&state, StatusCode::BAD_REQUEST, "invalid_publish", &message);
    }
    match enqueue(&state, std::slice::from_ref(&item)) {
        Ok(()) => HttpResponse::Accepted().json(json!({ "accepted": 1 })),
        Err(n) => busy(&state, n),
    }
}

async fn publish_batch(state: State, body: web::Bytes) -> HttpResponse {
    let items: Vec<PublishBody<'_>> = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(e) => {
            return error(
                &state,
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("expected an array of {{\"channel\", \"event\", \"data\"}}: {e}"),
            )
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return error(
            &state,
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            &format!(
                "a batch holds 1 to {MAX_BATCH} publishes, not {}",
                items.len()
            ),
        );
    }
    for (i, item) in items.iter().enumerate() {
        if let Err(message) = validate(item, state.max_data) {
            return error(
                &state,
                StatusCode::BAD_REQUEST,
                "invalid_publish",
                &format!("item {i}: {message}"),
            );
        }
    }
    match enqueue(&state, &items) {
        Ok(()) => HttpResponse::Accepted().json(json!({ "accepted": items.len() })),
        Err(n) => busy(&state, n),
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn stats(state: State) -> HttpResponse {
    HttpResponse::Ok().json(state.metrics.to_json(
        &state.relay_id,
        &state.publish_endpoint,
        &state.edge_endpoint,
    ))
}

async fn prometheus(state: State) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(pushfleet_fleet::prometheus::CONTENT_TYPE)
        .body(state.metrics.to_prometheus(&state.relay_id))
}

async fn method_not_allowed(state: State, req: HttpRequest) -> HttpResponse {
    error(
        &state,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

async fn not_found(state: State, req: HttpRequest) -> HttpResponse {
    error(
        &state,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {}", req.path()),
    )
}
