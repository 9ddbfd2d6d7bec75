//! `POST /{service}/{method}`: one HTTP request, one zrpc call.

use std::sync::Arc;

use axum::BoxError;
use axum::body::{Body, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use zrpc_core::{Code, Status};

use super::Shared;
use super::headers;
use super::status::{error_response, error_with, json_headers};
use crate::dynamic::JsonAnswer;

/// Calls `service.method` with the request body as its JSON arguments and answers the outcome
/// as the [module docs](super#a-call) say: the route of [`into_router`](super::GatewayBuilder::into_router).
pub(crate) async fn call(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Path((service, method)) = match path {
        Ok(path) => path,
        Err(rejection) => return error_with(StatusCode::BAD_REQUEST, Code::InvalidArgument, &rejection.body_text()),
    };
    call_named(&shared, &format!("{service}.{method}"), &headers, body).await
}

/// The `service` and `method` of a call path, `/{service}/{method}`, when it can be read without
/// percent-decoding and is not the gateway's own (`/-/…`): the path [`Gateway`](super::Gateway)
/// serves without the router. Anything else is left to the router, which decodes, refuses and
/// answers `404`/`405` as the module docs say.
pub(crate) fn plain_call_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let plain = !service.is_empty() && service != "-" && !method.is_empty() && !method.contains('/');
    (plain && !path.contains('%')).then_some((service, method))
}

/// Calls `name` (`"Service.method"`) with `body`, in the context `headers` give.
pub(crate) async fn call_named<B>(shared: &Shared, name: &str, headers: &HeaderMap, body: B) -> Response
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let ctx = match headers::context(headers, shared.default_timeout, shared.max_timeout) {
        Ok(ctx) => ctx,
        Err(status) => return error_response(&status),
    };
    // The body counts against the call's deadline: a client that sends it slowly, or never,
    // holds its connection no longer than a call would.
    let read = read_body(body, shared.max_body);
    let read = match ctx.deadline() {
        Some(deadline) => tokio::time::timeout_at(deadline, read).await,
        None => Ok(read.await),
    };
    let args = match read {
        Ok(Ok(args)) => args,
        Ok(Err(response)) => return response,
        Err(_) => {
            return error_with(
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                "the request body did not arrive within the call's deadline",
            );
        }
    };
    let (answer, metadata) = match shared.dynamic.call_with_metadata(name, args, ctx).await {
        Ok(answered) => answered,
        Err(status) => return error_response(&status),
    };
    let mut response = match answer {
        JsonAnswer::Ok(result) => (StatusCode::OK, json_headers(), result).into_response(),
        JsonAnswer::Err(error) => {
            (StatusCode::UNPROCESSABLE_ENTITY, json_headers(), wrap_error(&error)).into_response()
        }
        JsonAnswer::Sent => StatusCode::ACCEPTED.into_response(),
    };
    headers::add_response_metadata(&metadata, response.headers_mut());
    response
}

/// The body, whole, if it is at most `limit` bytes; otherwise, or when reading it failed, the
/// answer to give.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(error_with(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            &format!("the request body is larger than the gateway's limit of {limit} bytes"),
        )),
        Err(e) => Err(error_response(&Status::cancelled(format!("could not read the request body: {e}")))),
    }
}

/// `{"error": E}` around an application error's JSON text, which the server wrote.
fn wrap_error(error: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(error.len() + 10);
    body.put_slice(b"{\"error\":");
    body.put_slice(error);
    body.put_u8(b'}');
    body.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_call_paths_skip_the_router() {
        assert_eq!(plain_call_path("/Shop/divide"), Some(("Shop", "divide")));
        assert_eq!(plain_call_path("/pkg.Shop/divide"), Some(("pkg.Shop", "divide")));
        for path in
            ["/", "/Shop", "/Shop/", "//divide", "/a/b/c", "/-/instances", "/%FF/x", "/Shop/d%69vide", "Shop/divide"]
        {
            assert_eq!(plain_call_path(path), None, "{path}");
        }
    }
}
