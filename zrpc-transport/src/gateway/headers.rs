//! A call's context from its HTTP headers: the deadline and the metadata.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use bytes::Bytes;
use zrpc_core::{Context, Status};

use crate::dynamic::parse_duration;

/// The header that sets a call's deadline: `zrpc-timeout: 250ms`.
pub(crate) const TIMEOUT: &str = "zrpc-timeout";

/// The prefix of headers forwarded as metadata: `zrpc-meta-tenant: a` is metadata `tenant`.
pub(crate) const META_PREFIX: &str = "zrpc-meta-";

/// The context of a call made for a request with `headers`: the deadline of its `zrpc-timeout`
/// (`default` without one), its `zrpc-meta-*` headers and `Authorization` as metadata.
///
/// # Errors
/// `InvalidArgument` for a `zrpc-timeout` that is not a duration.
pub(crate) fn context(headers: &HeaderMap, default: Duration) -> Result<Context, Status> {
    let timeout = match headers.get(TIMEOUT) {
        None => default,
        Some(value) => {
            let text =
                value.to_str().map_err(|_| Status::invalid_argument(format!("the {TIMEOUT} header is not text")))?;
            parse_duration(text.trim()).map_err(|e| {
                Status::invalid_argument(format!("the {TIMEOUT} header {text:?} is not a duration: {e}"))
            })?
        }
    };
    let mut ctx = Context::new().with_timeout(timeout);
    let metadata = ctx.metadata_mut();
    for (name, value) in headers {
        // Header names come lowercase from hyper, whatever the client wrote.
        if let Some(key) = name.as_str().strip_prefix(META_PREFIX) {
            if !key.is_empty() {
                metadata.append(key.to_owned(), Bytes::copy_from_slice(value.as_bytes()));
            }
        } else if name == AUTHORIZATION {
            metadata.append("authorization", Bytes::copy_from_slice(value.as_bytes()));
        }
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn metadata_and_authorization_are_forwarded_and_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("zrpc-meta-tenant", HeaderValue::from_static("blue"));
        headers.insert("authorization", HeaderValue::from_static("Bearer t"));
        headers.insert("user-agent", HeaderValue::from_static("curl"));
        headers.insert("zrpc-meta-", HeaderValue::from_static("empty key"));
        let ctx = context(&headers, Duration::from_secs(1)).expect("valid headers");
        assert_eq!(ctx.metadata().get("tenant"), Some(&b"blue"[..]));
        assert_eq!(ctx.metadata().get("authorization"), Some(&b"Bearer t"[..]));
        assert_eq!(ctx.metadata().len(), 2);
    }

    #[test]
    fn a_timeout_header_sets_the_deadline_and_a_bad_one_is_invalid_argument() {
        let mut headers = HeaderMap::new();
        let default = Duration::from_secs(3600);
        let ctx = context(&headers, default).expect("no header");
        assert!(ctx.remaining().is_some_and(|left| left <= default));
        headers.insert(TIMEOUT, HeaderValue::from_static("250ms"));
        let ctx = context(&headers, default).expect("a duration");
        assert!(ctx.remaining().is_some_and(|left| left <= Duration::from_millis(250)));
        headers.insert(TIMEOUT, HeaderValue::from_static("250"));
        let status = context(&headers, default).expect_err("no unit");
        assert_eq!(status.code(), zrpc_core::Code::InvalidArgument, "{status}");
    }
}
