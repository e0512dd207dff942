//! The loom switch: the ring's atomic steps ([`crate::seq`]) use these types,
//! which are `loom`'s under `--cfg loom` and `std`'s otherwise.
#![forbid(unsafe_code)]

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
