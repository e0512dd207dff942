//! Compile-fail tests of the frame API: bytes another process may be writing
//! cannot be used after the check that says they were intact.
#[test]
fn frame_bytes_cannot_escape_the_validated_read() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
