#!/usr/bin/env bash
# The test command: installs what is missing (GStreamer, QEMU 10 from
# bookworm-backports), then runs every test, the real-guest suite included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The guest image is built (or found in its cache) once, before the tests that boot it.
bash scripts/build-guest-image.sh >/dev/null

cargo build --release --workspace --all-targets
# Every test binary prints its own result; the last line adds them up.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --workspace -- --test-threads="${VHOSTSND_TEST_THREADS:-2}" 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
