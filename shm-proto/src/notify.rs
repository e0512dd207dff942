//! Waiting and waking on the notify word with a *shared* futex.
//!
//! Never `FUTEX_PRIVATE_FLAG`: private futexes are keyed by the waiter's own
//! address space, so a waiter in another process would never be woken. The
//! shared form is keyed by the page, and works on a read-only mapping because
//! `FUTEX_WAIT` only reads the word.

use std::time::Duration;

use crate::sync::AtomicU32;

/// Why a wait returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken, or the word had already changed.
    Woken,
    /// The timeout passed.
    TimedOut,
}

/// Blocks while `*word == expected`, at most `timeout`.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitResult {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned 32-bit location for the duration of the
    // call (the mapping outlives the borrow); FUTEX_WAIT only reads it, so a
    // read-only mapping is fine; `ts` is a valid relative timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word as *const AtomicU32 as *const u32,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        WaitResult::TimedOut
    } else {
        // 0 (woken), EAGAIN (word changed before we slept), EINTR (signal):
        // all mean "look again".
        WaitResult::Woken
    }
}

/// Wakes every waiter on `word`. Returns how many were woken.
pub fn wake_all(word: &AtomicU32) -> usize {
    // SAFETY: `word` is a valid, aligned 32-bit location; FUTEX_WAKE does not
    // access it beyond using its address as the key.
    let r =
        unsafe { libc::syscall(libc::SYS_futex, word as *const AtomicU32 as *const u32, libc::FUTEX_WAKE, i32::MAX) };
    r.max(0) as usize
}
