//! The sink's implementation. One ring per negotiated format: the segment is
//! created in `set_caps` and replaced when the caps change (readers notice the
//! new epoch and follow it); EOS, `stop` (READY/NULL) and dispose close it.
//!
//! Zero-copy publish: for raw caps whose GStreamer layout is the ring's
//! packed layout, `propose_allocation` offers upstream a pool whose buffers
//! are ring slots ([`super::pool`]); a buffer whose memory is the lent slot,
//! laid out as the ring's planes, is committed in place. Any other buffer
//! (another pool's, a second one acquired while the slot was out, a padded
//! layout, one from before a caps change) is copied once into a slot, plane
//! by plane when GStreamer's strides differ from the ring's packed layout,
//! with its capture time and flags: [`shmcast_common::gst`], the code the
//! producer's `gst:` source uses too. The capture time is, in order of preference: a
//! `timestamp/x-unix` reference timestamp on the buffer; the buffer's PTS as
//! pipeline clock time mapped to `CLOCK_REALTIME`; the time the buffer
//! arrived (when the PTS lies in the future, as with `sync=false` upstream of
//! a non-live source).
#![forbid(unsafe_code)]

use std::sync::{LazyLock, Mutex, MutexGuard};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer::subclass::prelude::*;
use gstreamer_base as gst_base;
use gstreamer_base::prelude::*;
use gstreamer_base::subclass::prelude::*;
use gstreamer_video as gst_video;
use shm_proto::{CreateError, CreateOptions, FrameMeta, Loan, StreamName, VideoFormat, Writer};
use shmcast_common::gst as slot;

use crate::caps;

static CAT: LazyLock<gst::DebugCategory> =
    LazyLock::new(|| gst::DebugCategory::new("shmcastsink", gst::DebugColorFlags::empty(), Some("shmcast ring sink")));

const DEFAULT_SLOTS: u32 = 8;
const DEFAULT_MODE: &str = "0640";

#[derive(Clone, Debug)]
struct Settings {
    stream: Option<String>,
    slots: u32,
    hugepages: bool,
    mlock: bool,
    mode: String,
    group: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream: None,
            slots: DEFAULT_SLOTS,
            hugepages: false,
            mlock: false,
            mode: DEFAULT_MODE.into(),
            group: None,
        }
    }
}

#[derive(Default)]
struct State {
    writer: Option<Writer>,
    info: Option<gst_video::VideoInfo>,
    /// The ring's planes are GStreamer's layout of the caps: slots can be lent.
    lendable: bool,
    next_id: u64,
    frames: u64,
    /// Frames committed in place (rendered into a lent slot): no copy.
    lent: u64,
    dropped: u64,
    segments: u64,
    /// Sequences passed over by the writers already closed.
    skipped_before: u64,
    /// Caps whose ring could not be created (the error was posted once).
    failed: Option<gst::Caps>,
}

#[derive(Default)]
pub struct ShmcastSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Parses a file mode given in octal (`0640`, `640`, `0o640`).
fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

#[glib::object_subclass]
impl ObjectSubclass for ShmcastSink {
    const NAME: &'static str = "GstShmcastSink";
    type Type = super::ShmcastSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for ShmcastSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("stream")
                    .nick("Stream")
                    .blurb("Ring name: the segment is shmcast.<stream> in /dev/shm ([A-Za-z0-9_.-]{1,64}; required)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("slots")
                    .nick("Slots")
                    .blurb("Frames the ring holds (a power of two): slack for slow readers")
                    .minimum(2)
                    .maximum(65536)
                    .default_value(DEFAULT_SLOTS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("hugepages")
                    .nick("Huge pages")
                    .blurb("Back the ring with huge pages (needs a hugetlbfs mount and reserved pages)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("mlock")
                    .nick("Lock in RAM")
                    .blurb("Lock the ring in RAM (needs RLIMIT_MEMLOCK above the ring size)")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("mode")
                    .nick("Mode")
                    .blurb("File mode of the segment, in octal")
                    .default_value(Some(DEFAULT_MODE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("group")
                    .nick("Group")
                    .blurb("Group owning the segment (name or gid), so its members may read it")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "frames (published), lent (of which rendered by upstream straight into a lent ring slot \
                         and published without a copy), skipped (sequences passed over because a lent slot was \
                         still held), dropped (JPEG frames larger than a slot), segments (created)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = lock(&self.settings);
        match pspec.name() {
            "stream" => s.stream = value.get().expect("type checked upstream"),
            "slots" => s.slots = value.get().expect("type checked upstream"),
            "hugepages" => s.hugepages = value.get().expect("type checked upstream"),
            "mlock" => s.mlock = value.get().expect("type checked upstream"),
            "mode" => {
                s.mode = value.get::<Option<String>>().expect("type checked upstream").unwrap_or(DEFAULT_MODE.into())
            }
            "group" => s.group = value.get().expect("type checked upstream"),
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "stream" => s.stream.to_value(),
            "slots" => s.slots.to_value(),
            "hugepages" => s.hugepages.to_value(),
            "mlock" => s.mlock.to_value(),
            "mode" => s.mode.to_value(),
            "group" => s.group.to_value(),
            "stats" => {
                let st = lock(&self.state);
                gst::Structure::builder("shmcastsink-stats")
                    .field("frames", st.frames)
                    .field("lent", st.lent)
                    .field("skipped", st.skipped_before + st.writer.as_ref().map_or(0, Writer::skipped))
                    .field("dropped", st.dropped)
                    .field("segments", st.segments)
                    .build()
                    .to_value()
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Holding on to the last buffer would keep a frame-sized buffer
        // alive for nothing.
        self.obj().set_enable_last_sample(false);
    }
}

impl GstObjectImpl for ShmcastSink {}

impl ElementImpl for ShmcastSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "shmcast ring sink",
                "Sink/Video",
                "Publishes raw video or JPEG frames into a shmcast shared-memory ring (one copy per buffer), \
                 read by any number of local processes",
                "shmcast",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps::template_caps(),
                )
                .expect("valid pad template"),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl State {
    /// Closes the ring, if open; true if it was.
    fn close(&mut self) -> bool {
        match self.writer.take() {
            Some(w) => {
                self.skipped_before += w.skipped();
                true
            }
            None => false,
        }
    }
}

impl ShmcastSink {
    /// A slot for the pool to lend: the next one, if the ring is open, its
    /// frames are `size` bytes laid out as GStreamer lays out the caps, and
    /// no other slot is out.
    pub(super) fn lend(&self, size: usize) -> Option<Loan> {
        let mut st = lock(&self.state);
        if !st.lendable {
            return None;
        }
        let writer = st.writer.as_mut()?;
        if writer.format().frame_size != size as u64 {
            return None;
        }
        writer.lend()
    }

    /// Commits `buffer` in place if its memory is the lent slot with the
    /// ring's plane layout; `None` when it must be copied.
    fn commit_in_place(&self, st: &mut State, buffer: &gst::BufferRef, meta: FrameMeta) -> Option<u64> {
        let writer = st.writer.as_mut()?;
        if !st.lendable || buffer.n_memory() != 1 || !writer.is_lent() {
            return None;
        }
        // Planes where the ring has them: a video meta, if upstream added
        // one, must say the ring's offsets and strides.
        if let Some(vm) = buffer.meta::<gst_video::VideoMeta>() {
            let planes = writer.format().planes();
            let same = vm.n_planes() as usize == planes.len()
                && planes.iter().enumerate().all(|(i, p)| {
                    vm.offset()[i] as u64 == p.offset && i64::from(vm.stride()[i]) == i64::from(p.stride)
                });
            if !same {
                return None;
            }
        }
        let map = buffer.map_readable().ok()?;
        match writer.commit_in_place(map.as_slice(), meta) {
            Ok(seq) => Some(seq),
            Err(e) => {
                gst::debug!(CAT, imp = self, "buffer not committed in place ({e}): copied");
                None
            }
        }
    }

    fn create_options(&self, s: &Settings) -> Result<CreateOptions, gst::ErrorMessage> {
        let mode = parse_mode(&s.mode).ok_or_else(|| {
            gst::error_msg!(gst::ResourceError::Settings, ("mode {:?} is not an octal file mode (e.g. 0640)", s.mode))
        })?;
        Ok(CreateOptions {
            slots: s.slots,
            mode,
            group: s.group.clone().filter(|g| !g.is_empty()),
            hugepages: s.hugepages,
            mlock: s.mlock,
            ..CreateOptions::default()
        })
    }

    fn stream_name(&self) -> Result<String, gst::ErrorMessage> {
        let name = lock(&self.settings).stream.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("no stream name: set the stream property (e.g. shmcastsink stream=cam0)")
            ));
        }
        StreamName::new(&name).map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        Ok(name)
    }

    /// Creates the ring for `format`, closing the previous one first.
    fn open_ring(&self, state: &mut State, format: VideoFormat) -> Result<(), gst::ErrorMessage> {
        let name = self.stream_name()?;
        let settings = lock(&self.settings).clone();
        let opts = self.create_options(&settings)?;
        // Close first: the name is ours, and a reader must see the old
        // epoch end before the new one starts. A slot the old writer lent
        // stays mapped until its buffer is gone, and is never committed
        // into the new ring.
        state.close();
        let writer = Writer::create(&name, format, &opts).map_err(|e| {
            let kind = match e {
                CreateError::InUse { .. } => gst::ResourceError::Busy,
                CreateError::NoSpace { .. } => gst::ResourceError::NoSpaceLeft,
                CreateError::Mlock { .. } | CreateError::HugePages { .. } => gst::ResourceError::NoSpaceLeft,
                _ => gst::ResourceError::OpenWrite,
            };
            gst::error_msg!(kind, ("{}", e))
        })?;
        if let Some(pid) = writer.replaced() {
            gst::info!(CAT, imp = self, "replaced the stale segment of pid {pid}");
        }
        writer.set_live();
        gst::info!(
            CAT,
            imp = self,
            "created ring {name}: {format}, {} slots, {} bytes, epoch {:#x}",
            writer.slots(),
            writer.total_size(),
            writer.epoch()
        );
        state.writer = Some(writer);
        state.segments += 1;
        Ok(())
    }
}

impl BaseSinkImpl for ShmcastSink {
    fn propose_allocation(&self, query: &mut gst::query::Allocation) -> Result<(), gst::LoggableError> {
        let (caps, need_pool) = query.get_owned();
        // Ring slots as upstream's buffers: raw caps laid out as the ring
        // lays out its planes (no padded rows), so a slot is a GStreamer frame.
        let lendable = caps.as_ref().and_then(|c| caps::format_of(c).ok()).and_then(|(format, info)| {
            info.filter(|i| caps::same_layout(&format, i) && i.size() as u64 == format.frame_size)
        });
        if let (true, Some(caps), Some(info)) = (need_pool, caps, lendable) {
            let pool = super::pool::SlotPool::new(&self.obj());
            let size = info.size() as u32;
            let mut config = pool.config();
            config.set_params(Some(&caps), size, 0, 0);
            pool.set_config(config).map_err(|_| gst::loggable_error!(CAT, "cannot configure the slot pool"))?;
            query.add_allocation_pool(Some(&pool), size, 0, 0);
            gst::debug!(CAT, imp = self, "offering ring slots as upstream's buffers ({caps})");
        }
        self.parent_propose_allocation(query)
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let name = self.stream_name()?;
        let settings = lock(&self.settings).clone();
        // A name another running producer owns (even a stopped one) fails
        // the state change now, with the producer's own message, rather than
        // at the first caps (which GStreamer reports as a failed negotiation).
        let opts = self.create_options(&settings)?;
        let stream =
            shm_proto::StreamName::new(&name).map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{e}")))?;
        if let Err(e) = shm_proto::segment::check_free(&stream, &opts) {
            return Err(gst::error_msg!(gst::ResourceError::Busy, ("{e}")));
        }
        *lock(&self.state) = State::default();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut st = lock(&self.state);
        if st.close() {
            gst::info!(CAT, imp = self, "closed the ring");
        }
        st.info = None;
        st.lendable = false;
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let (format, info) = match caps::format_of(caps) {
            Ok(v) => v,
            Err(reason) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("cannot publish {}: {}", caps, reason));
                return Err(gst::loggable_error!(CAT, "unsupported caps {caps}"));
            }
        };
        let mut st = lock(&self.state);
        if st.failed.as_ref() == Some(caps) {
            return Err(gst::loggable_error!(CAT, "the ring for {caps} could not be created"));
        }
        st.lendable = info.as_ref().is_some_and(|i| caps::same_layout(&format, i));
        if st.writer.as_ref().is_some_and(|w| *w.format() == format) {
            st.info = info;
            return Ok(());
        }
        gst::debug!(CAT, imp = self, "caps {caps} -> ring format {format}");
        if let Err(msg) = self.open_ring(&mut st, format) {
            st.failed = Some(caps.clone());
            drop(st);
            self.post_error_message(msg);
            return Err(gst::loggable_error!(CAT, "cannot create the ring"));
        }
        st.info = info;
        Ok(())
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            let mut st = lock(&self.state);
            if st.close() {
                gst::info!(CAT, imp = self, "end of stream: closed the ring");
            }
        }
        self.parent_event(event)
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let arrival = shm_proto::os::realtime_ns();
        let obj = self.obj();
        let segment = obj.segment();
        let time = slot::PipelineTime { segment: Some(&segment), base_time: obj.base_time(), clock: obj.clock() };
        let capture = slot::capture_ns(buffer, &time, arrival);
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some(writer) = st.writer.as_mut() else {
            // Closed at EOS and no new caps since: nothing to publish into.
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("buffer without caps (or after EOS)"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let format = *writer.format();
        if st.info.is_some() {
            let mut meta = FrameMeta::new(st.next_id, capture, format.frame_size);
            meta.flags = slot::flags(buffer, false, false);
            if self.commit_in_place(st, buffer, meta).is_some() {
                st.next_id += 1;
                st.frames += 1;
                st.lent += 1;
                return Ok(gst::FlowSuccess::Ok);
            }
        }
        let Some(writer) = st.writer.as_mut() else { return Err(gst::FlowError::NotNegotiated) };
        let payload = match slot::Payload::map(buffer, st.info.as_ref(), &format) {
            Ok(p) => p,
            Err(e @ slot::PayloadError::TooLarge { .. }) => {
                st.dropped += 1;
                gst::warning!(CAT, imp = self, "JPEG {e}; dropped");
                return Ok(gst::FlowSuccess::Ok);
            }
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                return Err(gst::FlowError::Error);
            }
        };
        let id = st.next_id;
        writer.publish(|slot| {
            let len = payload.copy_into(slot, &format);
            payload.meta(buffer, id, capture, len, false)
        });
        st.next_id += 1;
        st.frames += 1;
        Ok(gst::FlowSuccess::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mode;

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("660"), Some(0o660));
        assert_eq!(parse_mode("0o600"), Some(0o600));
        assert_eq!(parse_mode("rw"), None);
        assert_eq!(parse_mode("0999"), None);
        assert_eq!(parse_mode("77777"), None);
    }
}
