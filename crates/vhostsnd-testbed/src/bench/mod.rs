//! The benchmark suite behind `cargo run --release --example bench`: each point is a
//! module that runs one measurement and returns a table. This crate's
//! `tests/bench_quick.rs` runs the quick mode in CI.

pub mod latency;
pub mod offline;
pub mod pacing;
pub mod qemu;
pub mod scale;
pub mod setup;
pub mod stats;

use std::fmt::Write as _;

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Opts {
    /// Seconds instead of tens of seconds; point 5 shortened to 2 s of audio.
    pub quick: bool,
    /// Run only this point (1..=5).
    pub only: Option<u32>,
    /// Skip point 5 even when not quick (no QEMU, or CI).
    pub skip_qemu: bool,
}

/// One result table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|s| s.to_string()).collect(),
            ..Table::default()
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// Every cell holds a number (or a number with a unit), none is empty or NaN.
    pub fn has_numbers(&self) -> bool {
        !self.rows.is_empty()
            && self.rows.iter().all(|r| {
                r.len() == self.headers.len()
                    && r.iter()
                        .skip(1)
                        .all(|c| !c.is_empty() && !c.contains("NaN") && !c.contains("inf"))
            })
    }

    pub fn markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        let _ = writeln!(s, "| {} |", self.headers.join(" | "));
        let _ = writeln!(
            s,
            "|{}|",
            self.headers
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        );
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }
}

/// Runs the selected points; a point that fails is reported as an error and the
/// others still run.
pub fn run(opts: &Opts) -> Vec<(u32, Result<Vec<Table>, String>)> {
    setup::init();
    let mut out = Vec::new();
    let want = |n: u32| opts.only.is_none_or(|o| o == n);
    if want(1) {
        out.push((1, pacing::run(opts)));
    }
    if want(2) {
        out.push((2, latency::run(opts)));
    }
    if want(3) {
        out.push((3, scale::run(opts)));
    }
    if want(4) {
        out.push((4, offline::run(opts)));
    }
    if want(5) && !opts.skip_qemu {
        out.push((5, qemu::run(opts)));
    }
    out
}
