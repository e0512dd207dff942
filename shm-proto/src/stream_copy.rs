//! A copy for large frames whose destination is not read back at once:
//! non-temporal ("streaming") stores that go to memory without first reading
//! each destination line into the cache.
//!
//! A plain `memcpy` of a frame larger than the cache reads every destination
//! line before overwriting it (a read-for-ownership) and then evicts it
//! dirty: per byte copied, two reads and one write reach memory. Streaming
//! stores skip the read-for-ownership, so a copy moves one read and one write
//! per byte. When a producer writes the ring on another core at full rate,
//! memory bandwidth is what the copy waits for, and the saving shows:
//! `shmcast-gst-bench` measures the copying receivers with and without it.
//!
//! The stores are weakly ordered; [`copy_streaming`] ends with a store fence,
//! so its writes are ordered before any later store of the calling thread
//! (such as the release that hands the buffer to another thread).

/// Frames at least this large are worth streaming stores; smaller ones
/// still fit the cache, where the next element reads them faster.
pub const STREAMING_MIN: usize = 1 << 20;

/// Copies `src` into `dst` (equal lengths) with streaming stores where the
/// CPU has them (x86-64 with AVX2), else with a plain copy.
///
/// `src` may be a view of ring slot data the producer is writing; as with
/// [`crate::Frame::read`], whether the copy is intact is decided by the
/// seqlock check after it.
///
/// # Panics
/// If the lengths differ.
pub fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (checked just above).
        unsafe { x86::copy_avx2(dst, src) };
        return;
    }
    dst.copy_from_slice(src);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256i, _mm_sfence, _mm256_loadu_si256, _mm256_stream_si256};

    const LANE: usize = std::mem::size_of::<__m256i>();
    /// Bytes per loop turn: two lanes, one cache line.
    const STEP: usize = 2 * LANE;

    /// # Safety
    /// The CPU must support AVX2; `dst` and `src` have equal lengths.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn copy_avx2(dst: &mut [u8], src: &[u8]) {
        let len = dst.len();
        // Streaming stores need 32-byte aligned destinations: copy the bytes
        // before the first aligned one plainly.
        let head = dst.as_ptr().align_offset(LANE).min(len);
        dst[..head].copy_from_slice(&src[..head]);
        let body = (len - head) / STEP * STEP;
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        let mut at = head;
        while at < head + body {
            // SAFETY: `at + STEP <= head + body <= len`, so both lanes are
            // inside `src` and `dst`; `dst + at` is 32-byte aligned (`head`
            // aligned it and `STEP` is a multiple of 32); the loads are
            // unaligned loads, valid at any address; AVX2 is enabled on this
            // function and the caller guarantees the CPU has it.
            unsafe {
                let a = _mm256_loadu_si256(s.add(at).cast());
                let b = _mm256_loadu_si256(s.add(at + LANE).cast());
                _mm256_stream_si256(d.add(at).cast(), a);
                _mm256_stream_si256(d.add(at + LANE).cast(), b);
            }
            at += STEP;
        }
        dst[at..].copy_from_slice(&src[at..]);
        // Streaming stores are weakly ordered: fence them before any later
        // store of this thread, in particular the release (a mutex or an
        // atomic in the caller) that makes `dst` visible to another thread.
        _mm_sfence();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_at_every_alignment_and_length() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let mut backing = vec![0u8; 4096 + 64];
        for offset in 0..40 {
            for len in [0, 1, 31, 32, 63, 64, 65, 127, 128, 129, 1000, 4000] {
                backing.fill(0xAA);
                copy_streaming(&mut backing[offset..offset + len], &src[7..7 + len]);
                assert_eq!(&backing[offset..offset + len], &src[7..7 + len], "offset {offset}, length {len}");
                assert!(backing[..offset].iter().chain(&backing[offset + len..]).all(|&b| b == 0xAA), "wrote outside");
            }
        }
    }

    #[test]
    #[should_panic(expected = "lengths differ")]
    fn refuses_different_lengths() {
        copy_streaming(&mut [0u8; 4], &[0u8; 5]);
    }
}
