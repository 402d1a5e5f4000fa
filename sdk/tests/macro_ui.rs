//! Compile-time behaviour of `#[databelt::function]` and `#[databelt::data]`:
//! good signatures build; each wrong one is an error at the offending span.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn macro_signatures() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
