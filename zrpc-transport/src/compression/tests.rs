//! Compression round trips, and every way a payload can lie about itself.

use super::*;

/// 64 KiB that compress well but not to nothing: repeated text with a counter.
fn compressible() -> Vec<u8> {
    (0..4096).flat_map(|i: u32| format!("item {i:08} ").into_bytes()).take(64 * 1024).collect()
}

#[cfg(feature = "compression")]
/// A payload `compression` made of `data`, declaring `declared` bytes instead of its own length.
fn lying(compression: Compression, data: &[u8], declared: u32) -> Vec<u8> {
    let mut payload = compress(compression, data).expect("compresses").to_vec();
    payload[1..COMPRESSED_HEADER_LEN].copy_from_slice(&declared.to_be_bytes());
    payload
}

#[cfg(feature = "compression")]
#[test]
fn every_algorithm_round_trips_and_shrinks() {
    let data = compressible();
    for compression in Compression::ALL {
        let payload = compress(compression, &data).expect("compresses");
        let (header, stream) = CompressedHeader::split(&payload).expect("a header");
        assert_eq!(header, CompressedHeader { compression: compression.id(), len: data.len() as u32 });
        assert!(stream.len() < data.len() / 2, "{compression}: {} of {} bytes", stream.len(), data.len());
        let limit = data.len() as u32;
        assert_eq!(decompress(&payload, limit).as_deref(), Ok(&data[..]), "{compression}");
    }
    assert_eq!(available().collect::<Vec<_>>(), Compression::ALL);
}

#[cfg(feature = "compression")]
#[test]
fn a_payload_that_does_not_shrink_is_not_compressed() {
    let mut rng = fastrand::Rng::with_seed(12);
    let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(4096).collect();
    for compression in Compression::ALL {
        assert_eq!(compress(compression, &noise), None, "{compression}");
        assert_eq!(compress(compression, b""), None, "{compression}: nothing to gain");
    }
}

#[cfg(feature = "compression")]
#[test]
fn a_declared_length_over_the_limit_is_refused_from_the_header() {
    // The 4 GiB bomb: refused from its five header bytes, whatever follows them.
    for compression in Compression::ALL {
        let bomb = lying(compression, &compressible(), u32::MAX);
        let err = decompress(&bomb, 16 << 20).expect_err("over the limit");
        assert_eq!(err, DecompressError::TooLarge { declared: u32::MAX, limit: 16 << 20 });
        assert_eq!(err.to_string(), "the payload declares 4294967295 bytes uncompressed, over the limit of 16777216");
        assert_eq!((err.request_code(), err.response_code()), (Code::ResourceExhausted, Code::ResourceExhausted));
    }
    // The limit itself is allowed.
    let data = compressible();
    let payload = compress(Compression::ALL[0], &data).expect("compresses");
    assert!(decompress(&payload, data.len() as u32).is_ok());
    assert!(matches!(decompress(&payload, data.len() as u32 - 1), Err(DecompressError::TooLarge { .. })));
}

#[cfg(feature = "compression")]
#[test]
fn a_stream_longer_or_shorter_than_declared_fails() {
    // 1 MiB of zeros compresses to a few hundred bytes: declared as 1 KiB, it must stop there.
    let zeros = vec![0; 1 << 20];
    for compression in Compression::ALL {
        let bomb = lying(compression, &zeros, 1024);
        assert!(bomb.len() < 8 * 1024, "{compression}: a small bomb, {} bytes", bomb.len());
        assert_eq!(
            decompress(&bomb, 16 << 20),
            Err(DecompressError::Longer { compression, declared: 1024 }),
            "{compression}"
        );

        let data = compressible();
        let short = lying(compression, &data, data.len() as u32 + 1);
        let err = decompress(&short, 16 << 20).expect_err("shorter than declared");
        assert_eq!(err, DecompressError::Shorter { compression, declared: data.len() as u32 + 1, actual: data.len() });
        assert_eq!((err.request_code(), err.response_code()), (Code::InvalidArgument, Code::DataLoss));
    }
}

#[cfg(feature = "compression")]
#[test]
fn corrupt_and_truncated_streams_fail_without_panicking() {
    let data = compressible();
    for compression in Compression::ALL {
        let payload = compress(compression, &data).expect("compresses");
        // Truncations (every one near both ends, every 61st between) and flipped bytes: an error
        // or (for a flip a format without checksums cannot see) other bytes of the declared
        // length, never a panic and never more than declared.
        let (first, last) = (COMPRESSED_HEADER_LEN + 64, payload.len().saturating_sub(64));
        let cuts = (COMPRESSED_HEADER_LEN..first).chain((first..last).step_by(61)).chain(last..payload.len());
        for cut in cuts {
            assert!(decompress(&payload[..cut], 1 << 20).is_err(), "{compression} cut at {cut}");
        }
        for at in (COMPRESSED_HEADER_LEN..payload.len()).step_by(61) {
            let mut flipped = payload.to_vec();
            flipped[at] ^= 0x5a;
            if let Ok(out) = decompress(&flipped, 1 << 20) {
                assert_eq!(out.len(), data.len());
            }
        }
        let garbage = [&payload[..COMPRESSED_HEADER_LEN], b"not a stream at all"].concat();
        let err = decompress(&garbage, 1 << 20).expect_err("garbage");
        assert!(
            matches!(err, DecompressError::Corrupt { .. } | DecompressError::Shorter { .. }),
            "{compression}: {err}"
        );
        assert_eq!(err.request_code(), Code::InvalidArgument);
    }
}

#[test]
fn an_unknown_or_unavailable_id_is_not_announced() {
    for id in [0, 4, 255] {
        let payload = [id, 0, 0, 0, 1, 0];
        assert_eq!(decompress(&payload, 1024), Err(DecompressError::NotAnnounced(id)));
    }
    assert_eq!(decompress(&[1, 0, 0], 1024), Err(DecompressError::Truncated));
    for compression in Compression::ALL {
        if !is_available(compression) {
            let payload = [compression.id(), 0, 0, 0, 1, 0];
            assert_eq!(decompress(&payload, 1024), Err(DecompressError::NotAnnounced(compression.id())));
            assert_eq!(compress(compression, &compressible()), None);
        }
    }
    assert_eq!(DecompressError::NotAnnounced(9).to_string(), "compression id 9 was not announced by this side");
}

#[test]
fn settings_pick_the_calls_choice_then_the_default_above_the_threshold() {
    let all = Accepted::from_ids(&[1, 2, 3, 0, 200]);
    assert!(Compression::ALL.into_iter().all(|c| all.contains(c)), "unknown ids are ignored");
    assert_eq!(Accepted::from_bits(all.bits()), all);
    let none = Accepted::from_ids(&[]);
    let zstd = Compression::Zstd;
    let settings = Settings { algorithm: Some(zstd), threshold: 1024 };
    let available = |c: Compression| is_available(c).then_some(c);

    assert_eq!(settings.pick(None, 1024, all), available(zstd), "at the threshold");
    assert_eq!(settings.pick(None, 1023, all), None, "under it");
    assert_eq!(settings.pick(None, 4096, none), None, "a peer that announced none");
    assert_eq!(settings.pick(Some(None), 4096, all), None, "the call said no");
    assert_eq!(settings.pick(Some(Some(Compression::Gzip)), 4096, all), available(Compression::Gzip));
    assert_eq!(settings.pick(Some(Some(Compression::Gzip)), 4096, Accepted::from_ids(&[1])), None);
    assert_eq!(Settings::default().pick(None, 1 << 20, all), None, "off unless configured");
    assert_eq!(Settings::default().pick(Some(Some(zstd)), 1 << 20, all), available(zstd), "or chosen per call");
}
