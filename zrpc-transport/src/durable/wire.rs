//! How a durable message is stored in a log and acknowledged on the wire.
//!
//! - **Stored as a REQUEST frame.** Both logs keep a message as the protocol's own REQUEST frame
//!   (`docs/PROTOCOL.md` §5): id 1, no deadline, no durable fields; method, codec, flags,
//!   trace, metadata and payload as the call made them (the outbox) or as they arrived,
//!   decompressed (the inbox). So there is no second format to document, and reading one back
//!   goes through the frame decoder, which bounds-checks every field: a log that was tampered
//!   with gives a clear error for that message, never a panic.
//! - **The acknowledgement** is the durable request's RESPONSE (`docs/PROTOCOL.md` §19): OK
//!   with `recorded u64` big-endian as its payload, not codec-encoded; a gap is refused
//!   `Unavailable`, unprocessed, with `recorded` as the error's details.

use bytes::{Bytes, BytesMut};
use zrpc_core::{CodecId, Context, Method, Request, Response, Status};

use super::DurableError;
use super::inbox::Outcome;
use super::log::record::MAX_MESSAGE;
use crate::frame::{self, Decoder, Frame, FrameError, RequestFrame};

/// The id every stored request carries (a REQUEST's id is never 0).
const STORED_ID: u64 = 1;

/// `request` as a log stores it: a REQUEST frame without its deadline (a delivery attempt has
/// its own, and a handler its inbox's) and without a durable identity (the log's records carry
/// it).
///
/// # Errors
/// `InvalidArgument` for a request the protocol cannot carry (an empty or over-long method, an
/// over-long metadata key), `ResourceExhausted` for one larger than a log takes (16 MiB).
pub(crate) fn stored_request(mut request: Request) -> Result<Bytes, Status> {
    let ctx = request.ctx_mut();
    ctx.set_deadline(None);
    ctx.set_durable(None);
    let mut stored = BytesMut::new();
    frame::encode_request(&mut stored, STORED_ID, &request, MAX_MESSAGE as u32).map_err(|e| {
        let message = format!("durable message to {} not logged: {e}", request.method());
        match e {
            FrameError::FrameTooLarge { .. } => Status::resource_exhausted(message),
            _ => Status::invalid_argument(message),
        }
    })?;
    Ok(stored.freeze())
}

/// The request a log stored, with a new context holding its trace and metadata: the delivery
/// task sends it, the inbox's dispatcher hands it to its handler. `intern` gives the method
/// for its name's bytes without allocating (`Router::intern_bytes`, or the last one sent), if
/// it knows it.
///
/// # Errors
/// `DataLoss` for bytes that are not one whole REQUEST frame (the log's checksum passed, so
/// something wrote them wrong); `Unimplemented` for a codec this build does not have.
pub(crate) fn restore_request(stored: &Bytes, intern: impl FnOnce(&[u8]) -> Option<Method>) -> Result<Request, Status> {
    let frame = decode_stored(stored)
        .map_err(|e| Status::data_loss(format!("a stored durable message does not decode: {e}")))?;
    let codec = CodecId::from_u8(frame.codec).filter(|codec| codec.is_enabled()).ok_or_else(|| {
        Status::unimplemented(format!("a stored durable message has codec {}, not built in", frame.codec))
    })?;
    // A name `intern` knows is not checked again: the frame's decoding checked it.
    let method = intern(&frame.method).unwrap_or_else(|| std::sync::Arc::<str>::from(frame.method_str()).into());
    let mut ctx = Context::new();
    ctx.set_trace(frame.trace);
    *ctx.metadata_mut() = frame.metadata;
    Ok(Request::new(method, frame.payload)
        .with_ctx(ctx)
        .with_codec(codec)
        .with_oneway(frame.flags & frame::flags::ONEWAY != 0)
        .with_idempotent(frame.flags & frame::flags::IDEMPOTENT != 0))
}

/// The stored frame, decoded in place: its payload is a slice of `stored`, not a copy.
fn decode_stored(stored: &Bytes) -> Result<RequestFrame, FrameError> {
    let malformed = |reason| FrameError::Malformed { kind: "stored request", reason };
    match Decoder::new(MAX_MESSAGE as u32).decode_whole(stored)? {
        Some(Frame::Request(request)) if request.durable.is_none() => Ok(request),
        Some(Frame::Request(_)) => Err(malformed("a durable identity")),
        _ => Err(malformed("not a REQUEST frame")),
    }
}

/// The answer to a durable request from what the inbox did with it.
pub(crate) fn acknowledgement(outcome: Result<Outcome, DurableError>) -> Result<Response, Status> {
    match outcome {
        Ok(Outcome::Recorded { recorded } | Outcome::Duplicate { recorded }) => {
            Ok(Response::new(Bytes::copy_from_slice(&recorded.to_be_bytes())))
        }
        Ok(Outcome::Gap { recorded }) => Err(Status::unavailable(format!(
            "durable message not recorded: an earlier one is missing, the stream's next is {}",
            recorded + 1
        ))
        .mark_unprocessed()
        .with_details(Bytes::copy_from_slice(&recorded.to_be_bytes()))),
        Err(e) => Err(Status::from(e)),
    }
}

/// The `recorded` sequence an answer to a durable request carries: an acknowledgement's
/// payload, or a gap refusal's details; `None` for any other answer.
pub(crate) fn recorded(answer: &Result<Response, Status>) -> Option<u64> {
    let bytes = match answer {
        Ok(response) => response.payload(),
        Err(status) if status.code() == zrpc_core::Code::Unavailable => status.details(),
        Err(_) => return None,
    };
    <[u8; 8]>::try_from(&bytes[..]).ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_request_comes_back_without_deadline_with_its_trace_and_metadata() {
        let trace = zrpc_core::TraceContext::new_root();
        let ctx = Context::new()
            .with_timeout(std::time::Duration::from_secs(5))
            .with_trace(trace)
            .with_metadata("tenant", "blue");
        let request = Request::new("Ledger.record", Bytes::from_static(b"entry"))
            .with_ctx(ctx)
            .with_oneway(true)
            .with_idempotent(true);
        let stored = stored_request(request).expect("stored");
        let back = restore_request(&stored, |_| None).expect("restored");
        assert_eq!(back.method().as_str(), "Ledger.record");
        assert_eq!(&back.payload()[..], b"entry");
        assert!(back.is_oneway() && back.is_idempotent());
        assert_eq!(back.ctx().deadline(), None);
        assert_eq!(back.ctx().trace().map(|t| t.trace_id), Some(trace.trace_id));
        assert_eq!(back.ctx().metadata().get("tenant").map(|v| v.as_ref().to_vec()), Some(b"blue".to_vec()));
    }

    #[test]
    fn stored_bytes_that_are_not_one_request_are_data_loss_not_a_panic() {
        let request = Request::new("Ledger.record", Bytes::from_static(b"entry"));
        let stored = stored_request(request).expect("stored");
        for cut in 0..stored.len() {
            let status = restore_request(&stored.slice(..cut), |_| None).expect_err("truncated");
            assert_eq!(status.code(), zrpc_core::Code::DataLoss, "cut at {cut}");
        }
        let mut longer = stored.to_vec();
        longer.push(0);
        let status = restore_request(&Bytes::from(longer), |_| None).expect_err("trailing byte");
        assert_eq!(status.code(), zrpc_core::Code::DataLoss);
    }

    #[test]
    fn acknowledgements_and_gaps_carry_recorded_and_other_answers_do_not() {
        for outcome in [Outcome::Recorded { recorded: 7 }, Outcome::Duplicate { recorded: 7 }] {
            assert_eq!(recorded(&acknowledgement(Ok(outcome))), Some(7));
        }
        let gap = acknowledgement(Ok(Outcome::Gap { recorded: 3 }));
        assert_eq!(recorded(&gap), Some(3));
        assert!(gap.as_ref().is_err_and(Status::is_unprocessed));
        let full = acknowledgement(Err(DurableError::Full { path: "x".into(), used: 1, limit: 1 }));
        assert_eq!(full.as_ref().map_err(Status::code).err(), Some(zrpc_core::Code::ResourceExhausted));
        assert_eq!(recorded(&full), None);
        assert_eq!(recorded(&Err(Status::unavailable("connection lost"))), None);
    }
}
