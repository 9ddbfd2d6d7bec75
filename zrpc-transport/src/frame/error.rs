//! What can go wrong while framing: every error a peer's bytes or an oversized value can cause.

/// Why bytes could not be decoded into a frame, or a value could not be encoded as one.
///
/// Every decoding error is a connection error: the stream is no longer in sync with the peer
/// (or the peer is not speaking zrpc), so the connection sends `GOAWAY` and closes. Encoding
/// errors concern one frame only and leave the output buffer unchanged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A frame's `length` field exceeds the receiver's maximum (decode), or an outgoing frame
    /// would exceed the peer's maximum (encode).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// The frame's `length`: the bytes after the length field.
        len: u64,
        /// The limit it was checked against.
        max: u32,
    },
    /// The peer's first bytes are not `ZRPC`: it does not speak zrpc (often an HTTP client).
    #[error("the peer did not send the zrpc preface")]
    BadPreface,
    /// A bad preface whose first byte begins a TLS record (a handshake or an alert): most likely
    /// one side of the connection is configured for TLS and the other is not.
    #[error("the peer sent what looks like TLS, not the zrpc preface; configure TLS on both sides or neither")]
    TlsInsteadOfPreface,
    /// The peer speaks a protocol version this build does not.
    #[error("unsupported protocol version {0} (this build speaks version 1)")]
    UnsupportedVersion(u8),
    /// A frame's `length` is below the 10 bytes its kind, flags and id take; refused from the
    /// length alone, before the rest of the frame arrives.
    #[error("frame length {len} is shorter than the 10-byte header it must cover")]
    TooShort {
        /// The frame's `length`.
        len: u32,
    },
    /// A field of a frame's body is invalid: it runs past the end of the body, is not UTF-8,
    /// or breaks a rule of its own (an empty method, a `max_frame` below the minimum, …).
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The frame kind, such as `"request"`.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The frame uses a feature this protocol version does not support. Version 1 decodes every
    /// feature it defines (compression included, since it is negotiated); kept for later ones.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A value is too long for its length field (encode side only).
    #[error("{field} of {len} bytes is longer than the maximum of {max}")]
    FieldTooLong {
        /// Which field, such as `"method"` or `"metadata key"`.
        field: &'static str,
        /// Its length (a count for `"metadata count"`).
        len: usize,
        /// The largest length the field can carry.
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_says_what_happened_in_lowercase() {
        let cases = [
            (
                FrameError::FrameTooLarge { len: u64::from(u32::MAX), max: 16 * 1024 * 1024 },
                "frame of 4294967295 bytes exceeds the limit of 16777216",
            ),
            (FrameError::BadPreface, "the peer did not send the zrpc preface"),
            (
                FrameError::TlsInsteadOfPreface,
                "the peer sent what looks like TLS, not the zrpc preface; configure TLS on both sides or neither",
            ),
            (FrameError::UnsupportedVersion(2), "unsupported protocol version 2 (this build speaks version 1)"),
            (FrameError::TooShort { len: 3 }, "frame length 3 is shorter than the 10-byte header it must cover"),
            (
                FrameError::Malformed { kind: "request", reason: "empty method" },
                "malformed request frame: empty method",
            ),
            (
                FrameError::FieldTooLong { field: "method", len: 300, max: 255 },
                "method of 300 bytes is longer than the maximum of 255",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
