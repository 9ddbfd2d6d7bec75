//! Compile-fail cases of `#[zrpc::service]`: one mistake per file in `tests/ui/`, each with the
//! expected error, span and fix in the `.stderr` beside it. `#[zrpc::service(schema)]`'s cases
//! depend on the `schema` feature: `tests/ui-schema/` with it (`.ci/run` runs them),
//! `tests/ui-no-schema/` without.
//!
//! Regenerate the expectations with `TRYBUILD=overwrite` after reviewing a change in them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    #[cfg(feature = "schema")]
    cases.compile_fail("tests/ui-schema/*.rs");
    #[cfg(not(feature = "schema"))]
    cases.compile_fail("tests/ui-no-schema/*.rs");
}
