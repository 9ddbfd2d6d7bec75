//! Durations written the way people type them: `250ms`, `2s`, `1.5s`, `1m`.

use std::time::Duration;

/// Why a string is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses a duration: a number (decimals allowed) and a unit, `ns`, `us` (or `µs`), `ms`, `s`,
/// `m` or `h`: `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`. `"0"` is the only number allowed without a
/// unit; any other number without one is refused as ambiguous (seconds for some tools,
/// milliseconds for others).
///
/// # Errors
/// When the string is empty, has no or an unknown unit, a negative or non-finite number, or a
/// value past [`Duration::MAX`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use zrpc_transport::dynamic::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(parse_duration("10").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = |reason| DurationError { input: input.to_owned(), reason };
    let text = input.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| invalid(if text.is_empty() { "empty" } else { "no unit; write e.g. 250ms, 2s or 1m" }))?;
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(invalid("unknown unit; use ns, us, ms, s, m or h")),
    };
    if number.is_empty() {
        return Err(invalid("no number before the unit"));
    }
    // Whole numbers are exact (no float rounding of `1000000007ns`); fractions go through f64.
    if let Ok(whole) = number.parse::<u64>() {
        let exact = match unit {
            "ns" => Some(Duration::from_nanos(whole)),
            "us" | "µs" => Some(Duration::from_micros(whole)),
            "ms" => Some(Duration::from_millis(whole)),
            "s" => Some(Duration::from_secs(whole)),
            "m" => whole.checked_mul(60).map(Duration::from_secs),
            _ => whole.checked_mul(3600).map(Duration::from_secs),
        };
        return exact.ok_or_else(|| invalid("too long"));
    }
    let value: f64 = number.parse().map_err(|_| invalid("not a number"))?;
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| invalid("too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_fractions() {
        let cases = [
            ("0", Duration::ZERO),
            ("7ns", Duration::from_nanos(7)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("250ms", Duration::from_millis(250)),
            (" 2s ", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25ms", Duration::from_micros(250)),
            ("1m", Duration::from_secs(60)),
            ("2h", Duration::from_secs(7200)),
            ("1000000007ns", Duration::new(1, 7)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            ("", "empty"),
            ("10", "no unit"),
            ("10x", "unknown unit"),
            ("10 s", "unknown unit"),
            ("ms", "no number"),
            ("-1s", "unknown unit"),
            ("1.2.3s", "not a number"),
            ("99999999999999999999h", "too long"),
            ("18446744073709551615h", "too long"),
        ];
        for (text, reason) in cases {
            let error = parse_duration(text).expect_err(text).to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
