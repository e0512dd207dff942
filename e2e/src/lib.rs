//! End-to-end tests of the shmcast binaries together (in `tests/`): the
//! demo, deployment, inspect, metrics, signals and soak. The helpers they use
//! live in `shmcast-testkit`.
#![forbid(unsafe_code)]
