//! The status listener: `GET /status` (JSON: every edge with its load signals,
//! score, weight and state, and recent decisions) and `GET /` (a page that shows
//! the same and refreshes every second), and `GET /metrics` (the Prometheus text
//! format).

use std::sync::{Arc, RwLock};

use actix_web::{web, HttpResponse};

use crate::state::State;

pub type Shared = web::Data<Arc<RwLock<State>>>;

/// Routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/status", web::get().to(status))
        .route("/metrics", web::get().to(prometheus))
        .route("/", web::get().to(page))
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status":"ok"})) }),
        )
        .default_service(web::to(|| async {
            HttpResponse::NotFound().json(serde_json::json!({"error":"not_found"}))
        }));
}

async fn status(state: Shared) -> HttpResponse {
    match state.read() {
        Ok(s) => HttpResponse::Ok().json(&*s),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn prometheus(state: Shared) -> HttpResponse {
    match state.read() {
        Ok(s) => HttpResponse::Ok()
            .content_type(pushfleet_fleet::prometheus::CONTENT_TYPE)
            .body(crate::metrics::prometheus(&s)),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("status.html"))
}
