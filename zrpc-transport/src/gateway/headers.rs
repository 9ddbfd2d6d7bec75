//! A call's context from its HTTP headers (the deadline and the metadata), and the response
//! metadata as headers of the answer.
//!
//! Metadata values are bytes, header values text: a value travels as it is when it is printable
//! ASCII (`0x20..=0x7e`, not starting or ending with a space, which HTTP would trim), and
//! otherwise in standard base64 under the key with `-bin` appended, as gRPC carries binary
//! metadata. So a header `zrpc-meta-<name>-bin` always holds base64, in both directions, and
//! a key that itself ends in `-bin` always travels encoded (`zrpc-meta-trace-bin-bin`), so that
//! every header reads back to the one entry it came from.

use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use zrpc_core::{Context, Metadata, Status};

use crate::dynamic::parse_duration;

/// The header that sets a call's deadline: `zrpc-timeout: 250ms`.
pub(crate) const TIMEOUT: &str = "zrpc-timeout";

/// The prefix of headers forwarded as metadata: `zrpc-meta-tenant: a` is metadata `tenant`.
pub(crate) const META_PREFIX: &str = "zrpc-meta-";

/// The suffix of a header whose value is base64: `zrpc-meta-<key>-bin`.
pub(crate) const BINARY_SUFFIX: &str = "-bin";

/// The context of a call made for a request with `headers`: the deadline of its `zrpc-timeout`
/// (at most `max`, or `default` if that is longer: a client gets the default by sending none;
/// `default` without one), its `zrpc-meta-*` headers and `Authorization` as metadata.
///
/// # Errors
/// `InvalidArgument` for a `zrpc-timeout` that is not a duration, or a `zrpc-meta-*-bin`
/// header that is not base64.
pub(crate) fn context(headers: &HeaderMap, default: Duration, max: Duration) -> Result<Context, Status> {
    let timeout = match headers.get(TIMEOUT) {
        None => default,
        Some(value) => {
            let text =
                value.to_str().map_err(|_| Status::invalid_argument(format!("the {TIMEOUT} header is not text")))?;
            parse_duration(text.trim())
                .map_err(|e| Status::invalid_argument(format!("the {TIMEOUT} header {text:?} is not a duration: {e}")))?
                .min(max.max(default))
        }
    };
    let mut ctx = Context::new().with_timeout(timeout);
    let metadata = ctx.metadata_mut();
    for (name, value) in headers {
        // Header names come lowercase from hyper, whatever the client wrote.
        if let Some(key) = name.as_str().strip_prefix(META_PREFIX) {
            if let Some(key) = key.strip_suffix(BINARY_SUFFIX) {
                let value = BASE64.decode(value.as_bytes()).map_err(|e| {
                    Status::invalid_argument(format!(
                        "the {name} header is not base64 ({BINARY_SUFFIX} says it is): {e}"
                    ))
                })?;
                if !key.is_empty() {
                    metadata.append(key.to_owned(), Bytes::from(value));
                }
            } else if !key.is_empty() {
                metadata.append(key.to_owned(), Bytes::copy_from_slice(value.as_bytes()));
            }
        } else if name == AUTHORIZATION {
            metadata.append("authorization", Bytes::copy_from_slice(value.as_bytes()));
        }
    }
    Ok(ctx)
}

/// Adds each entry of `metadata` to `headers` as `zrpc-meta-<key>`, base64 under
/// `zrpc-meta-<key>-bin` when its value is not printable text (see the [module docs](self)).
/// Keys are lowercased, as HTTP header names are case-insensitive; an entry whose key cannot be
/// part of a header name (a space, a `:`, non-ASCII) is left out, logged at debug level: no
/// header could carry it, and failing the call the handler answered would lose its result.
pub(crate) fn add_response_metadata(metadata: &Metadata, headers: &mut HeaderMap) {
    for (key, value) in metadata.iter() {
        let printable = !key.ends_with(BINARY_SUFFIX)
            && value.iter().all(|b| (0x20..=0x7e).contains(b))
            && value.first() != Some(&b' ')
            && value.last() != Some(&b' ');
        let suffix = if printable { "" } else { BINARY_SUFFIX };
        let Ok(name) = HeaderName::try_from(format!("{META_PREFIX}{key}{suffix}")) else {
            tracing::debug!(key, "response metadata key is not a header name; not forwarded");
            continue;
        };
        let value =
            if printable { HeaderValue::from_bytes(value) } else { HeaderValue::try_from(BASE64.encode(value)) };
        // Printable ASCII and base64 are both valid header values: the error cannot happen.
        if let Ok(value) = value {
            headers.append(name, value);
        }
    }
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
        let ctx = context(&headers, Duration::from_secs(1), Duration::from_secs(1)).expect("valid headers");
        assert_eq!(ctx.metadata().get("tenant"), Some(&b"blue"[..]));
        assert_eq!(ctx.metadata().get("authorization"), Some(&b"Bearer t"[..]));
        assert_eq!(ctx.metadata().len(), 2);
    }

    #[test]
    fn a_timeout_header_sets_the_deadline_and_a_bad_one_is_invalid_argument() {
        let mut headers = HeaderMap::new();
        let (default, max) = (Duration::from_secs(3600), Duration::from_secs(7200));
        let ctx = context(&headers, default, max).expect("no header");
        assert!(ctx.remaining().is_some_and(|left| left <= default));
        headers.insert(TIMEOUT, HeaderValue::from_static("250ms"));
        let ctx = context(&headers, default, max).expect("a duration");
        assert!(ctx.remaining().is_some_and(|left| left <= Duration::from_millis(250)));
        headers.insert(TIMEOUT, HeaderValue::from_static("250"));
        let status = context(&headers, default, max).expect_err("no unit");
        assert_eq!(status.code(), zrpc_core::Code::InvalidArgument, "{status}");
    }

    #[test]
    fn a_timeout_header_past_the_most_allowed_is_cut_to_it() {
        let (default, max) = (Duration::from_secs(1), Duration::from_secs(2));
        let mut headers = HeaderMap::new();
        // Three hours, and then `u64::MAX` seconds, which no clock can add to now.
        for asked in ["3h", "18446744073709551615s"] {
            headers.insert(TIMEOUT, HeaderValue::from_static(asked));
            let ctx = context(&headers, default, max).expect("a duration");
            let left = ctx.remaining().expect("a deadline");
            assert!(left > default && left <= max, "{asked}: {left:?} left");
        }
        // Never below the default, which a client gets by sending no header at all.
        let ctx = context(&headers, Duration::from_secs(5), max).expect("a duration");
        let left = ctx.remaining().expect("a deadline");
        assert!(left > max && left <= Duration::from_secs(5), "{left:?} left");
    }
}
