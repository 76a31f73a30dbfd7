#!/usr/bin/env bash
# Installs what building and testing gst-vhostsnd needs on Debian bookworm:
# GStreamer 1.22 development files, and QEMU 10 from bookworm-backports
# (bookworm's own QEMU 7.2 has no vhost-user-snd-pci).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The backports source reuses whatever mirror the machine already uses for Debian.
backports=/etc/apt/sources.list.d/vhostsnd-backports.sources
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
    if [ -z "$uri" ]; then
        uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\/debian\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
            /etc/apt/sources.list 2>/dev/null | head -n1)
    fi
    if [ -z "$uri" ]; then
        echo "install-deps: found no Debian apt source to reuse for bookworm-backports" >&2
        exit 1
    fi
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$uri" | $SUDO tee "$backports" >/dev/null
fi

packages=(
    pkg-config
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-tools
    cpio xz-utils meson ninja-build
    # Real audio servers for the tests (vhostsnd_testbed::audio_server): PulseAudio
    # 16 runs beside PipeWire 1.4 below; dbus-daemon has dbus-run-session.
    pulseaudio pulseaudio-utils gstreamer1.0-pulseaudio dbus-daemon
)
# PipeWire 1.4 from bookworm-backports (package:lowest acceptable version):
# bookworm's 0.3.65 clashes with the libpipewire 1.4 that backports'
# qemu-system-gui pulls in.
backports_packages=(pipewire:1.0 pipewire-pulse:1.0 wireplumber:0.5 gstreamer1.0-pipewire:1.0)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
missing_backports=()
for pv in "${backports_packages[@]}"; do
    p=${pv%%:*}
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' &&
        dpkg --compare-versions "$(dpkg-query -W -f='${Version}' "$p")" ge "${pv#*:}"; then
        continue
    fi
    missing_backports+=("$p")
done
qemu_ok=0
if command -v qemu-system-x86_64 >/dev/null 2>&1 &&
    qemu-system-x86_64 -device help 2>/dev/null | grep -q vhost-user-snd-pci; then
    qemu_ok=1
fi

if [ "${#missing[@]}" -gt 0 ] || [ "${#missing_backports[@]}" -gt 0 ] || [ "$qemu_ok" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    [ "${#missing[@]}" -eq 0 ] || $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [ "$qemu_ok" -eq 0 ]; then
        $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports \
            qemu-system-x86 qemu-system-data ipxe-qemu seabios
    fi
    [ "${#missing_backports[@]}" -eq 0 ] ||
        $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports "${missing_backports[@]}"
fi
