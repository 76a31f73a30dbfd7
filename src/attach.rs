//! An element's hold on the device behind its `socket`, from NULL→READY to READY→NULL.

use std::path::Path;
use std::sync::Arc;

use gst::prelude::*;

use crate::audio;
use vhost_user_sound::{self as device, Card, Claim, Device, DeviceEvent, Direction, MixerChange};

type Hook = Box<dyn Fn(&gst::Element, &DeviceEvent) + Send + Sync>;

pub struct Attached {
    /// The element's direction of the card, which holds the device too.
    claim: Claim,
    subscription: u64,
}

impl Attached {
    /// Opens (or joins) the device on `socket` and claims `dir` of its card, which
    /// fails if another element already serves it. Device events concerning `dir` are
    /// posted as element messages from `element`, and the guest's changes to its
    /// level notify `element`'s `volume` and `mute`; `hook` sees every event too.
    pub fn new(
        element: &gst::Element,
        socket: Option<&str>,
        dir: Direction,
        hook: Option<Hook>,
    ) -> Result<Self, gst::ErrorMessage> {
        let Some(socket) = socket.filter(|s| !s.is_empty()) else {
            return Err(gst::error_msg!(
                gst::ResourceError::Settings,
                ("No socket path set: set the 'socket' property")
            ));
        };
        let device = Device::acquire(Path::new(socket)).map_err(|e| {
            let kind = match e {
                device::Error::InUse(_) => gst::ResourceError::Busy,
                _ => gst::ResourceError::OpenReadWrite,
            };
            gst::error_msg!(kind, ("{}", e))
        })?;
        // Two elements on one stream would each complete some of the guest's
        // periods, and each hear (or feed) only part of its audio.
        let claim = device.claim(dir).map_err(|e| {
            let (factory, stream) = match dir {
                Direction::Playback => ("vhostsndsrc", "playback"),
                Direction::Capture => ("vhostsndsink", "capture"),
            };
            gst::error_msg!(
                gst::ResourceError::Busy,
                (
                    "Socket {}: another {} in this process already serves the {} of \
                     that sound card (one element per direction)",
                    socket,
                    factory,
                    stream
                ),
                ["{}", e]
            )
        })?;
        let weak = element.downgrade();
        let card = claim.device().card();
        let subscription = card.subscribe(Arc::new(move |ev: &DeviceEvent| {
            let Some(element) = weak.upgrade() else {
                return;
            };
            if let DeviceEvent::Mixer { direction, change } = ev {
                if *direction == dir {
                    element.notify(match change {
                        MixerChange::Volume => "volume",
                        MixerChange::Mute => "mute",
                    });
                }
            }
            if let Some(s) = audio::event_message(ev, dir) {
                let _ =
                    element.post_message(gst::message::Element::builder(s).src(&element).build());
            }
            if let Some(hook) = &hook {
                hook(&element, ev);
            }
        }));
        Ok(Attached {
            claim,
            subscription,
        })
    }

    pub fn card(&self) -> &Arc<Card> {
        self.claim.device().card()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.card().unsubscribe(self.subscription);
    }
}
