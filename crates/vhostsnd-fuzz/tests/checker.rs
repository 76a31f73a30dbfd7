//! The checks catch what they are for: a byte written into a guard, into a
//! device-readable buffer or at the end of guest RAM fails the memory check, and
//! bytes in writable buffers do not.

use std::time::Duration;

use vhost_user_sound::Device;
use vhostsnd_fuzz::arena::{Arena, Pool, GUARD};
use virtio_snd_frontend::{FakeGuest, FakeGuestOptions};

fn verify(arena: &Arena, g: &FakeGuest) -> Result<(), String> {
    arena.verify(g).expect("guest RAM read back")
}

#[test]
fn memory_check_finds_stray_writes() {
    let dir = std::env::temp_dir().join(format!("vhostsnd-fuzz-checker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("snd.sock");
    let dev = Device::acquire(&path).unwrap();
    let opts = FakeGuestOptions {
        mem_size: 4 << 20,
        ..FakeGuestOptions::default()
    };
    let mut g = FakeGuest::connect_with(&path, Duration::from_secs(5), opts).unwrap();
    let mut arena = Arena::new(&mut g).unwrap();
    assert_eq!(verify(&arena, &g), Ok(()));

    let r = arena.alloc(Pool::Read, 100).unwrap();
    arena.fill(&mut g, r, &[7; 100]).unwrap();
    let w = arena.alloc(Pool::Write, 100).unwrap();
    arena.poison(&mut g, w, 100).unwrap();
    let big = arena.alloc(Pool::Read, 10_000).unwrap();
    arena.fill(&mut g, big, &[9; 10_000]).unwrap();
    assert_eq!(verify(&arena, &g), Ok(()));

    // What the device may do: write into a writable buffer.
    g.write_ram(w.addr, &[0; 100]).unwrap();
    assert_eq!(verify(&arena, &g), Ok(()));

    let cases = [
        ("readable buffer", r.addr + 50),
        ("guard after a readable buffer", r.addr + 1024 + 3),
        ("guard before a writable buffer", w.addr - 1),
        ("guard after a writable buffer", w.addr + 1024 + GUARD - 1),
        ("large readable buffer", big.addr + 9_999),
        ("end of RAM", g.ram_size() - 1),
    ];
    for (what, at) in cases {
        let old = g.read_ram(at, 1).unwrap();
        g.write_ram(at, &[old[0] ^ 0x11]).unwrap();
        let res = verify(&arena, &g);
        assert!(res.is_err(), "{what}: a write at {at:#x} went unnoticed");
        g.write_ram(at, &old).unwrap();
        assert_eq!(verify(&arena, &g), Ok(()), "{what}: restored");
    }
    drop(g);
    drop(dev);
    let _ = std::fs::remove_dir_all(&dir);
}
