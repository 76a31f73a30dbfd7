//! The benchmark suite (examples/bench) in quick mode: every point but the QEMU
//! comparison runs and produces numbers. Timings are not checked: CI machines are
//! too noisy for that; BENCHMARKS.md has the figures.

use vhostsnd_testbed::bench as suite;

#[test]
fn bench_quick_produces_numbers() {
    let opts = suite::Opts {
        quick: true,
        only: None,
        skip_qemu: true,
    };
    let results = suite::run(&opts);
    let points: Vec<u32> = results.iter().map(|(n, _)| *n).collect();
    assert_eq!(points, [1, 2, 3, 4]);
    for (n, r) in results {
        let tables = r.unwrap_or_else(|e| panic!("point {n} failed: {e}"));
        assert!(!tables.is_empty(), "point {n} produced no table");
        for t in tables {
            assert!(t.has_numbers(), "point {n}: {}", t.markdown());
        }
    }
}
