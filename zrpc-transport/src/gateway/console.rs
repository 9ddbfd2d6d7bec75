//! The web console: static HTML, CSS and vanilla JavaScript compiled into the binary.
//!
//! The page asks the gateway itself for everything it shows: `POST /zrpc.Reflection/list` for
//! the services, their methods and the JSON Schemas of their arguments, `GET /-/instances` for
//! the endpoints, and `POST /{service}/{method}` for the calls its forms make. No build step: the
//! files in `console/` are served as written.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::status::method_not_allowed;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// `router` with the console's routes added.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }).fallback(method_not_allowed))
        .route(
            "/-/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }).fallback(method_not_allowed),
        )
        .route("/-/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }).fallback(method_not_allowed))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body)
}
