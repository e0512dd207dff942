//! Copying a frame out of the ring: the only place that touches frame bytes
//! the producer may be writing. A copy is returned only when the frame was
//! intact for the whole copy (`Frame::copy_to` counts an overrun otherwise).
#![forbid(unsafe_code)]

use shm_proto::Frame;

/// Copies the payload into `dst`; the length copied, or `None` if the slot
/// was overwritten meanwhile or the payload does not fit in `dst`.
pub fn copy_frame(f: &Frame<'_>, dst: &mut [u8]) -> Option<usize> {
    if f.len() > dst.len() {
        return None;
    }
    f.copy_to(dst).ok()
}

/// Copies the payload into a new vector; `None` if it was overwritten meanwhile.
pub fn frame_to_vec(f: &Frame<'_>) -> Option<Vec<u8>> {
    f.to_vec().ok()
}
