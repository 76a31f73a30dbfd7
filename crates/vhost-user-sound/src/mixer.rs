//! The card's mixer: a volume and a switch per stream, the four control elements the
//! guest sees of them (VIRTIO_SND_F_CTLS), and the gain they make.
//!
//! The names are the ones ALSA's simple mixer and the sound servers' ALSA profiles
//! look for, so that `amixer`, PulseAudio and PipeWire in the guest take them as the
//! card's own playback and capture volume. Volumes are in 0.5 dB steps from -64 dB
//! to 0 dB with a dB TLV; step 0 is silence (the TLV's mute flag). The host sets a
//! linear volume, which the guest sees as the nearest step.

use virtio_snd_wire::ctl::*;
use virtio_snd_wire::InfoHdr;
use vm_memory::Le32;

use crate::card::Direction;

/// The highest volume step: 0 dB.
pub const VOLUME_STEPS: u32 = 128;
const DB_MIN_CENTI: i32 = -6400;
const DB_STEP_CENTI: i32 = 50;

/// One of the card's control elements, by the id the guest uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) dir: Direction,
    pub(crate) kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Volume,
    Switch,
}

/// In control-id order.
const CONTROLS: [(Control, &str); 4] = [
    (
        Control {
            dir: Direction::Playback,
            kind: Kind::Volume,
        },
        "Master Playback Volume",
    ),
    (
        Control {
            dir: Direction::Playback,
            kind: Kind::Switch,
        },
        "Master Playback Switch",
    ),
    (
        Control {
            dir: Direction::Capture,
            kind: Kind::Volume,
        },
        "Capture Volume",
    ),
    (
        Control {
            dir: Direction::Capture,
            kind: Kind::Switch,
        },
        "Capture Switch",
    ),
];

/// How many control elements the card has.
pub const CONTROL_COUNT: u32 = CONTROLS.len() as u32;

impl Control {
    pub(crate) fn by_id(id: u32) -> Option<Control> {
        CONTROLS.get(usize::try_from(id).ok()?).map(|(c, _)| *c)
    }

    pub(crate) fn id(self) -> u32 {
        CONTROLS.iter().position(|(c, _)| *c == self).unwrap_or(0) as u32
    }

    /// The largest value the guest may write.
    fn max(self) -> u32 {
        match self.kind {
            Kind::Volume => VOLUME_STEPS,
            Kind::Switch => 1,
        }
    }
}

/// Every control's CTL_INFO item, in id order.
pub(crate) fn infos() -> Vec<CtlInfo> {
    CONTROLS
        .iter()
        .map(|(c, name)| {
            let mut info = CtlInfo {
                hdr: InfoHdr {
                    hda_fn_nid: Le32::from(0),
                },
                count: Le32::from(1),
                index: Le32::from(0),
                ..CtlInfo::default()
            };
            let (role, type_, access) = match c.kind {
                Kind::Volume => (
                    CTL_ROLE_VOLUME,
                    CTL_TYPE_INTEGER,
                    CTL_ACCESS_READ | CTL_ACCESS_WRITE | CTL_ACCESS_TLV_READ,
                ),
                Kind::Switch => (
                    CTL_ROLE_MUTE,
                    CTL_TYPE_BOOLEAN,
                    CTL_ACCESS_READ | CTL_ACCESS_WRITE,
                ),
            };
            info.role = Le32::from(role);
            info.type_ = Le32::from(type_);
            info.access = Le32::from(access);
            info.integer = CtlInteger {
                min: Le32::from(0),
                max: Le32::from(c.max()),
                step: Le32::from(1),
            };
            info.name[..name.len()].copy_from_slice(name.as_bytes());
            info
        })
        .collect()
}

/// Whether control `id` has a TLV (the volumes' dB scale).
pub(crate) fn has_tlv(id: u32) -> bool {
    Control::by_id(id).is_some_and(|c| c.kind == Kind::Volume)
}

/// The dB scale of the volume controls as TLV words: type, length, minimum, step.
pub(crate) fn db_scale_tlv() -> [u32; 4] {
    [
        TLV_DB_SCALE,
        8,
        DB_MIN_CENTI as u32,
        DB_STEP_CENTI as u32 | TLV_DB_SCALE_MUTE,
    ]
}

/// A stream's volume and switch as the host sees them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamLevel {
    /// Linear gain, 0 to 1.
    pub volume: f64,
    /// Silenced (the guest's switch off).
    pub mute: bool,
}

/// One stream's volume: the step the guest sees and the gain applied, which is the
/// step's own unless the host set a volume between two steps.
#[derive(Clone, Copy, Debug)]
struct Channel {
    step: u32,
    linear: f64,
    on: bool,
}

impl Default for Channel {
    fn default() -> Self {
        Channel {
            step: VOLUME_STEPS,
            linear: 1.0,
            on: true,
        }
    }
}

/// The card's two channels of volume.
#[derive(Default)]
pub(crate) struct Mixer {
    channels: [Channel; 2],
}

/// A step's linear gain: 10^(dB/20), step 0 silent.
pub(crate) fn step_linear(step: u32) -> f64 {
    if step == 0 {
        return 0.0;
    }
    let centi = DB_MIN_CENTI + DB_STEP_CENTI * step.min(VOLUME_STEPS) as i32;
    10f64.powf(f64::from(centi) / 2000.0)
}

/// The step nearest to a linear gain (in dB).
pub(crate) fn linear_step(volume: f64) -> u32 {
    if volume.is_nan() || volume <= 0.0 {
        return 0;
    }
    let centi = 2000.0 * volume.log10();
    let step = ((centi - f64::from(DB_MIN_CENTI)) / f64::from(DB_STEP_CENTI)).round();
    step.clamp(0.0, f64::from(VOLUME_STEPS)) as u32
}

impl Mixer {
    /// A control's value as the guest reads it.
    pub(crate) fn read(&self, c: Control) -> u32 {
        let ch = &self.channels[c.dir.index()];
        match c.kind {
            Kind::Volume => ch.step,
            Kind::Switch => u32::from(ch.on),
        }
    }

    /// The guest writes a control. `Err` for a value out of range; `Ok(true)` if it
    /// changed anything.
    pub(crate) fn write(&mut self, c: Control, value: u32) -> Result<bool, ()> {
        if value > c.max() {
            return Err(());
        }
        let ch = &mut self.channels[c.dir.index()];
        let was = (ch.step, ch.on);
        match c.kind {
            Kind::Volume if ch.step != value => {
                ch.step = value;
                ch.linear = step_linear(value);
            }
            Kind::Volume => {}
            Kind::Switch => ch.on = value != 0,
        }
        Ok(was != (ch.step, ch.on))
    }

    pub(crate) fn level(&self, dir: Direction) -> StreamLevel {
        let ch = &self.channels[dir.index()];
        StreamLevel {
            volume: ch.linear,
            mute: !ch.on,
        }
    }

    /// The host sets a volume (clamped to 0..1). Returns the controls whose value
    /// the guest sees changed.
    pub(crate) fn set_volume(&mut self, dir: Direction, volume: f64) -> Option<Control> {
        let volume = if volume.is_nan() {
            0.0
        } else {
            volume.clamp(0.0, 1.0)
        };
        let ch = &mut self.channels[dir.index()];
        ch.linear = volume;
        let step = linear_step(volume);
        (ch.step != step).then(|| {
            ch.step = step;
            Control {
                dir,
                kind: Kind::Volume,
            }
        })
    }

    /// The host mutes or unmutes; returns the switch if it changed.
    pub(crate) fn set_mute(&mut self, dir: Direction, mute: bool) -> Option<Control> {
        let ch = &mut self.channels[dir.index()];
        (ch.on == mute).then(|| {
            ch.on = !mute;
            Control {
                dir,
                kind: Kind::Switch,
            }
        })
    }

    /// The gain to apply to `dir`'s audio, `None` for none (unity).
    pub(crate) fn gain(&self, dir: Direction) -> Option<f64> {
        let ch = &self.channels[dir.index()];
        match (ch.on, ch.linear) {
            (false, _) => Some(0.0),
            (true, g) if g >= 1.0 => None,
            (true, g) => Some(g),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_linear_volumes_agree() {
        assert_eq!(step_linear(VOLUME_STEPS), 1.0);
        assert_eq!(step_linear(0), 0.0);
        // -6 dB is step 116, about half the amplitude
        assert_eq!(linear_step(0.5), 116);
        assert!((step_linear(116) - 0.501).abs() < 0.001);
        assert_eq!(linear_step(1.0), VOLUME_STEPS);
        assert_eq!(linear_step(0.0), 0);
        assert_eq!(linear_step(f64::NAN), 0);
        assert_eq!(linear_step(1e-9), 0);
        assert_eq!(linear_step(7.0), VOLUME_STEPS);
        for step in 0..=VOLUME_STEPS {
            assert_eq!(linear_step(step_linear(step)), step);
        }
    }

    #[test]
    fn guest_writes_are_bounded_and_set_the_gain() {
        let mut m = Mixer::default();
        let vol = Control::by_id(0).unwrap();
        let sw = Control::by_id(1).unwrap();
        assert_eq!(m.gain(Direction::Playback), None);
        assert_eq!(m.write(vol, VOLUME_STEPS + 1), Err(()));
        assert_eq!(m.write(sw, 2), Err(()));
        assert_eq!(m.write(vol, 116), Ok(true));
        assert_eq!(m.write(vol, 116), Ok(false));
        assert!((m.gain(Direction::Playback).unwrap() - 0.501).abs() < 0.001);
        assert_eq!(m.gain(Direction::Capture), None);
        assert_eq!(m.write(sw, 0), Ok(true));
        assert_eq!(m.gain(Direction::Playback), Some(0.0));
        assert!(m.level(Direction::Playback).mute);
        assert_eq!(Control::by_id(CONTROL_COUNT), None);
        assert_eq!(Control::by_id(u32::MAX), None);
    }

    #[test]
    fn host_volumes_are_applied_exactly_and_shown_as_the_nearest_step() {
        let mut m = Mixer::default();
        let changed = m.set_volume(Direction::Capture, 0.5);
        assert_eq!(changed.map(Control::id), Some(2));
        assert_eq!(m.gain(Direction::Capture), Some(0.5));
        assert_eq!(m.read(Control::by_id(2).unwrap()), 116);
        assert_eq!(m.set_volume(Direction::Capture, 0.5), None);
        assert_eq!(
            m.set_mute(Direction::Capture, true).map(Control::id),
            Some(3)
        );
        assert_eq!(m.set_mute(Direction::Capture, true), None);
        assert_eq!(m.read(Control::by_id(3).unwrap()), 0);
        assert_eq!(
            m.set_volume(Direction::Playback, -3.0).map(Control::id),
            Some(0)
        );
        assert_eq!(m.level(Direction::Playback).volume, 0.0);
    }

    #[test]
    fn infos_name_the_controls_as_alsa_expects() {
        let infos = infos();
        assert_eq!(infos.len() as u32, CONTROL_COUNT);
        assert_eq!(infos[0].name(), b"Master Playback Volume");
        assert_eq!(infos[3].name(), b"Capture Switch");
        assert_eq!(u32::from(infos[2].integer.max), VOLUME_STEPS);
        assert_eq!(u32::from(infos[1].type_), CTL_TYPE_BOOLEAN);
    }
}
