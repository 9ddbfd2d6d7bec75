//! The connection preface: the 8 bytes each side sends before any frame.

use bytes::{Buf, BufMut, BytesMut};

use super::{FrameError, MAGIC, PREFACE_LEN, VERSION};

/// Appends this build's preface: `ZRPC`, the version, three reserved zero bytes.
pub fn encode_preface(dst: &mut BytesMut) {
    dst.reserve(PREFACE_LEN);
    dst.put_slice(&MAGIC);
    dst.put_u8(VERSION);
    dst.put_bytes(0, PREFACE_LEN - MAGIC.len() - 1);
}

/// Checks the peer's preface at the front of `src`.
///
/// Returns `Ok(true)` once 8 valid bytes were consumed, `Ok(false)` when fewer than 8 bytes
/// arrived so far and they agree with a valid preface (nothing is consumed). The reserved bytes
/// are ignored.
///
/// # Errors
/// Fails as soon as a byte disagrees, without waiting for all 8: [`FrameError::BadPreface`]
/// when a magic byte differs (`GET / HTTP/1.1` fails on its first byte), or
/// [`FrameError::TlsInsteadOfPreface`] when the first byte is that of a TLS record;
/// [`FrameError::UnsupportedVersion`] when the version byte is not [`VERSION`].
pub fn decode_preface(src: &mut BytesMut) -> Result<bool, FrameError> {
    if src.iter().zip(MAGIC.iter()).any(|(got, want)| got != want) {
        return Err(if looks_like_tls(src) { FrameError::TlsInsteadOfPreface } else { FrameError::BadPreface });
    }
    match src.get(MAGIC.len()) {
        Some(&version) if version != VERSION => return Err(FrameError::UnsupportedVersion(version)),
        _ => {}
    }
    if src.len() < PREFACE_LEN {
        return Ok(false);
    }
    src.advance(PREFACE_LEN);
    Ok(true)
}

/// Whether `bytes` begin like a TLS record: a handshake (a client's hello) or an alert (a server
/// refusing what it got). Only a hint for the error message, decided on the first byte alone so
/// that the error does not depend on how the bytes were split into reads.
fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [0x15 | 0x16, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_is_magic_version_and_three_zero_bytes() {
        let mut buf = BytesMut::new();
        encode_preface(&mut buf);
        assert_eq!(&buf[..], b"ZRPC\x01\x00\x00\x00");
        buf.extend_from_slice(b"next");
        assert_eq!(decode_preface(&mut buf), Ok(true));
        assert_eq!(&buf[..], b"next", "only the preface is consumed");
    }

    #[test]
    fn partial_preface_needs_more_and_consumes_nothing() {
        let mut full = BytesMut::new();
        encode_preface(&mut full);
        for cut in 0..PREFACE_LEN {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode_preface(&mut buf), Ok(false), "{cut} bytes");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn reserved_bytes_are_ignored() {
        let mut buf = BytesMut::from(&b"ZRPC\x01\xff\x10\x01"[..]);
        assert_eq!(decode_preface(&mut buf), Ok(true));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_tls_record_is_named_as_such() {
        // The start of a ClientHello, and of an alert a TLS server sends a plain client.
        for record in [&b"\x16\x03\x01\x02\x00\x01"[..], b"\x15\x03\x03\x00\x02"] {
            let mut buf = BytesMut::from(record);
            assert_eq!(decode_preface(&mut buf), Err(FrameError::TlsInsteadOfPreface), "{record:?}");
        }
        // The first byte decides, so that the error is the same however the bytes arrive.
        let mut buf = BytesMut::from(&b"\x16"[..]);
        assert_eq!(decode_preface(&mut buf), Err(FrameError::TlsInsteadOfPreface));
    }

    #[test]
    fn http_request_fails_on_its_first_byte() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(decode_preface(&mut buf), Err(FrameError::BadPreface));
        for prefix in [&b"G"[..], b"Z", b"ZR", b"ZRP"] {
            let mut buf = BytesMut::from(prefix);
            let expected = if prefix == b"G" { Err(FrameError::BadPreface) } else { Ok(false) };
            assert_eq!(decode_preface(&mut buf), expected, "{prefix:?}");
        }
        let mut buf = BytesMut::from(&b"ZRPX"[..]);
        assert_eq!(decode_preface(&mut buf), Err(FrameError::BadPreface));
    }

    #[test]
    fn other_version_is_refused_once_its_byte_arrives() {
        let mut buf = BytesMut::from(&b"ZRPC\x02"[..]);
        assert_eq!(decode_preface(&mut buf), Err(FrameError::UnsupportedVersion(2)));
        let mut buf = BytesMut::from(&b"ZRPC\x00\x00\x00\x00"[..]);
        assert_eq!(decode_preface(&mut buf), Err(FrameError::UnsupportedVersion(0)));
    }
}
