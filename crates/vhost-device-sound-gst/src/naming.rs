//! The VM's name on its streams in the host's audio server, so that a desktop's mixer
//! (pavucontrol, GNOME Settings, `pactl list sink-inputs`) lists each VM by name with
//! its own volume.
//!
//! PulseAudio and PipeWire name a stream by its properties. The elements that talk to
//! them (pulsesink, pulsesrc, pipewiresink, pipewiresrc) take those as
//! `stream-properties`, whichever of them `autoaudiosink`/`autoaudiosrc` picks; the
//! client's name is the process's GLib application name; and pulsesink names its
//! stream (`media.name`) after the stream's title tag, which the playback pipeline
//! sends ahead of the guest's first audio.

use std::path::Path;

use gst::prelude::*;

use crate::host::Side;

/// The name a device on `socket` goes by without `--name`: the socket file's name
/// without its extension (`/run/vms/work.sock` is `work`).
pub fn default_name(socket: &str) -> String {
    Path::new(socket)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "vhost-device-sound".to_owned())
}

/// The stream properties PulseAudio and PipeWire show for `name`'s `side`.
fn stream_properties(name: &str, side: Side) -> gst::Structure {
    // A node name is an identifier: no spaces or punctuation.
    let id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    gst::Structure::builder("props")
        .field("application.name", name)
        .field("media.name", name)
        .field("node.name", format!("vhostsnd.{id}.{}", side.name()))
        .field("node.description", name)
        .build()
}

/// Names every audio-server stream `pipeline` opens after `name`.
pub fn apply(pipeline: &gst::Pipeline, vhostsnd: &gst::Element, name: &str, side: Side) {
    let props = stream_properties(name, side);
    pipeline.connect_deep_element_added(move |_, _, element| {
        if element.find_property("stream-properties").is_some() {
            element.set_property("stream-properties", &props);
        }
    });
    if side != Side::Playback {
        return;
    }
    let mut tags = gst::TagList::new();
    if let Some(t) = tags.get_mut() {
        t.add::<gst::tags::Title>(&name, gst::TagMergeMode::Replace);
    }
    if let Some(pad) = vhostsnd.static_pad("src") {
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
            pad.push_event(gst::event::Tag::new(tags.clone()));
            gst::PadProbeReturn::Remove
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_socket_files() {
        assert_eq!(default_name("/run/vms/work.sock"), "work");
        assert_eq!(default_name("vm-2"), "vm-2");
        assert_eq!(default_name("/"), "vhost-device-sound");
    }

    #[test]
    fn node_names_are_identifiers() {
        gst::init().unwrap();
        let p = stream_properties("Work VM (2)", Side::Capture);
        assert_eq!(
            p.get::<&str>("node.name").unwrap(),
            "vhostsnd.Work_VM__2_.capture"
        );
        assert_eq!(p.get::<&str>("application.name").unwrap(), "Work VM (2)");
    }
}
