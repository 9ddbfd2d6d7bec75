//! The framework error: a [`Code`] saying what kind of failure happened and a message saying
//! what happened where.
//!
//! Application errors are not `Status`: they are part of a method's own return type and travel
//! inside the response payload. A `Status` is what the framework reports — a deadline that
//! passed, a method nobody serves, a connection that died — and what a handler declared
//! `-> Result<T, Status>` fails a call with, when the failure is of a kind callers and
//! middleware should act on (`Unavailable` is retried by the retry layer and counted by the
//! breaker, `PermissionDenied` is not).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// What kind of failure a [`Status`] reports. The codes follow gRPC's so that they mean what
/// users of tonic or grpc-go expect; the numbers are the values sent on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[repr(u8)]
pub enum Code {
    /// Not an error; used on the wire for successful responses.
    Ok = 0,
    /// The call was cancelled, usually by the caller.
    Cancelled = 1,
    /// An error that fits no other code, such as a code unknown to this version.
    Unknown = 2,
    /// The request could not be decoded or was invalid on its face.
    InvalidArgument = 3,
    /// The deadline passed before the call completed.
    DeadlineExceeded = 4,
    /// The service or method does not exist on the server, or what the call asked for does not.
    NotFound = 5,
    /// What the call tried to create exists already.
    AlreadyExists = 6,
    /// A limit was hit: a rate or concurrency limit, a frame size.
    ResourceExhausted = 8,
    /// The system is not in the state the call needs (a non-empty directory to remove); the
    /// caller should not retry until the state is fixed.
    FailedPrecondition = 9,
    /// The call lost a race with another (a transaction conflict); retry the whole sequence.
    Aborted = 10,
    /// An argument is past the valid range (reading past the end of a file).
    OutOfRange = 11,
    /// The caller did not prove who it is.
    Unauthenticated = 16,
    /// The caller is known but not allowed.
    PermissionDenied = 7,
    /// The endpoint is unreachable, closing or overloaded; usually worth retrying elsewhere.
    Unavailable = 14,
    /// A bug on the server: a handler panicked or an invariant broke.
    Internal = 13,
    /// The peer does not implement what was asked, such as a codec.
    Unimplemented = 12,
    /// Data was lost or corrupted: an undecodable response.
    DataLoss = 15,
}

impl Code {
    /// The code for a wire value; values this version does not know become [`Code::Unknown`].
    pub fn from_u8(value: u8) -> Code {
        match value {
            0 => Code::Ok,
            1 => Code::Cancelled,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The value sent on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code's name as written here, `NotFound`: what metrics and spans label calls with.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "Ok",
            Code::Cancelled => "Cancelled",
            Code::Unknown => "Unknown",
            Code::InvalidArgument => "InvalidArgument",
            Code::DeadlineExceeded => "DeadlineExceeded",
            Code::NotFound => "NotFound",
            Code::AlreadyExists => "AlreadyExists",
            Code::ResourceExhausted => "ResourceExhausted",
            Code::Unauthenticated => "Unauthenticated",
            Code::PermissionDenied => "PermissionDenied",
            Code::FailedPrecondition => "FailedPrecondition",
            Code::Aborted => "Aborted",
            Code::OutOfRange => "OutOfRange",
            Code::Unavailable => "Unavailable",
            Code::Internal => "Internal",
            Code::Unimplemented => "Unimplemented",
            Code::DataLoss => "DataLoss",
        }
    }

    /// A short lowercase description, as used by `Display`.
    pub fn description(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::Cancelled => "cancelled",
            Code::Unknown => "unknown error",
            Code::InvalidArgument => "invalid argument",
            Code::DeadlineExceeded => "deadline exceeded",
            Code::NotFound => "not found",
            Code::AlreadyExists => "already exists",
            Code::ResourceExhausted => "resource exhausted",
            Code::FailedPrecondition => "failed precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out of range",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission denied",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal error",
            Code::Unimplemented => "unimplemented",
            Code::DataLoss => "data loss",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// A framework error: a [`Code`], a lowercase message saying what happened and where, and
/// optional opaque details.
///
/// `Display` prints the message (or the code's description when the message is empty), e.g.
/// `deadline of 500ms exceeded calling Greeter.hello on greeter-2`.
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: Cow<'static, str>,
    details: Bytes,
    unprocessed: bool,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<Cow<'static, str>>) -> Status {
        Status { code, message: message.into(), details: Bytes::new(), unprocessed: false }
    }

    /// Marks the failure as proof that the server never ran the handler: the request was not
    /// sent, was refused before processing (GOAWAY, a limit), or never reached an endpoint.
    /// Retry layers resend such calls even when the method is not idempotent.
    pub fn mark_unprocessed(mut self) -> Status {
        self.unprocessed = true;
        self
    }

    /// Whether the request is known not to have been processed; see [`Status::mark_unprocessed`].
    pub fn is_unprocessed(&self) -> bool {
        self.unprocessed
    }

    /// Attaches opaque details, carried on the wire as they are.
    pub fn with_details(mut self, details: Bytes) -> Status {
        self.details = details;
        self
    }

    /// The kind of failure.
    pub fn code(&self) -> Code {
        self.code
    }

    /// What happened and where.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Opaque details attached by whoever made the status.
    pub fn details(&self) -> &Bytes {
        &self.details
    }
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        impl Status {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<Cow<'static, str>>) -> Status {
                    Status::new(Code::$code, message)
                }
            )*
        }
    };
}

constructors! {
    /// A [`Code::Cancelled`] status.
    cancelled => Cancelled,
    /// A [`Code::Unknown`] status.
    unknown => Unknown,
    /// A [`Code::InvalidArgument`] status.
    invalid_argument => InvalidArgument,
    /// A [`Code::DeadlineExceeded`] status.
    deadline_exceeded => DeadlineExceeded,
    /// A [`Code::NotFound`] status.
    not_found => NotFound,
    /// A [`Code::AlreadyExists`] status.
    already_exists => AlreadyExists,
    /// A [`Code::ResourceExhausted`] status.
    resource_exhausted => ResourceExhausted,
    /// A [`Code::FailedPrecondition`] status.
    failed_precondition => FailedPrecondition,
    /// A [`Code::Aborted`] status.
    aborted => Aborted,
    /// A [`Code::OutOfRange`] status.
    out_of_range => OutOfRange,
    /// A [`Code::Unauthenticated`] status.
    unauthenticated => Unauthenticated,
    /// A [`Code::PermissionDenied`] status.
    permission_denied => PermissionDenied,
    /// A [`Code::Unavailable`] status.
    unavailable => Unavailable,
    /// A [`Code::Internal`] status.
    internal => Internal,
    /// A [`Code::Unimplemented`] status.
    unimplemented => Unimplemented,
    /// A [`Code::DataLoss`] status.
    data_loss => DataLoss,
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Status");
        s.field("code", &self.code).field("message", &self.message);
        if !self.details.is_empty() {
            s.field("details", &self.details);
        }
        if self.unprocessed {
            s.field("unprocessed", &true);
        }
        s.finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() { f.write_str(self.code.description()) } else { f.write_str(&self.message) }
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_value() {
        let codes = [
            Code::Ok,
            Code::Cancelled,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unavailable,
            Code::Internal,
            Code::Unimplemented,
            Code::DataLoss,
        ];
        for code in codes {
            assert_eq!(Code::from_u8(code.as_u8()), code);
            assert_eq!(code.name(), format!("{code:?}"), "the name is the variant's");
        }
        assert_eq!(Code::from_u8(200), Code::Unknown);
    }

    #[test]
    fn display_is_the_message_or_the_code() {
        assert_eq!(Status::not_found("unknown method Greeter.nope").to_string(), "unknown method Greeter.nope");
        assert_eq!(Status::new(Code::Unavailable, "").to_string(), "unavailable");
    }
}
