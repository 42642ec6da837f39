//! The demo page and the browser client, served on the public listener when the edge
//! runs with `--demo`: `/demo/` (the page, `clients/js/demo/index.html`) and
//! `/demo/pushfleet.js` (the client, `clients/js/pushfleet.js`), both compiled into
//! the binary. Through HAProxy the page and its WebSocket share one origin. `/`
//! redirects to the page. Without `--demo` these paths are 404 like any other.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::errors::not_found_response;
use super::SharedData;

const PAGE: &str = include_str!("../../../../clients/js/demo/index.html");
const CLIENT: &str = include_str!("../../../../clients/js/pushfleet.js");

/// Adds the demo routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/demo", web::get().to(root))
        .route("/demo/", web::get().to(page))
        .route("/demo/index.html", web::get().to(page))
        .route("/demo/pushfleet.js", web::get().to(client));
}

fn serve(shared: &SharedData, content_type: &str, body: &'static str) -> HttpResponse {
    if !shared.config.demo {
        return not_found_response("the demo page is off (start the edge with --demo)");
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        // Small and compiled in: a browser may keep it briefly.
        .insert_header((header::CACHE_CONTROL, "max-age=60"))
        .body(body)
}

async fn root(shared: SharedData) -> HttpResponse {
    if !shared.config.demo {
        return not_found_response("no route for GET /");
    }
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/demo/"))
        .finish()
}

async fn page(shared: SharedData) -> HttpResponse {
    serve(&shared, "text/html; charset=utf-8", PAGE)
}

async fn client(shared: SharedData) -> HttpResponse {
    serve(&shared, "text/javascript; charset=utf-8", CLIENT)
}
