//! How a durable message is stored in a log and acknowledged on the wire.
//!
//! - **Stored as a REQUEST frame.** Both logs keep a message as the protocol's own REQUEST frame
//!   (`docs/PROTOCOL.md` §5): id 1, no deadline, no durable fields; method, codec, flags, trace,
//!   metadata and payload as the call made them (the outbox, and the inbox for the messages of a
//!   batch, which are the outbox's bytes) or as they arrived, decompressed (the inbox, for a
//!   message that came alone). So there is no second format to document, and reading one back goes
//!   through the frame decoder, which bounds-checks every field: a log that was tampered with gives
//!   a clear error for that message, never a panic.
//! - **A batch** (`docs/PROTOCOL.md` §19, "Batches") carries its messages' stored frames back
//!   to back as its payload: the delivery task sends the log's bytes as they are, and the
//!   receiver splits them ([`batch_messages`]) and records each as it came.
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
    restored(frame, intern)
}

/// The request of a stored frame already decoded; see [`restore_request`].
///
/// # Errors
/// `Unimplemented` for a codec this build does not have.
pub(crate) fn restored(frame: RequestFrame, intern: impl FnOnce(&[u8]) -> Option<Method>) -> Result<Request, Status> {
    let codec = CodecId::from_u8(frame.codec).filter(|codec| codec.is_enabled()).ok_or_else(|| {
        Status::unimplemented(format!("a stored durable message has codec {}, not built in", frame.codec))
    })?;
    // A name `intern` knows is not checked again: the frame's decoding checked it.
    let method = intern(&frame.method).unwrap_or_else(|| std::sync::Arc::<str>::from(frame.method_str()).into());
    let mut ctx = Context::new();
    ctx.set_trace(frame.trace);
    *ctx.metadata_mut() = frame.metadata;
    Ok(Request::from_parts(method, ctx, frame.payload)
        .with_codec(codec)
        .with_oneway(frame.flags & frame::flags::ONEWAY != 0)
        .with_idempotent(frame.flags & frame::flags::IDEMPOTENT != 0))
}

/// The `count` stored requests a durable batch's payload carries back to back (`docs/PROTOCOL.md`
/// §19), each as its own copy (not holding the connection's buffer) with its decoded frame.
///
/// # Errors
/// `InvalidArgument` for a payload that is not exactly `count` whole stored REQUEST frames
/// (bounds-checked, never a panic), or for one whose payload is compressed (a stored request's
/// never is).
pub(crate) fn batch_messages(payload: &Bytes, count: u32) -> Result<Vec<(Bytes, RequestFrame)>, Status> {
    let invalid = |n: u32, why: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("message {n} of a durable batch of {count}: {why}"))
    };
    let mut messages = Vec::with_capacity(count as usize);
    let mut rest = &payload[..];
    for n in 1..=count {
        let len = rest
            .get(..4)
            .map(|field| u32::from_be_bytes([field[0], field[1], field[2], field[3]]) as usize)
            .and_then(|len| len.checked_add(4))
            .filter(|&len| len <= rest.len())
            .ok_or_else(|| invalid(n, &"the payload ends inside it"))?;
        let (bytes, after) = rest.split_at(len);
        rest = after;
        let message = Bytes::copy_from_slice(bytes);
        let frame = decode_stored(&message).map_err(|e| invalid(n, &e))?;
        if frame.flags & frame::flags::COMPRESSED != 0 {
            return Err(invalid(n, &"a stored request is never compressed"));
        }
        messages.push((message, frame));
    }
    if !rest.is_empty() {
        return Err(invalid(count, &format!("{} bytes follow the last", rest.len())));
    }
    Ok(messages)
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
///
/// `outcomes` are those of the request's messages, in sequence order: one, or a batch's. The
/// answer is the acknowledgement of the highest `recorded` when every message was recorded or
/// already was; otherwise the first refusal (a gap's carries the stream's `recorded`, which
/// counts the batch's messages recorded before it; after any other, the sender sends them
/// again and they are duplicates).
pub(crate) fn acknowledgement(
    outcomes: impl IntoIterator<Item = Result<Outcome, DurableError>>,
) -> Result<Response, Status> {
    let mut highest = None;
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::Recorded { recorded } | Outcome::Duplicate { recorded }) => {
                highest = highest.max(Some(recorded));
            }
            Ok(Outcome::Gap { recorded }) => {
                return Err(Status::unavailable(format!(
                    "durable message not recorded: an earlier one is missing, the stream's next is {}",
                    recorded + 1
                ))
                .mark_unprocessed()
                .with_details(Bytes::copy_from_slice(&recorded.to_be_bytes())));
            }
            Err(e) => return Err(Status::from(e)),
        }
    }
    let recorded = highest.ok_or_else(|| Status::internal("a durable request recorded no message"))?;
    Ok(Response::new(Bytes::copy_from_slice(&recorded.to_be_bytes())))
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
            assert_eq!(recorded(&acknowledgement([Ok(outcome)])), Some(7));
        }
        let gap = acknowledgement([Ok(Outcome::Gap { recorded: 3 })]);
        assert_eq!(recorded(&gap), Some(3));
        assert!(gap.as_ref().is_err_and(Status::is_unprocessed));
        let full = acknowledgement([Err(DurableError::Full { path: "x".into(), used: 1, limit: 1 })]);
        assert_eq!(full.as_ref().map_err(Status::code).err(), Some(zrpc_core::Code::ResourceExhausted));
        assert_eq!(recorded(&full), None);
        assert_eq!(recorded(&Err(Status::unavailable("connection lost"))), None);
    }

    #[test]
    fn a_batch_is_acknowledged_up_to_its_highest_or_refused_at_its_first_refusal() {
        let batch =
            [Outcome::Duplicate { recorded: 5 }, Outcome::Recorded { recorded: 6 }, Outcome::Recorded { recorded: 7 }];
        assert_eq!(recorded(&acknowledgement(batch.map(Ok))), Some(7));
        let gap_after = [Ok(Outcome::Recorded { recorded: 6 }), Ok(Outcome::Gap { recorded: 6 })];
        let gap = acknowledgement(gap_after);
        assert_eq!((recorded(&gap), gap.as_ref().is_err_and(Status::is_unprocessed)), (Some(6), true));
        let full_after =
            [Ok(Outcome::Recorded { recorded: 6 }), Err(DurableError::Full { path: "x".into(), used: 1, limit: 1 })];
        assert_eq!(acknowledgement(full_after).map_err(|s| s.code()).err(), Some(zrpc_core::Code::ResourceExhausted));
        assert_eq!(acknowledgement([]).map_err(|s| s.code()).err(), Some(zrpc_core::Code::Internal));
    }

    #[test]
    fn a_batch_payload_splits_into_exactly_its_stored_requests_and_anything_else_is_invalid() {
        let stored: Vec<Bytes> = ["Ledger.record", "Ledger.close", "Ledger.record"]
            .iter()
            .enumerate()
            .map(|(n, method)| {
                stored_request(Request::new(*method, Bytes::from(vec![n as u8; n + 1]))).expect("stored")
            })
            .collect();
        let payload = Bytes::from(stored.concat());
        let messages = batch_messages(&payload, 3).expect("three");
        for ((bytes, frame), stored) in messages.iter().zip(&stored) {
            assert_eq!(bytes, stored);
            assert_eq!(frame.payload, restore_request(stored, |_| None).expect("restored").payload().clone());
        }
        assert_eq!(messages[1].1.method_str(), "Ledger.close");

        let invalid = |payload: &[u8], count| {
            let status = batch_messages(&Bytes::copy_from_slice(payload), count).expect_err("invalid");
            assert_eq!(status.code(), zrpc_core::Code::InvalidArgument, "{status}");
        };
        // Every cut, fewer or more messages than said, a trailing byte, a frame that is not one.
        for cut in 0..payload.len() {
            invalid(&payload[..cut], 3);
        }
        invalid(&payload, 2);
        invalid(&payload, 4);
        invalid(&[&payload[..], &[0]].concat(), 3);
        let mut damaged = payload.to_vec();
        damaged[4] = 0x7f;
        invalid(&damaged, 3);
        invalid(&[0xff; 12], 2);
    }
}
