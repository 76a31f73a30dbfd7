//! What happened on the card, fanned out to whoever listens (the elements, the
//! daemon). Listeners are called on the thread that made the change, with no card
//! lock held, so a listener may call back into the card.

use std::sync::{Arc, Mutex};

use virtio_snd_wire::formats::PcmParams;

use super::Direction;
use crate::pcm::PcmRequest;

/// What happened on the card, for the elements to tell the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A vhost-user frontend (QEMU) connected.
    Connected,
    /// The frontend went away; the streams were reset before this is sent.
    Disconnected,
    /// The guest's request on a stream was accepted.
    Stream {
        /// The stream.
        direction: Direction,
        /// What the guest asked for ([`PcmRequest::Release`] also when the driver went
        /// away, then without `params`).
        request: PcmRequest,
        /// The stream's parameters after the request, once the guest set them.
        params: Option<PcmParams>,
    },
    /// The guest changed the stream's volume or switch; [`Card::level`] tells the new
    /// level.
    ///
    /// [`Card::level`]: super::Card::level
    Mixer {
        /// The stream.
        direction: Direction,
        /// What changed.
        change: MixerChange,
    },
}

/// Which half of a stream's level the guest changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MixerChange {
    /// Its volume control.
    Volume,
    /// Its switch (mute).
    Mute,
}

/// A listener, as [`Card::subscribe`](super::Card::subscribe) takes it.
pub type Listener = Arc<dyn Fn(&DeviceEvent) + Send + Sync>;

/// The card's listeners, each under the id it was given.
#[derive(Default)]
pub(super) struct Listeners {
    list: Mutex<(u64, Vec<(u64, Listener)>)>,
}

impl Listeners {
    pub(super) fn add(&self, f: Listener) -> u64 {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.0 += 1;
        let id = list.0;
        list.1.push((id, f));
        id
    }

    pub(super) fn remove(&self, id: u64) {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .retain(|(i, _)| *i != id);
    }

    /// Calls every listener, outside the list's own lock.
    pub(super) fn emit(&self, ev: DeviceEvent) {
        let listeners: Vec<Listener> = self
            .list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .iter()
            .map(|(_, l)| l.clone())
            .collect();
        for l in listeners {
            l(&ev);
        }
    }
}
