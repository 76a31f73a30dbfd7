//! The `volume`, `mute` and `controls` properties both elements have: the card's
//! level for the element's stream (applied by the device to the audio, as a sound
//! card's own volume is), and whether the guest sees it in its mixer.

use std::sync::{Mutex, MutexGuard};

use gst::glib;
use gst::prelude::*;

use vhost_user_sound::{Card, Direction};

const DEFAULT_VOLUME: f64 = 1.0;
const DEFAULT_MUTE: bool = false;
const DEFAULT_CONTROLS: bool = false;

#[derive(Debug, Clone, Copy)]
struct Settings {
    volume: f64,
    mute: bool,
    controls: bool,
    /// The application set `volume` / `mute`: the card takes them when the element
    /// attaches. Otherwise the element takes the card's, so that an element that
    /// comes and goes (the daemon's capture pipeline, opened while the guest records)
    /// never undoes the guest's level.
    volume_set: bool,
    mute_set: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            volume: DEFAULT_VOLUME,
            mute: DEFAULT_MUTE,
            controls: DEFAULT_CONTROLS,
            volume_set: false,
            mute_set: false,
        }
    }
}

/// An element's mixer properties: kept here while the element has no card, the
/// card's own while it has one (the guest may change them).
#[derive(Default)]
pub struct Mixer {
    settings: Mutex<Settings>,
}

fn control_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Playback => "Master Playback",
        Direction::Capture => "Capture",
    }
}

pub fn properties(dir: Direction) -> Vec<glib::ParamSpec> {
    let what = match dir {
        Direction::Playback => "what the guest plays",
        Direction::Capture => "what the guest records",
    };
    let control = control_name(dir);
    vec![
        glib::ParamSpecDouble::builder("volume")
            .nick("Volume")
            .blurb(&format!(
                "Linear volume of {what}; with controls, the guest's '{control} Volume' \
                 (in 0.5 dB steps from -64 dB), which the guest may change"
            ))
            .minimum(0.0)
            .maximum(1.0)
            .default_value(DEFAULT_VOLUME)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("mute")
            .nick("Mute")
            .blurb(&format!(
                "Silence {what}; with controls, the guest's '{control} Switch' turned \
                 off, which the guest may change"
            ))
            .default_value(DEFAULT_MUTE)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("controls")
            .nick("Controls")
            .blurb(
                "Offer the guest the card's volumes and switches as mixer controls \
                 (VIRTIO_SND_F_CTLS); QEMU needs controls=on on its vhost-user-snd-pci \
                 device too, or the guest gets no sound card. Either element on a \
                 socket turns them on for the card",
            )
            .default_value(DEFAULT_CONTROLS)
            .mutable_ready()
            .build(),
    ]
}

impl Mixer {
    fn lock(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets one of the mixer properties, on `card` too if there is one. Returns
    /// false for a property that is not one of them.
    pub fn set_property(
        &self,
        name: &str,
        value: &glib::Value,
        card: Option<&Card>,
        dir: Direction,
    ) -> bool {
        let mut s = self.lock();
        match name {
            "volume" => {
                s.volume = value.get().unwrap_or(DEFAULT_VOLUME);
                s.volume_set = true;
                if let Some(card) = card {
                    card.set_volume(dir, s.volume);
                }
            }
            "mute" => {
                s.mute = value.get().unwrap_or(DEFAULT_MUTE);
                s.mute_set = true;
                if let Some(card) = card {
                    card.set_mute(dir, s.mute);
                }
            }
            "controls" => s.controls = value.get().unwrap_or(DEFAULT_CONTROLS),
            _ => return false,
        }
        true
    }

    /// One of the mixer properties, as the card has it if there is one.
    pub fn property(&self, name: &str, card: Option<&Card>, dir: Direction) -> Option<glib::Value> {
        let s = *self.lock();
        let level = card.map(|c| c.level(dir));
        match name {
            "volume" => Some(level.map_or(s.volume, |l| l.volume).to_value()),
            "mute" => Some(level.map_or(s.mute, |l| l.mute).to_value()),
            "controls" => Some(s.controls.to_value()),
            _ => None,
        }
    }

    /// The element got its card: the card takes the level the application set, and
    /// offers its controls if asked to.
    pub fn attached(&self, card: &Card, dir: Direction) {
        let s = *self.lock();
        if s.controls {
            card.offer_controls(true);
        }
        if s.volume_set {
            card.set_volume(dir, s.volume);
        }
        if s.mute_set {
            card.set_mute(dir, s.mute);
        }
    }

    /// The element lets go of its card: the level the guest left stays the element's.
    pub fn detached(&self, card: &Card, dir: Direction) {
        let level = card.level(dir);
        let mut s = self.lock();
        s.volume = level.volume;
        s.mute = level.mute;
    }
}
