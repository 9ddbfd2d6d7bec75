//! Indenting JSON text for people, without parsing its values.
//!
//! Why not `serde_json::Value` and `to_string_pretty`: without serde_json's
//! `arbitrary_precision` (a feature that would change every serde_json user in the build), a
//! `Value` holds a number beyond `u64`/`i64` (a `u128` result) as an `f64` and prints it
//! rounded, and PROTOCOL.md §9 promises JSON callers exact digits. Re-indenting the text keeps
//! every byte of every string and number as the server wrote it.

/// `json` (valid JSON, as a server answers it) indented by two spaces, `"key": value`, empty
/// objects and arrays kept as `{}` and `[]`. Whitespace outside strings is replaced; text that
/// is not JSON comes out re-spaced but otherwise unchanged.
pub(crate) fn indent(json: &str) -> String {
    let mut out = String::with_capacity(json.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut iter = json.chars().peekable();
    while let Some(c) = iter.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                while iter.peek().is_some_and(|c| c.is_whitespace()) {
                    iter.next();
                }
                if iter.peek() == Some(&close) {
                    iter.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use super::indent;

    #[test]
    fn nested_values_are_indented_and_empty_ones_kept_short() {
        let json = r#"{"a":[1,2],"b":{},"c":[],"d":{"e":null}}"#;
        let expected =
            "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {},\n  \"c\": [],\n  \"d\": {\n    \"e\": null\n  }\n}";
        assert_eq!(indent(json), expected);
    }

    #[test]
    fn strings_and_big_numbers_are_kept_exactly() {
        let json = r#"["a, {b}: \"c\" \\", 340282366920938463463374607431768211455]"#;
        let expected = "[\n  \"a, {b}: \\\"c\\\" \\\\\",\n  340282366920938463463374607431768211455\n]";
        assert_eq!(indent(json), expected);
    }

    #[test]
    fn scalars_are_themselves() {
        assert_eq!(indent("\"hello, zrpc\""), "\"hello, zrpc\"");
        assert_eq!(indent("null"), "null");
        assert_eq!(indent(" 42 "), "42");
    }
}
