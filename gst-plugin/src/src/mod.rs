//! `shmcastsrc`: a live source reading a shmcast ring.
#![forbid(unsafe_code)]

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_base as gst_base;

mod imp;

/// Where `shmcastsrc` starts reading a ring it attaches to for the first time.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstShmcastSrcStart")]
pub enum StartAt {
    /// The next frame published after attaching.
    #[default]
    #[enum_value(name = "Next: the next frame published after attaching", nick = "next")]
    Next = 0,
    /// The oldest frame still in the ring.
    #[enum_value(name = "Oldest: the oldest frame still in the ring", nick = "oldest")]
    Oldest = 1,
}

glib::wrapper! {
    /// The `shmcastsrc` element.
    pub struct ShmcastSrc(ObjectSubclass<imp::ShmcastSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// Registers `shmcastsrc` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    StartAt::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(Some(plugin), "shmcastsrc", gst::Rank::NONE, ShmcastSrc::static_type())
}
