//! Frame metadata as stored in a slot descriptor.
//!
//! Compiled under loom too: the reader's cursor logic ([`crate::ring`]) hands
//! metadata out, and the loom model runs that very code.
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use crate::layout::SlotDesc;

/// Frame flag: a keyframe (compressed sources).
pub const FLAG_KEYFRAME: u32 = 1;
/// Frame flag: the source reported a discontinuity before this frame.
pub const FLAG_DISCONT: u32 = 2;

/// Metadata of one frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameMeta {
    /// The source's frame id (monotonic within a producer run).
    pub frame_id: u64,
    /// Capture time, Unix ns.
    pub capture_ns: u64,
    /// Publish time, Unix ns (set by the writer at commit).
    pub publish_ns: u64,
    /// Payload length in bytes (the frame size for raw formats).
    pub len: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Exposure time in µs, when the source knows it.
    pub exposure_us: Option<u32>,
    /// Gain in dB, when the source knows it.
    pub gain_db: Option<f32>,
    /// Sensor temperature in °C, when the source knows it.
    pub temperature_c: Option<f32>,
}

impl FrameMeta {
    /// Metadata with just an id, a capture time and a length.
    pub fn new(frame_id: u64, capture_ns: u64, len: u64) -> FrameMeta {
        FrameMeta {
            frame_id,
            capture_ns,
            publish_ns: 0,
            len,
            flags: 0,
            exposure_us: None,
            gain_db: None,
            temperature_c: None,
        }
    }

    #[cfg_attr(loom, allow(dead_code))] // the loom model has no slot descriptors
    pub(crate) fn store(&self, d: &SlotDesc) {
        // Relaxed: published by the Release store of the slot word in `seq::commit`.
        d.frame_id.store(self.frame_id, Ordering::Relaxed);
        d.capture_ns.store(self.capture_ns, Ordering::Relaxed);
        d.publish_ns.store(self.publish_ns, Ordering::Relaxed);
        d.len.store(self.len, Ordering::Relaxed);
        d.flags.store(self.flags, Ordering::Relaxed);
        d.exposure_us.store(self.exposure_us.unwrap_or(u32::MAX), Ordering::Relaxed);
        d.gain_db.store(self.gain_db.unwrap_or(f32::NAN).to_bits(), Ordering::Relaxed);
        let mc = self.temperature_c.map(|t| (t * 1000.0) as i32).unwrap_or(i32::MIN);
        d.temperature_mc.store(mc, Ordering::Relaxed);
    }

    #[cfg_attr(loom, allow(dead_code))] // the loom model has no slot descriptors
    pub(crate) fn load(d: &SlotDesc) -> FrameMeta {
        // Relaxed: validated afterwards by `seq::validate`.
        let exposure = d.exposure_us.load(Ordering::Relaxed);
        let gain = f32::from_bits(d.gain_db.load(Ordering::Relaxed));
        let mc = d.temperature_mc.load(Ordering::Relaxed);
        FrameMeta {
            frame_id: d.frame_id.load(Ordering::Relaxed),
            capture_ns: d.capture_ns.load(Ordering::Relaxed),
            publish_ns: d.publish_ns.load(Ordering::Relaxed),
            len: d.len.load(Ordering::Relaxed),
            flags: d.flags.load(Ordering::Relaxed),
            exposure_us: (exposure != u32::MAX).then_some(exposure),
            gain_db: (!gain.is_nan()).then_some(gain),
            temperature_c: (mc != i32::MIN).then(|| mc as f32 / 1000.0),
        }
    }
}
