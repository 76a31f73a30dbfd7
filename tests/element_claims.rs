//! One element per direction of a card: a second vhostsndsrc (or vhostsndsink) on a
//! socket that already has one fails at NULL→READY with a busy error naming the
//! socket, while a src and a sink on one socket are one card.

mod support;

use gst::prelude::*;

use support::*;

fn element(factory: &str, socket: &std::path::Path) -> (gst::Element, gst::Bus) {
    init();
    let el = gst::ElementFactory::make(factory)
        .property("socket", socket.to_str().expect("utf-8 path"))
        .build()
        .expect("element");
    let bus = watch_bus(&el);
    (el, bus)
}

/// The error `bus` has, as (error, message text).
fn bus_error(bus: &gst::Bus) -> Option<(gst::glib::Error, String)> {
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(e) => Some((e.error(), e.error().to_string())),
        _ => None,
    }
}

fn second_of_a_direction_is_busy(factory: &str, direction: &str) {
    let socket = socket_path(&format!("claims-{factory}"));
    let (first, first_bus) = element(factory, &socket);
    first
        .set_state(gst::State::Ready)
        .expect("the first reaches READY");
    assert!(bus_error(&first_bus).is_none());

    let (second, bus) = element(factory, &socket);
    assert!(
        second.set_state(gst::State::Ready).is_err(),
        "a second {factory} on one socket reached READY"
    );
    let (err, text) = bus_error(&bus).expect("an error on the second's bus");
    assert!(
        err.matches(gst::ResourceError::Busy),
        "not RESOURCE_BUSY: {err:?}"
    );
    let path = socket.to_str().unwrap();
    assert!(text.contains(path), "the error names no socket: {text}");
    assert!(
        text.contains(factory) && text.contains(direction),
        "the error does not say what is taken: {text}"
    );
    let _ = second.set_state(gst::State::Null);

    // The first keeps serving, and once it lets go another one can take over.
    assert_eq!(first.current_state(), gst::State::Ready);
    let mut g = connect(&socket);
    g.probe().expect("the card still answers");
    drop(g);
    first.set_state(gst::State::Null).unwrap();
    let (third, bus) = element(factory, &socket);
    third
        .set_state(gst::State::Ready)
        .expect("a new one reaches READY once the first is gone");
    assert!(bus_error(&bus).is_none());
    let mut g = connect(&socket);
    g.probe().expect("the new one serves the socket");
    drop(g);
    third.set_state(gst::State::Null).unwrap();
    assert!(!socket.exists(), "the socket closes with its last element");
    let _ = std::fs::remove_dir_all(socket.parent().unwrap());
}

#[test]
fn a_second_src_on_one_socket_is_busy() {
    second_of_a_direction_is_busy("vhostsndsrc", "playback");
}

#[test]
fn a_second_sink_on_one_socket_is_busy() {
    second_of_a_direction_is_busy("vhostsndsink", "capture");
}

#[test]
fn a_src_and_a_sink_share_one_socket() {
    let socket = socket_path("claims-src-sink");
    let (src, src_bus) = element("vhostsndsrc", &socket);
    let (sink, sink_bus) = element("vhostsndsink", &socket);
    src.set_state(gst::State::Ready)
        .expect("the src reaches READY");
    sink.set_state(gst::State::Ready)
        .expect("the sink reaches READY");
    assert!(bus_error(&src_bus).is_none());
    assert!(bus_error(&sink_bus).is_none());
    let mut g = connect(&socket);
    let info = g.probe().unwrap();
    assert_eq!(u32::from(info.config.streams), 2);
    // A second of either direction is still refused while both are held.
    let (src2, bus) = element("vhostsndsrc", &socket);
    assert!(src2.set_state(gst::State::Ready).is_err());
    assert!(bus_error(&bus).is_some_and(|(e, _)| e.matches(gst::ResourceError::Busy)));
    drop(g);
    src.set_state(gst::State::Null).unwrap();
    sink.set_state(gst::State::Null).unwrap();
    assert!(!socket.exists(), "the socket closes with its last element");
    let _ = std::fs::remove_dir_all(socket.parent().unwrap());
}
