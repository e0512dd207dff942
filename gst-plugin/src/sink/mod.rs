//! `shmcastsink`: publishes every buffer into a shmcast ring.
#![forbid(unsafe_code)]

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_base as gst_base;

mod imp;
mod pool;

glib::wrapper! {
    /// The `shmcastsink` element.
    pub struct ShmcastSink(ObjectSubclass<imp::ShmcastSink>) @extends gst_base::BaseSink, gst::Element, gst::Object;
}

/// Registers `shmcastsink` with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(Some(plugin), "shmcastsink", gst::Rank::NONE, ShmcastSink::static_type())
}
