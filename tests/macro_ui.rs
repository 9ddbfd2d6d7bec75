//! Compile-fail cases of `#[zrpc::service]`: one mistake per file in `tests/ui/`, each with the
//! expected error, span and fix in the `.stderr` beside it.
//!
//! Regenerate the expectations with `TRYBUILD=overwrite` after reviewing a change in them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
