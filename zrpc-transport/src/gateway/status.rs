//! Statuses as HTTP answers: the code mapping and the JSON error body.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use zrpc_core::{Code, Status};

/// The HTTP status a zrpc status code is answered with, as grpc-gateway maps gRPC's codes (the
/// table is in the [module docs](super#a-call)).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => CLIENT_CLOSED_REQUEST,
        Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // `Unknown`, and codes a later version may add.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// nginx's "499 Client Closed Request", which grpc-gateway answers for `Cancelled`.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(code) => code,
    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
};

/// `status` as an HTTP answer: its mapped code and `{"code":..,"status":..,"message":..}`.
pub(crate) fn error_response(status: &Status) -> Response {
    error_with(http_status(status.code()), status.code(), status.message())
}

/// An error body with `code` and `message`, answered with `http`.
pub(crate) fn error_with(http: StatusCode, code: Code, message: &str) -> Response {
    let body = serde_json::json!({ "code": code.as_u8(), "status": code.name(), "message": message });
    (http, json_headers(), body.to_string()).into_response()
}

/// The `Content-Type` of every JSON answer.
pub(crate) fn json_headers() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))]
}

/// Any path the gateway has no route for.
pub(crate) async fn no_route(method: Method, uri: Uri) -> Response {
    let message = format!("no route for {method} {}; call methods with POST /{{service}}/{{method}}", uri.path());
    error_with(StatusCode::NOT_FOUND, Code::NotFound, &message)
}

/// A known path asked with the wrong HTTP method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let expected = if uri.path().starts_with("/-/") || uri.path() == "/" { "GET" } else { "POST" };
    let message = format!("{} takes {expected}, not {method}", uri.path());
    let mut response = error_with(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, &message);
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(expected));
    response
}
