//! `vhostsndsink`: audio from the pipeline becomes a virtual machine's microphone.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct VhostSndSink(ObjectSubclass<imp::VhostSndSink>)
        @extends gst_base::BaseSink, gst::Element, gst::Object,
        @implements gst_audio::StreamVolume;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "vhostsndsink",
        gst::Rank::NONE,
        VhostSndSink::static_type(),
    )
}
