//! The card's control elements: what the host and the guest do with the mixer, and
//! the CTL_NOTIFY events that tell the guest of every change.
//!
//! A change is noted per control and sent once the event queue has a buffer for it,
//! so a burst of changes costs the guest one event per control, and nothing is lost
//! while the guest has no buffer posted (or QEMU has the ring stopped).

use log::Level as LogLevel;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{ByteValued, GuestAddressSpace, Le16, Le32};

use virtio_snd_wire::ctl::{CtlEvent, CTL_EVT_MASK_VALUE, EVT_CTL_NOTIFY};
use virtio_snd_wire::{Hdr, QUEUE_EVENT};

use super::events::MixerChange;
use super::{Card, DeviceEvent, Direction, State};
use crate::io;
use crate::log_limit::limited;
use crate::mixer::{Control, Kind, StreamLevel};

impl Card {
    /// Offers the guest the card's control elements (VIRTIO_SND_F_CTLS) from the next
    /// connection on. QEMU must be started with `controls=on` as well: without it
    /// QEMU passes the feature on but hides the config field that counts the
    /// controls, and the guest's driver fails to probe.
    pub fn offer_controls(&self, on: bool) {
        let mut st = self.lock();
        if st.controls != on && st.connected {
            limited!(
                LogLevel::Warn,
                "controls {}: takes effect when QEMU connects again",
                if on { "offered" } else { "withdrawn" }
            );
        }
        st.controls = on;
    }

    /// Whether the card offers control elements to the next connection.
    pub fn controls_offered(&self) -> bool {
        self.lock().controls
    }

    /// `dir`'s volume and mute, whoever set them last.
    pub fn level(&self, dir: Direction) -> StreamLevel {
        self.lock().mixer.level(dir)
    }

    /// The host sets `dir`'s linear volume (0 to 1): applied as given, and shown to
    /// the guest as the nearest step of its volume control.
    pub fn set_volume(&self, dir: Direction, volume: f64) {
        let mut st = self.lock();
        if let Some(c) = st.mixer.set_volume(dir, volume) {
            self.changed_control(&mut st, c);
        }
    }

    /// The host mutes or unmutes `dir`; the guest's switch follows.
    pub fn set_mute(&self, dir: Direction, mute: bool) {
        let mut st = self.lock();
        if let Some(c) = st.mixer.set_mute(dir, mute) {
            self.changed_control(&mut st, c);
        }
    }

    /// CTL_READ: the value of control `id`, if the card has it.
    pub(crate) fn read_control(&self, id: u32) -> Option<u32> {
        let c = Control::by_id(id)?;
        Some(self.lock().mixer.read(c))
    }

    /// CTL_WRITE. `Err` for an unknown control or a value out of its range; a change
    /// is told to the listeners and, as a real card's driver would, to the guest's
    /// other mixer clients.
    pub(crate) fn write_control(&self, id: u32, value: u32) -> Result<(), ()> {
        let c = Control::by_id(id).ok_or(())?;
        let mut st = self.lock();
        if st.mixer.write(c, value)? {
            self.changed_control(&mut st, c);
            drop(st);
            let change = match c.kind {
                Kind::Volume => MixerChange::Volume,
                Kind::Switch => MixerChange::Mute,
            };
            self.listeners.emit(DeviceEvent::Mixer {
                direction: c.dir,
                change,
            });
        }
        Ok(())
    }

    /// The driver acknowledged the features: CTL_NOTIFY only goes to one that took
    /// the controls.
    pub(crate) fn set_controls_acked(&self, acked: bool) {
        self.lock().controls_acked = acked;
    }

    /// The vring worker's answer to a kick on the event queue (and to every control
    /// request): buffers for the notifications that waited for one.
    pub(crate) fn serve_events(&self) {
        let mut st = self.lock();
        Self::send_notifications(&mut st);
    }

    fn changed_control(&self, st: &mut State, c: Control) {
        if st.controls && st.controls_acked {
            st.unsent_controls |= 1 << c.id();
            Self::send_notifications(st);
        }
    }

    /// Puts one CTL_NOTIFY per changed control into the guest's event buffers, as
    /// many as it has posted; the rest wait for its next kick.
    pub(super) fn send_notifications(st: &mut State) {
        if st.unsent_controls == 0 {
            return;
        }
        // The event ring carries no stream: once QEMU has set it up again (the VM
        // resumed, or a new driver) it is used, whether or not the vring worker has
        // had its first event on it, which comes only once the guest takes one.
        if !Self::queue_running(st, QUEUE_EVENT) && Self::start_ring(st, QUEUE_EVENT).is_none() {
            return;
        }
        let Some(vring) = Self::set_up_vring(st, QUEUE_EVENT).cloned() else {
            return;
        };
        let Some(atomic) = st.mem.clone() else {
            return;
        };
        let mem = atomic.memory();
        if !Self::queue_usable(st, QUEUE_EVENT, &vring, &*mem) {
            return;
        }
        let mut sent = false;
        while st.unsent_controls != 0 {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem);
            let Some(chain) = chain else {
                // The guest kicks once it posts a buffer again.
                if let Err(e) = vring.enable_notification() {
                    limited!(LogLevel::Debug, "event queue: cannot ask for kicks: {e}");
                }
                break;
            };
            let head = chain.head_index();
            let id = st.unsent_controls.trailing_zeros();
            let event = CtlEvent {
                hdr: Hdr {
                    code: Le32::from(EVT_CTL_NOTIFY),
                },
                control_id: Le16::from(id as u16),
                mask: Le16::from(CTL_EVT_MASK_VALUE),
            };
            let len = size_of::<CtlEvent>() as u32;
            let written = match io::split_chain(chain, &mem) {
                Ok((_, writable)) if writable.len() >= len => {
                    writable.slice(0, len).write(&mem, event.as_slice()).is_ok()
                }
                _ => false,
            };
            if written {
                st.unsent_controls &= !(1 << id);
            } else {
                limited!(
                    LogLevel::Debug,
                    "event buffer {head} has no room for an event: returned unused"
                );
            }
            Self::push_event_used(&vring, head, if written { len } else { 0 });
            sent = true;
        }
        if sent && vring.needs_notification().unwrap_or(true) {
            if let Err(e) = vring.signal_used_queue() {
                limited!(LogLevel::Debug, "event queue: cannot signal the guest: {e}");
            }
        }
    }

    fn push_event_used(vring: &VringRwLock, head: u16, len: u32) {
        if let Err(e) = vring.add_used(head, len) {
            limited!(
                LogLevel::Warn,
                "event queue: cannot return descriptor {head}: {e}"
            );
        }
    }
}
