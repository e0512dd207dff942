//! The buffer pool `shmcastsink` offers upstream: each buffer's memory is
//! the ring's next slot, lent by the writer ([`shm_proto::Writer::lend`]),
//! so the source renders straight into the ring and the sink commits the
//! slot without copying it.
//!
//! One slot is lent at a time; a buffer acquired while the lent one is still
//! out (a queue upstream holds several, say) gets ordinary memory instead,
//! which the sink copies as it would any buffer. A buffer is never recycled
//! with its slot: when the last reference to it goes, its memory (and with
//! it the [`shm_proto::Loan`]) is released, which ends the loan — an
//! uncommitted frame is abandoned and its sequence reused. Ordinary memory
//! is kept for reuse (a couple of frames' worth).
#![forbid(unsafe_code)]

use std::sync::{LazyLock, Mutex};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::subclass::prelude::*;

use super::ShmcastSink;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("shmcastsinkpool", gst::DebugColorFlags::empty(), Some("shmcast ring slot pool"))
});

/// Ordinary memories kept for buffers acquired while the slot is out.
const SPARE: usize = 2;

glib::wrapper! {
    /// A pool whose buffers are ring slots of one `shmcastsink`.
    pub struct SlotPool(ObjectSubclass<imp::SlotPool>) @extends gst::BufferPool, gst::Object;
}

impl SlotPool {
    /// A pool lending the slots of `sink`'s ring (held weakly: the pool may
    /// outlive the element in an upstream element's hands).
    pub fn new(sink: &ShmcastSink) -> SlotPool {
        let pool: SlotPool = glib::Object::new();
        pool.imp().sink.set(Some(sink));
        pool
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct SlotPool {
        pub(super) sink: glib::WeakRef<ShmcastSink>,
        /// Buffer size from the configuration.
        size: Mutex<usize>,
        spare: Mutex<Vec<gst::Memory>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for SlotPool {
        const NAME: &'static str = "GstShmcastSlotPool";
        type Type = super::SlotPool;
        type ParentType = gst::BufferPool;
    }

    impl ObjectImpl for SlotPool {}
    impl GstObjectImpl for SlotPool {}

    impl BufferPoolImpl for SlotPool {
        fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
            let Some((_, size, _, _)) = config.params() else { return false };
            *self.size.lock().unwrap_or_else(|e| e.into_inner()) = size as usize;
            self.spare.lock().unwrap_or_else(|e| e.into_inner()).clear();
            self.parent_set_config(config)
        }

        fn start(&self) -> bool {
            // Nothing to allocate ahead: a buffer is made at each acquire.
            true
        }

        fn acquire_buffer(
            &self,
            _params: Option<&gst::BufferPoolAcquireParams>,
        ) -> Result<gst::Buffer, gst::FlowError> {
            let size = *self.size.lock().unwrap_or_else(|e| e.into_inner());
            let loan = self.sink.upgrade().and_then(|s| s.imp().lend(size));
            let memory = match loan {
                // `from_mut_slice` takes the slot's bytes here, in the thread
                // acquiring the buffer, the one that fills it.
                Some(loan) => gst::Memory::from_mut_slice(loan),
                None => {
                    let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    match spare {
                        Some(m) => m,
                        None => {
                            gst::debug!(CAT, imp = self, "no slot to lend: ordinary memory of {size} bytes");
                            gst::Memory::with_size(size)
                        }
                    }
                }
            };
            let mut buffer = gst::Buffer::new();
            buffer.get_mut().expect("a new buffer is writable").append_memory(memory);
            Ok(buffer)
        }

        fn alloc_buffer(&self, _params: Option<&gst::BufferPoolAcquireParams>) -> Result<gst::Buffer, gst::FlowError> {
            let size = *self.size.lock().unwrap_or_else(|e| e.into_inner());
            gst::Buffer::with_size(size).map_err(|_| gst::FlowError::Error)
        }

        fn reset_buffer(&self, _buffer: &mut gst::BufferRef) {}

        fn release_buffer(&self, mut buffer: gst::Buffer) {
            // Never recycled with its memory: a slot's loan ends here (the
            // memory, which owns it, is dropped). Ordinary memory of the
            // right size that nobody else references is kept.
            let size = *self.size.lock().unwrap_or_else(|e| e.into_inner());
            let Some(b) = buffer.get_mut() else { return };
            if b.n_memory() != 1 {
                return;
            }
            let Some(memory) = b.memory(0) else { return };
            b.remove_memory(0);
            let ordinary = memory.is_type("SystemMemory") && memory.size() == size && memory.is_writable();
            if ordinary {
                let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
                if spare.len() < SPARE {
                    spare.push(memory);
                }
            }
        }
    }
}
