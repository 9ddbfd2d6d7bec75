//! The codec against the `postcard` crate: the same bytes for random values, the same verdict and
//! value for random and damaged input.

use serde::Serialize;

use super::{de, ser};
use crate::balance::SharedRng;
use crate::fuzz::{Everything, Newtype, Pair, Shape, Strings, Unit, ours, postcard, theirs};

/// Test values from the balancers' seeded SplitMix64, so that every run draws the same ones.
struct Rng(SharedRng);

impl Rng {
    fn seeded(seed: u64) -> Rng {
        Rng(SharedRng::with_seed(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// Mostly the edges of varint lengths and of the type's range, sometimes anything.
    fn int(&mut self) -> u128 {
        const EDGES: [u128; 12] = [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            0xffff,
            0x1_0000,
            u32::MAX as u128,
            1 << 32,
            u64::MAX as u128,
            u128::MAX,
        ];
        match self.below(4) {
            0 => EDGES[self.below(EDGES.len() as u64) as usize],
            1 => u128::from(self.next() >> self.below(64)),
            2 => (u128::from(self.next()) << 64) | u128::from(self.next()),
            _ => u128::from(self.below(300)),
        }
    }

    fn text(&mut self) -> String {
        const PIECES: [&str; 6] = ["a", "zrpc", "许多往事", "ü", "🦀", "\u{0}"];
        (0..self.below(12)).map(|_| PIECES[self.below(PIECES.len() as u64) as usize]).collect()
    }

    /// Text a `Text` shares (64 bytes of ASCII first) or copies (anything else).
    fn long_text(&mut self) -> String {
        let ascii: String = (0..64 + self.below(100)).map(|_| char::from(b'a' + self.below(26) as u8)).collect();
        match self.below(3) {
            0 => self.text(),
            1 => ascii,
            _ => ascii + &self.text(),
        }
    }

    fn strings(&mut self) -> Strings {
        Strings {
            text: self.long_text(),
            blob: self.bytes(),
            texts: (0..self.below(4)).map(|_| self.long_text()).collect(),
            maybe: (self.below(2) == 0).then(|| serde_bytes::ByteBuf::from(self.bytes())),
            count: self.int() as u32,
        }
    }

    /// `bytes` cut short, one byte longer, or with up to three bytes changed.
    fn damage(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut damaged = bytes.to_vec();
        match self.below(4) {
            0 => damaged.truncate(self.below(bytes.len() as u64) as usize),
            1 => damaged.push(self.next() as u8),
            _ => {
                for _ in 0..=self.below(3) {
                    let at = self.below(damaged.len() as u64) as usize;
                    damaged[at] = self.next() as u8;
                }
            }
        }
        damaged
    }

    fn bytes(&mut self) -> Vec<u8> {
        (0..self.below(200)).map(|_| self.next() as u8).collect()
    }

    fn shape(&mut self) -> Shape {
        match self.below(4) {
            0 => Shape::Empty,
            1 => Shape::Circle(self.int() as u32),
            2 => Shape::Rect(self.int() as i64, -(self.int() as i64)),
            _ => Shape::Named { name: self.text(), sides: (self.below(2) == 0).then(|| self.int() as u8) },
        }
    }

    fn everything(&mut self, depth: u32) -> Everything {
        // The casts keep the low bits: the edges of the narrower types as well as the wide ones.
        Everything {
            flag: self.below(2) == 0,
            i8: self.int() as i8,
            i16: self.int() as i16,
            i32: self.int() as i32,
            i64: self.int() as i64,
            i128: self.int() as i128,
            u8: self.int() as u8,
            u16: self.int() as u16,
            u32: self.int() as u32,
            u64: self.int() as u64,
            u128: self.int(),
            usize: self.int() as usize,
            isize: self.int() as isize,
            text: self.text(),
            seq_of_u8: self.bytes(),
            bytes: self.bytes(),
            maybe: (self.below(2) == 0).then(|| self.int() as u32),
            nothing: (),
            unit: Unit,
            newtype: Newtype(self.int() as i32),
            tuple: (self.int() as u8, self.int() as i64, self.below(2) == 1),
            pair: Pair(self.int() as u16, self.text()),
            shapes: (0..self.below(5)).map(|_| self.shape()).collect(),
            map: (0..self.below(4)).map(|_| (self.text(), self.int() as i64)).collect(),
            nested: (depth > 0 && self.below(3) == 0).then(|| Box::new(self.everything(depth - 1))),
        }
    }
}

#[test]
fn writes_the_bytes_postcard_writes() {
    let mut rng = Rng::seeded(1);
    for n in 0..3_000 {
        let value = rng.everything(2);
        let bytes = ours(&value);
        assert_eq!(bytes, theirs(&value), "value {n}: {value:?}");
        let (back, rest) = de::read::<Everything>(&bytes).expect("decodes");
        assert_eq!((back, rest.len()), (value, 0), "value {n}");
    }
}

#[test]
fn values_nested_past_max_depth_are_refused_where_postcard_takes_them() {
    // Chains of `Everything`s, each in the one before's `nested`: with `n` of them nested the
    // deepest level is 1 + 2n to 4 + 2n (see `fuzz::nested`), so 61 decode and 64 do not;
    // the fuzz check accepts the refusal, as it must, since the `postcard` crate takes them.
    let mut rng = Rng::seeded(7);
    for (n, decodes) in [(0, true), (30, true), (61, true), (64, false), (80, false)] {
        let mut value = rng.everything(0);
        for _ in 0..n {
            let mut outer = rng.everything(0);
            outer.nested = Some(Box::new(value));
            value = outer;
        }
        let verdicts = postcard(&theirs(&value));
        assert_eq!(verdicts.everything, decodes, "{n} nested");
        assert_eq!(de::read::<Everything>(&theirs(&value)).is_ok(), decodes, "{n} nested");
    }
}

#[test]
fn floats_and_chars_as_postcard_writes_them() {
    for f in [0.0f64, -0.0, 1.5, f64::MAX, f64::MIN_POSITIVE, f64::INFINITY, f64::NAN] {
        assert_eq!(ours(&f), theirs(&f));
        assert_eq!(ours(&(f as f32)), theirs(&(f as f32)));
        let back: f64 = de::read(&ours(&f)).expect("decodes").0;
        assert_eq!(back.to_bits(), f.to_bits());
        let back: f32 = de::read(&ours(&(f as f32))).expect("decodes").0;
        assert_eq!(back.to_bits(), (f as f32).to_bits());
    }
    for c in ['a', '\u{0}', 'ü', '许', '🦀', char::MAX] {
        assert_eq!(ours(&c), theirs(&c));
        assert_eq!(de::read::<char>(&ours(&c)).expect("decodes").0, c);
    }
    // Two characters are not a char (postcard would take the first).
    let err = de::read::<char>(&ours("ab")).expect_err("two characters");
    assert!(err.0.contains("one character"), "{err}");
}

#[test]
fn damaged_input_gets_postcard_s_verdict() {
    // Values of both shapes the fuzz checks decode, damaged, through those checks: each is
    // decoded as both shapes, so each check meets valid input and input that is not.
    let mut rng = Rng::seeded(2);
    let mut seen = [[0; 2]; 2];
    for n in 0..3_000 {
        let bytes = if n % 2 == 0 { ours(&rng.everything(1)) } else { ours(&rng.strings()) };
        let verdicts = postcard(&rng.damage(&bytes));
        seen[0][usize::from(verdicts.everything)] += 1;
        seen[1][usize::from(verdicts.strings)] += 1;
    }
    // Both outcomes of both checks were exercised, so agreement on each was checked.
    assert!(seen.iter().flatten().all(|&n| n > 100), "[everything, strings] × [refused, accepted]: {seen:?}");
}

#[test]
fn varints_are_bounded_by_their_type() {
    // Non-minimal encodings are accepted, as postcard accepts them.
    assert_eq!(de::read::<u32>(&[0x80, 0x00]).expect("non-minimal").0, 0);
    // u32: five bytes at most, the last within 4 bits.
    assert_eq!(de::read::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x0f]).expect("u32::MAX").0, u32::MAX);
    assert!(de::read::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x10]).is_err(), "past u32::MAX");
    assert!(de::read::<u32>(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]).is_err(), "six bytes");
    // u16 and u64 likewise.
    assert_eq!(de::read::<u16>(&[0xff, 0xff, 0x03]).expect("u16::MAX").0, u16::MAX);
    assert!(de::read::<u16>(&[0xff, 0xff, 0x04]).is_err(), "past u16::MAX");
    let mut max = vec![0xff; 9];
    max.push(0x01);
    assert_eq!(de::read::<u64>(&max).expect("u64::MAX").0, u64::MAX);
    max[9] = 0x02;
    assert!(de::read::<u64>(&max).is_err(), "past u64::MAX");
    for input in [&[0x80, 0x00][..], &[0xff, 0xff, 0xff, 0xff, 0x10], &[0x80; 6], &[0x80], &[]] {
        assert_eq!(de::read::<u32>(input).is_ok(), postcard::from_bytes::<u32>(input).is_ok(), "{input:02x?}");
    }
}

#[test]
fn lengths_past_the_input_are_refused_before_allocating() {
    // A string and a byte string claiming u64::MAX bytes, and a Vec claiming as many elements.
    let mut huge = vec![0xff; 9];
    huge.push(0x01);
    for err in [
        de::read::<String>(&huge).map(|_| ()).expect_err("string"),
        de::read::<serde_bytes::ByteBuf>(&huge).map(|_| ()).expect_err("bytes"),
        de::read::<Vec<u64>>(&huge).map(|_| ()).expect_err("seq"),
    ] {
        assert!(err.0.contains("ended"), "{err}");
    }
}

#[test]
fn errors_say_what_was_wrong() {
    let err = de::read::<bool>(&[2]).expect_err("bool");
    assert_eq!(*err.0, "a bool is 0 or 1, not 2");
    let err = de::read::<Option<u8>>(&[7]).expect_err("option");
    assert!(err.0.contains("not 7"), "{err}");
    let err = de::read::<String>(&[2, 0xc3, 0x28]).expect_err("utf-8");
    assert!(err.0.starts_with("a string is not UTF-8"), "{err}");
    // A derived impl's own message is kept (postcard replaces it with a fixed one).
    let err = de::read::<Shape>(&[9]).expect_err("variant");
    assert!(err.0.contains("variant index"), "{err}");
    let err = de::read::<serde::de::IgnoredAny>(&[0]).map(|_| ()).expect_err("self-describing");
    assert!(err.0.contains("cannot be skipped"), "{err}");
}

#[test]
fn sequences_and_maps_need_their_length() {
    struct Unsized;
    impl Serialize for Unsized {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            serializer.serialize_seq(None)?.end()
        }
    }
    let err = ser::write(&Unsized, &mut Vec::new()).expect_err("no length");
    assert!(err.0.contains("length of a sequence"), "{err}");
    // `collect_str` writes the text as a string.
    struct Shown;
    impl Serialize for Shown {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_str(&format_args!("{}-{}", "许", 7))
        }
    }
    assert_eq!(ours(&Shown), theirs("许-7"));
}
