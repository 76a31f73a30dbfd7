#!/usr/bin/env bash
# The test command: installs what is missing (GStreamer, QEMU 10 from
# bookworm-backports), then runs every test, the real-guest suite included.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# The guest image is built (or found in its cache) once, before the tests that boot it.
bash scripts/build-guest-image.sh >/dev/null

cargo build --release --workspace --all-targets
cargo test --release --workspace -- --test-threads="${VHOSTSND_TEST_THREADS:-2}"
