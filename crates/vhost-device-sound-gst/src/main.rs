//! vhost-device-sound-gst: a drop-in for vhost-device-sound built on the vhostsnd
//! elements. One process, one sound card: the playback pipeline always runs, the
//! capture pipeline (the host microphone) only while the guest is capturing.

mod cli;
mod control;
mod gate;
mod host;
mod logger;
mod naming;
mod segment;
mod signals;

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gst::glib;
use log::{error, info};

use vhost_user_sound::{Device, DeviceEvent, Direction, PcmRequest};

use control::Control;
use gate::Gate;
use host::{HostPipeline, Side};

fn main() -> ExitCode {
    let args = cli::Args::parse();
    logger::init(args.verbose);
    if let Err(e) = signals::block() {
        error!("cannot block SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes over an inherited listening socket, after checking it is one.
fn inherited_listener(fd: i32) -> Result<UnixListener, String> {
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `listening`; an invalid fd
    // only makes it fail.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 || listening == 0 {
        return Err(format!("--socket-fd {fd} is not a listening socket"));
    }
    // SAFETY: the fd is an open listening socket handed to this process, and nothing
    // else in the process owns it.
    Ok(unsafe { UnixListener::from_raw_fd(fd) })
}

fn run(args: cli::Args) -> Result<(), String> {
    gst::init().map_err(|e| format!("cannot initialise GStreamer: {e}"))?;
    gstvhostsnd::plugin_register_static()
        .map_err(|e| format!("cannot register the vhostsnd elements: {e}"))?;

    // The daemon holds the device itself, so the guest's card stays whatever the
    // host pipelines do.
    let (device, socket) = match (&args.socket, args.socket_fd) {
        (Some(path), _) => {
            let dev = Device::acquire(path).map_err(|e| e.to_string())?;
            (dev, path.clone())
        }
        (None, Some(fd)) => {
            Device::from_listener(inherited_listener(fd)?).map_err(|e| e.to_string())?
        }
        (None, None) => return Err("--socket or --socket-fd is required".into()),
    };
    let socket = socket.to_string_lossy().into_owned();
    device.card().offer_controls(args.controls);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| naming::default_name(&socket));
    // The audio server's client name (pulsesink and pulsesrc take GLib's).
    glib::set_application_name(&name);
    info!("streams are named {name:?} in the host's audio server");

    let playback = HostPipeline::new(Side::Playback, &args.playback, &socket, &name)?;
    let capture = if args.no_capture {
        info!("capture: disabled, the guest records silence");
        None
    } else {
        Some(HostPipeline::new(
            Side::Capture,
            &args.capture,
            &socket,
            &name,
        )?)
    };

    let main_loop = glib::MainLoop::new(None, false);
    let ctx = glib::MainContext::default();
    let gate = Gate::new(device.clone(), capture.clone(), args.capture_allowed, ctx);
    if !args.capture_allowed {
        info!("capture: the microphone is denied until the control socket allows it");
    }
    let control = match &args.control_socket {
        Some(path) => {
            let g = gate.clone();
            let control = Control::new(
                device.clone(),
                args.capture_allowed,
                Box::new(move |allowed| g.set_allowed(allowed)),
            );
            let path = control.serve(path)?;
            gate.report_to(control.clone());
            Some((control, path))
        }
        None => None,
    };
    let subscription = subscribe(&device, gate, control.as_ref().map(|(c, _)| c.clone()));

    playback.start();
    info!("serving a virtio-snd device on {socket}");

    let quit = main_loop.clone();
    signals::on_shutdown(move |sig| {
        info!("signal {sig}: shutting down");
        quit.quit();
    })
    .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    main_loop.run();

    device.card().unsubscribe(subscription);
    if let Some((_, path)) = &control {
        let _ = std::fs::remove_file(path);
    }
    if let Some(c) = &capture {
        c.finish();
    }
    playback.finish();
    drop(device);
    Ok(())
}

/// Logs the guest's connections and stream starts and stops, tells the control
/// socket's subscribers, and opens the capture source only while the guest captures
/// (and the host allows it: the gate).
fn subscribe(device: &Arc<Device>, gate: Arc<Gate>, control: Option<Arc<Control>>) -> u64 {
    // Weak: the card keeps its listeners.
    let card = Arc::downgrade(device.card());
    device.card().subscribe(Arc::new(move |ev: &DeviceEvent| {
        let (direction, request, params) = match ev.clone() {
            DeviceEvent::Stream {
                direction,
                request,
                params,
            } => (direction, request, params),
            DeviceEvent::Mixer { direction, .. } => {
                let Some(level) = card.upgrade().map(|c| c.level(direction)) else {
                    return;
                };
                info!(
                    "guest set its {} level: volume {:.3}{}",
                    direction.name(),
                    level.volume,
                    if level.mute { ", muted" } else { "" }
                );
                if let Some(c) = &control {
                    c.publish(serde_json::json!({
                        "event": "mixer",
                        "direction": direction.name(),
                        "volume": level.volume,
                        "mute": level.mute,
                    }));
                }
                return;
            }
            DeviceEvent::Connected | DeviceEvent::Disconnected => {
                let event = if matches!(ev, DeviceEvent::Connected) {
                    "connected"
                } else {
                    "disconnected"
                };
                info!("guest {event}");
                if let Some(c) = &control {
                    c.publish(serde_json::json!({ "event": event }));
                }
                return;
            }
        };
        let format = params.and_then(|p| {
            gstvhostsnd::audio::gst_format(p.format).map(|f| (f.to_str(), p.rate_hz(), p.channels))
        });
        let desc = format
            .map(|(f, r, c)| format!(" ({f} {r} Hz {c} ch)"))
            .unwrap_or_default();
        let run = match request {
            PcmRequest::Start => {
                info!("guest started {}{desc}", direction.name());
                true
            }
            PcmRequest::Stop | PcmRequest::Release => {
                info!("guest stopped {}", direction.name());
                false
            }
            _ => return,
        };
        if let Some(c) = &control {
            let mut event = serde_json::json!({
                "event": if run { "start" } else { "stop" },
                "direction": direction.name(),
            });
            if let (true, Some(f)) = (run, params.as_ref().and_then(control::format)) {
                event["format"] = f;
            }
            c.publish(event);
        }
        if direction == Direction::Capture {
            gate.guest_captures(run);
        }
    }))
}
