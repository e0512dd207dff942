//! End-to-end tests of the shmcast binaries together (in `tests/`). The
//! helpers they use live in `shmcast-testkit`; they are re-exported here for
//! test suites that still import them under this crate's name.
#![forbid(unsafe_code)]

pub use shmcast_testkit::*;
