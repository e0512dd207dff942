//! shmcast consumers. The detector library lives in [`detect`]; the binaries
//! (`shmcast-detect`, `shmcast-inspect`, `shmcast-bench`) are thin drivers.
#![forbid(unsafe_code)]

pub mod detect;
