//! Command-line values that both programs (`compare`, `soak`) parse.

use std::time::Duration;

use crate::BoxError;

/// A duration given in seconds, fractions allowed (`0.5`).
///
/// # Errors
/// If `s` is not a number of seconds that a [`Duration`] can hold.
pub fn seconds(s: &str) -> Result<Duration, BoxError> {
    let secs: f64 = s.parse()?;
    Ok(Duration::try_from_secs_f64(secs)?)
}

/// A command line split at spaces, as a program's arguments after its name: for tests of the
/// programs' option parsing.
#[cfg(test)]
pub(crate) fn split(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}
