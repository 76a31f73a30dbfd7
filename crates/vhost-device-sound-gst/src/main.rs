//! vhost-device-sound-gst: a drop-in for vhost-device-sound built on the vhostsnd
//! elements. One process, one sound card: the playback pipeline always runs, the
//! capture pipeline (the host microphone) only while the guest is capturing.

mod cli;
mod host;
mod logger;
mod naming;
mod signals;

use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use clap::Parser;
use gst::glib;
use log::{error, info};

use vhost_user_sound::{Device, DeviceEvent, Direction, Pacing, PcmRequest};

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
        let pipeline = HostPipeline::new(Side::Capture, &args.capture, &socket, &name)?;
        // The source opens at the guest's START: its first period waits for the
        // source's first audio (FIRST_CAPTURE_WAIT_NS at most), not filled with
        // silence by the card's pacer meanwhile.
        device
            .card()
            .set_pacing(Direction::Capture, Pacing::Element);
        Some(pipeline)
    };

    let main_loop = glib::MainLoop::new(None, false);
    let ctx = glib::MainContext::default();
    let subscription = subscribe(&device, &ctx, capture.clone());

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
    if let Some(c) = &capture {
        c.finish();
    }
    playback.finish();
    drop(device);
    Ok(())
}

/// Logs the guest's stream starts and stops, and runs the capture pipeline only
/// while the guest captures (privacy: the host microphone is open no longer).
fn subscribe(
    device: &Arc<Device>,
    ctx: &glib::MainContext,
    capture: Option<Rc<HostPipeline>>,
) -> u64 {
    let capture = capture.map(glib::thread_guard::ThreadGuard::new);
    let capture = Arc::new(capture);
    let ctx = ctx.clone();
    device.card().subscribe(Arc::new(move |ev: &DeviceEvent| {
        let DeviceEvent::Stream {
            direction,
            request,
            params,
        } = ev.clone()
        else {
            match ev {
                DeviceEvent::Connected => info!("guest connected"),
                _ => info!("guest disconnected"),
            }
            return;
        };
        let desc = params
            .and_then(|p| {
                gstvhostsnd::audio::gst_format(p.format)
                    .map(|f| format!(" ({} {} Hz {} ch)", f.to_str(), p.rate_hz(), p.channels))
            })
            .unwrap_or_default();
        let run = match request {
            PcmRequest::Start => {
                info!("guest started {}{desc}", direction.name());
                Some(true)
            }
            PcmRequest::Stop | PcmRequest::Release => {
                info!("guest stopped {}", direction.name());
                Some(false)
            }
            _ => None,
        };
        if direction != Direction::Capture {
            return;
        }
        let (Some(run), capture) = (run, capture.clone()) else {
            return;
        };
        ctx.invoke(move || {
            if let Some(c) = capture.as_ref() {
                if run {
                    info!("capture: opening the host source");
                    c.get_ref().start();
                } else {
                    c.get_ref().stop();
                    info!("capture: host source closed");
                }
            }
        });
    }))
}
