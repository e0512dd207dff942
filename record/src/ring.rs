//! Copying a frame out of the ring: the only place that touches frame bytes
//! the producer may be writing. A copy is returned only when the frame was
//! intact for the whole copy (otherwise the reader counts an overrun).
#![forbid(unsafe_code)]

use shm_proto::Frame;

/// Copies the payload into `dst` (which must be large enough); the length
/// copied, or `None` if the slot was overwritten meanwhile or does not fit.
pub fn copy_frame(f: Frame<'_>, dst: &mut [u8]) -> Option<usize> {
    let src = f.data();
    let n = src.len();
    let ok = match dst.get_mut(..n) {
        Some(d) => {
            d.copy_from_slice(src);
            true
        }
        None => false,
    };
    // Validate after the copy: the producer may have overwritten the slot.
    (f.validate() && ok).then_some(n)
}

/// Copies the payload into a new vector; `None` if it was overwritten meanwhile.
pub fn frame_to_vec(f: Frame<'_>) -> Option<Vec<u8>> {
    let v = f.data().to_vec();
    f.validate().then_some(v)
}
