//! `vhostsndsrc`: what a virtual machine plays, as a live audio source.

use gst::glib;
use gst::prelude::*;

mod imp;
mod pool;

glib::wrapper! {
    pub struct VhostSndSrc(ObjectSubclass<imp::VhostSndSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object,
        @implements gst_audio::StreamVolume;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "vhostsndsrc",
        gst::Rank::NONE,
        VhostSndSrc::static_type(),
    )
}
