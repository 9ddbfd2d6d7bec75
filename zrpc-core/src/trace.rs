//! W3C trace context (`traceparent`): which trace a call belongs to and which span made it.

use std::fmt;

/// A trace id, a parent span id and the sampling flags, as in the W3C `traceparent` header
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// Identifies the whole trace; never all zeros.
    pub trace_id: u128,
    /// Identifies the span that made the call; never zero.
    pub span_id: u64,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// A new trace with random ids, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext { trace_id: fastrand::u128(1..), span_id: fastrand::u64(1..), flags: 1 }
    }

    /// The same trace with a new span id, for a downstream call.
    pub fn child(&self) -> TraceContext {
        TraceContext { span_id: fastrand::u64(1..), ..*self }
    }

    /// Parses a `traceparent` header value; `None` if it is not version 00 in the W3C format
    /// or carries all-zero ids.
    pub fn from_traceparent(value: &str) -> Option<TraceContext> {
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !(hex(trace) && hex(span) && hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext { trace_id, span_id, flags })
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.flags)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceContext({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tc = TraceContext::from_traceparent(text).expect("valid traceparent");
        assert_eq!(tc.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tc.span_id, 0x00f067aa0ba902b7);
        assert_eq!(tc.to_traceparent(), text);
        let child = tc.child();
        assert_eq!(child.trace_id, tc.trace_id);
        assert_ne!(child.span_id, tc.span_id);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }
}
