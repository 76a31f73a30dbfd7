//! What the Linux driver probes: the config space and PCM_INFO, CHMAP_INFO and
//! JACK_INFO, whole and in partial ranges, with item sizes larger and smaller than the
//! device's structs.

mod common;

use common::*;
use virtio_snd_wire::formats::{self, FMT_S16};
use virtio_snd_wire::*;
use vm_memory::ByteValued;

#[test]
fn probe_config_and_info() {
    let (_rig, mut g) = Rig::new("probe");
    let cfg = g.config().unwrap();
    assert_eq!(cfg.jacks.to_native(), 0);
    assert_eq!(cfg.streams.to_native(), 2);
    assert_eq!(cfg.chmaps.to_native(), 16);
    let raw = g.config_bytes(16).unwrap();
    let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
    assert_eq!(raw.len(), 16);
    assert_eq!((word(0), word(4), word(8), word(12)), (0, 2, 16, 0));

    let info = g.probe().expect("probe succeeds");
    assert!(info.jacks.is_empty());
    assert_eq!(info.pcms.len(), 2);
    for (i, p) in info.pcms.iter().enumerate() {
        let dir = if i == 0 { D_OUTPUT } else { D_INPUT };
        assert_eq!(p.direction, dir, "stream {i} direction");
        assert_eq!(
            (p.channels_min, p.channels_max),
            (1, 8),
            "stream {i} channels"
        );
        assert_eq!(p.features.to_native(), 0);
        let fm = p.formats.to_native();
        let rm = p.rates.to_native();
        assert_eq!(fm, formats::formats_mask());
        assert_eq!(rm, formats::rates_mask());
        assert_ne!(fm & (1 << FMT_S16), 0, "S16 advertised");
        for bit in 0..64u8 {
            if fm & (1 << bit) != 0 {
                assert!(formats::sample_bytes(bit).is_some(), "format {bit} known");
            }
            if rm & (1 << bit) != 0 {
                assert!(formats::rate_hz(bit).is_some(), "rate {bit} known");
            }
        }
        // 384000 Hz (13) is unknown to Linux.
        assert_eq!(rm & (1 << 13), 0);
        assert_eq!(p.padding, [0; 5]);
    }
    assert_eq!(
        info.pcms[0].hdr.hda_fn_nid, info.pcms[1].hdr.hda_fn_nid,
        "one ALSA PCM device"
    );

    // All 16 channel maps: channel counts 1..8 per direction, positions only where
    // there are channels.
    assert_eq!(info.chmaps.len(), 16);
    for dir in [D_OUTPUT, D_INPUT] {
        let mut counts: Vec<u8> = info
            .chmaps
            .iter()
            .filter(|c| c.direction == dir)
            .map(|c| c.channels)
            .collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=8).collect::<Vec<u8>>(), "direction {dir}");
    }
    for c in &info.chmaps {
        let n = usize::from(c.channels);
        assert!(c.positions[..n].iter().all(|p| *p != 0));
        assert!(c.positions[n..].iter().all(|p| *p == 0));
        assert_eq!(c.hdr.hda_fn_nid, info.pcms[0].hdr.hda_fn_nid);
    }

    // Partial ranges.
    let (st, part) = g.chmap_info(3, 5).unwrap();
    assert_eq!((st, part.len()), (S_OK, 5));
    assert_eq!(part[..], info.chmaps[3..8]);
    let (st, last) = g.chmap_info(15, 1).unwrap();
    assert_eq!((st, last[0]), (S_OK, info.chmaps[15]));
    assert_eq!(g.chmap_info(15, 2).unwrap().0, S_BAD_MSG);
    assert_eq!(g.chmap_info(16, 1).unwrap().0, S_BAD_MSG);
    let (st, one) = g.pcm_info(1, 1).unwrap();
    assert_eq!((st, one[0]), (S_OK, info.pcms[1]));
    assert_eq!(g.pcm_info(2, 1).unwrap().0, S_BAD_MSG);
    assert_eq!(g.pcm_info(0, 3).unwrap().0, S_BAD_MSG);

    // An item size larger than the device's struct: zero-padded items.
    let r = g.control(&query(R_PCM_INFO, 0, 2, 40), 4 + 80).unwrap();
    assert_eq!((r.status(), r.used_len), (S_OK, 84));
    for (i, p) in info.pcms.iter().enumerate() {
        let item = &r.resp[4 + 40 * i..4 + 40 * (i + 1)];
        assert_eq!(&item[..32], p.as_slice());
        assert_eq!(&item[32..], &[0u8; 8]);
    }
    let r = g.control(&query(R_CHMAP_INFO, 14, 2, 30), 4 + 60).unwrap();
    assert_eq!((r.status(), r.used_len), (S_OK, 64));
    assert_eq!(&r.resp[4..28], info.chmaps[14].as_slice());
    assert_eq!(&r.resp[28..34], &[0u8; 6]);
    assert_eq!(&r.resp[34..58], info.chmaps[15].as_slice());
    assert_eq!(&r.resp[58..64], &[0u8; 6]);
    // Smaller than the struct: refused.
    let r = g.control(&query(R_PCM_INFO, 0, 1, 31), 4 + 32).unwrap();
    assert_eq!((r.status(), r.used_len), (S_BAD_MSG, 4));

    // No jacks: an empty query is fine, asking for one is not.
    let (st, jacks) = g.jack_info(0, 0).unwrap();
    assert_eq!((st, jacks.len()), (S_OK, 0));
    assert_eq!(g.jack_info(0, 1).unwrap().0, S_BAD_MSG);
    alive(&mut g);
}
