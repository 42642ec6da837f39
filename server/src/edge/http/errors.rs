//! The edge's HTTP error replies: JSON objects with a machine-readable `error` code
//! and a `message` for people, as on every other pushfleet HTTP API.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::json;

/// An error reply with `status`, code and message.
pub fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message }))
}

/// The JSON 404.
pub fn not_found_response(message: &str) -> HttpResponse {
    error(StatusCode::NOT_FOUND, "not_found", message)
}
