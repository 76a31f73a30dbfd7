#!/bin/sh
# meson's custom_target for the plugin: builds it with cargo, then puts the library
# where meson expects its output.
# usage: meson-cargo-build.sh CARGO SOURCE_DIR TARGET_DIR OUTPUT
set -eu
cargo=$1 src=$2 target=$3 out=$4
"$cargo" build --release -p gst-plugin-vhostsnd --lib --manifest-path "$src/Cargo.toml" --target-dir "$target"
cp "$target/release/libgstvhostsnd.so" "$out"
