//! An element's hold on the device behind its `socket`, from NULL→READY to READY→NULL.

use std::path::Path;
use std::sync::Arc;

use gst::prelude::*;

use crate::audio;
use vhost_user_sound::{self as device, Card, Device, DeviceEvent, Direction};

type Hook = Box<dyn Fn(&gst::Element, &DeviceEvent) + Send + Sync>;

pub struct Attached {
    device: Arc<Device>,
    subscription: u64,
}

impl Attached {
    /// Opens (or joins) the device on `socket`. Device events concerning `dir` are
    /// posted as element messages from `element`; `hook` sees every event too.
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
        let weak = element.downgrade();
        let subscription = device.card().subscribe(Arc::new(move |ev: &DeviceEvent| {
            let Some(element) = weak.upgrade() else {
                return;
            };
            if let Some(s) = audio::event_message(ev, dir) {
                let _ =
                    element.post_message(gst::message::Element::builder(s).src(&element).build());
            }
            if let Some(hook) = &hook {
                hook(&element, ev);
            }
        }));
        Ok(Attached {
            device,
            subscription,
        })
    }

    pub fn card(&self) -> &Arc<Card> {
        self.device.card()
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.device.card().unsubscribe(self.subscription);
    }
}
