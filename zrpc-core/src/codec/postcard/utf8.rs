//! UTF-8 validation of the strings postcard reads: 64 bytes at a time where that pays, the
//! standard library's `str::from_utf8` where it does not. `String` fields are checked here,
//! and so is a `zrpc::Text` that is copied rather than shared (`zero_copy`'s `TextVisitor`).
//!
//! [`simdutf8`] checks 64 bytes per step (AVX2 or SSE 4.2 on x86-64, chosen at run time; NEON
//! on aarch64) and hands anything shorter to `str::from_utf8`, which checks a character at a
//! time. Most strings in messages are shorter than 64 bytes, so:
//!
//! - 64 bytes and more: `simdutf8` on the input itself ([`borrowed`]).
//! - 32 to 63 bytes, when the string is copied anyway (decoded into a `String`: [`copied`]):
//!   copied first into 64 zeroed bytes, and those validated in one step. The zeros are ASCII,
//!   so the copy is valid UTF-8 exactly when the string is (a character cut off at the
//!   string's end stays cut off), and the string is the copy's first `len` bytes.
//! - Shorter strings, and borrowed ones under 64 bytes: `str::from_utf8`. Under 32 bytes its
//!   check costs less than the copy and the step.
//!
//! Measured per string, in a loop over the benchmark message's eight (AMD EPYC, 2026-11-30):
//! the 54- and 45-byte Chinese ones took 32.7 and 27.4 ns with `str::from_utf8` and 16.1 and
//! 16.2 ns padded; the 51-byte ASCII one 11.2 and 9.9 ns; the 6- and 15-byte Chinese ones 6.2
//! and 11.0 ns with `str::from_utf8`, 15.7 ns padded; ASCII ones of 11 to 21 bytes 7 to 10 ns,
//! 9.5 ns padded. Hence the 32.
//!
//! When `simdutf8` finds an error, `str::from_utf8` looks again: it decides, and its error
//! says where the bad byte is. Nothing here is `unsafe`: `simdutf8`'s safe functions return
//! the `&str`.

use std::str::Utf8Error;

/// What one SIMD step validates; shorter input goes to `str::from_utf8` inside `simdutf8`.
const STEP: usize = 64;

/// The shortest string validated on a padded copy: see the module docs.
const PADDED_MIN: usize = 32;

/// `bytes` as text, borrowed from them.
#[inline]
pub(super) fn borrowed(bytes: &[u8]) -> Result<&str, Utf8Error> {
    if bytes.len() >= STEP
        && let Ok(text) = simdutf8::basic::from_utf8(bytes)
    {
        return Ok(text);
    }
    std::str::from_utf8(bytes)
}

/// Calls `copy` with `bytes` as text, which `copy` copies: what it is given may be a padded
/// copy of `bytes` that lives only for the call.
#[inline]
pub(crate) fn copied<R>(bytes: &[u8], copy: impl FnOnce(&str) -> R) -> Result<R, Utf8Error> {
    if (PADDED_MIN..STEP).contains(&bytes.len()) {
        let mut padded = [0u8; STEP];
        if let Some(front) = padded.get_mut(..bytes.len()) {
            front.copy_from_slice(bytes);
        }
        if let Ok(text) = simdutf8::basic::from_utf8(&padded)
            && let Some(text) = text.get(..bytes.len())
        {
            return Ok(copy(text));
        }
    }
    borrowed(bytes).map(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::SharedRng;

    /// Every length around the thresholds, valid and broken in every way UTF-8 can be broken,
    /// at every position: both functions agree with `str::from_utf8`, errors included.
    #[test]
    fn agrees_with_the_standard_library() {
        let text = "许多往事在眼前一幕一幕，变的那麼模糊 a]b]c 😀 é ß 在这个世界上，没有什么是永恒的";
        let breakers: [&[u8]; 9] = [
            &[0x80],                   // a continuation byte alone
            &[0xc0, 0x80],             // an overlong 0
            &[0xe4, 0xb8],             // a character cut short
            &[0xed, 0xa0, 0x80],       // a surrogate
            &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
            &[0xff],                   // never in UTF-8
            &[0xf0, 0x9f, 0x98],       // four bytes cut to three
            &[0xe4],                   // a lead byte alone
            &[0],                      // valid: NUL is ASCII
        ];
        let mut checked = 0;
        for len in 0..=140 {
            let valid: Vec<u8> = text.bytes().cycle().take(len).collect();
            for at in 0..=len {
                for breaker in breakers {
                    let mut bytes = valid.clone();
                    bytes.splice(at..at, breaker.iter().copied());
                    check(&bytes);
                    checked += 1;
                }
            }
            check(&valid);
        }
        assert_eq!(checked, breakers.len() * 141 * 142 / 2, "every length from 0 to 140, every position");
    }

    /// Random bytes, and random valid text with one byte changed.
    #[test]
    fn agrees_with_the_standard_library_on_random_input() {
        let rng = SharedRng::with_seed(0x5eed_07f8);
        let text: Vec<char> = "中国 hello 😀 é ß x".chars().collect();
        for _ in 0..20_000 {
            let len = rng.below(100) as usize;
            let mut bytes: Vec<u8> = if rng.below(2) == 0 {
                (0..len).map(|_| rng.u64() as u8).collect()
            } else {
                let picked: String = (0..len).map(|_| text[rng.below(text.len() as u64) as usize]).collect();
                picked.into_bytes()
            };
            if !bytes.is_empty() && rng.below(2) == 0 {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.u64() as u8;
            }
            check(&bytes);
        }
    }

    fn check(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes);
        assert_eq!(borrowed(bytes), expected, "borrowed {bytes:x?}");
        assert_eq!(copied(bytes, str::to_owned), expected.map(str::to_owned), "copied {bytes:x?}");
    }
}
