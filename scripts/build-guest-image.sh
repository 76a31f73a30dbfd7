#!/usr/bin/env bash
# Builds the tiny Linux guest the real-guest tests boot under QEMU: a Debian
# bookworm-backports 6.12 kernel, its sound modules (virtio_snd and what it needs),
# busybox and alsa-utils (aplay, arecord, speaker-test, alsabat, amixer) with their
# shared libraries, all taken from Debian packages fetched with `apt-get download`
# and unpacked with dpkg-deb. Nothing is installed on the host.
#
# The result is cached outside the work tree, in
#   ${VHOSTSND_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-vhostsnd/guest}/<key>/
# where <key> hashes this script and the exact package versions apt resolves, so the
# image is rebuilt only when one of them changes. The last line on stdout is the
# directory holding `vmlinuz` and `initramfs.cpio.gz`; progress goes to stderr.
#
# Guest protocol (implemented by /init, used by tests/common/qemu.rs):
#   - /init mounts proc, sysfs, devtmpfs, /tmp; insmods the sound modules in
#     dependency order; waits for the kernel RNG; prints VSND-BOOTED.
#   - The test script is /vsnd/cmd.sh if present (an extra cpio appended to the initrd
#     at run time), otherwise the base64 shell script in the kernel parameter
#     `vsnd.cmd=`. It runs with `sh` in /vsnd/in (input files from the appended cpio)
#     or /tmp.
#   - Afterwards /init prints `VSND-RC=<exit code>` and powers off.
#   - `vsnd-export FILE [NAME]` prints `VSND-FILE-BEGIN NAME BYTES`, base64 lines and
#     `VSND-FILE-END NAME` on the console.
#   - `vsnd-wait-card [SECONDS]` waits until ALSA card 0 has a PCM device.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script_path="$script_dir/$(basename "${BASH_SOURCE[0]}")"
cache_root=${VHOSTSND_GUEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gst-vhostsnd/guest}
sound_modules=(soundcore snd snd-timer snd-pcm virtio_snd)
guest_bins=(usr/bin/aplay usr/bin/arecord usr/bin/speaker-test usr/bin/alsabat usr/bin/amixer)
user_packages=(busybox-static alsa-utils libasound2 libasound2-data libatopology2
    libfftw3-single3 libgomp1 libsamplerate0 libncursesw6 libtinfo6 libgcc-s1 libc6)

log() { echo "build-guest-image: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

for tool in apt-get apt-cache dpkg-deb xz cpio gzip sha256sum flock tar; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is missing (run scripts/install-deps.sh)"
done

# Newest bookworm-backports 6.12 amd64 kernel image (signed flavour; not -unsigned,
# -dbg, cloud or rt).
find_kernel() {
    apt-cache search --names-only '^linux-image-6\.12' 2>/dev/null | awk '{print $1}' |
        grep -E '^linux-image-6\.12\.[0-9]+[^ ]*-amd64$' |
        grep -Ev -e '-(cloud|rt)-amd64$' | sort -V | tail -n1
}

kernel_pkg=$(find_kernel || true)
if [ -z "$kernel_pkg" ] || ! apt-cache show busybox-static >/dev/null 2>&1; then
    log "package lists lack the kernel or busybox; running install-deps.sh and apt-get update"
    "$script_dir/install-deps.sh" >&2
    if [ "$(id -u)" -eq 0 ]; then apt-get update -q >&2; else sudo apt-get update -q >&2; fi
    kernel_pkg=$(find_kernel || true)
    [ -n "$kernel_pkg" ] || die "no linux-image-6.12.*-amd64 package found (is bookworm-backports configured?)"
fi
packages=("$kernel_pkg" "${user_packages[@]}")

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9

# The exact .deb files apt resolves (name_version_arch.deb, size, hash) form the key.
uris=$(cd "$cache_root" && apt-get download --print-uris "${packages[@]}" 2>&1) ||
    die "apt-get could not resolve ${packages[*]}: $uris"
key=$({
    sha256sum "$script_path" | cut -d' ' -f1
    printf '%s\n' "$uris" | awk '{print $2, $3, $4}' | sort
} | sha256sum | cut -c1-16)
out="$cache_root/$key"
if [ -f "$out/vmlinuz" ] && [ -f "$out/initramfs.cpio.gz" ]; then
    log "cached image $out"
    echo "$out"
    exit 0
fi

log "building image $key (kernel $kernel_pkg)"
debs="$cache_root/debs"
mkdir -p "$debs"
# Drop stale downloads so the directory holds only what this key uses.
wanted=$(printf '%s\n' "$uris" | awk '{print $2}')
for f in "$debs"/*.deb; do
    [ -e "$f" ] || continue
    printf '%s\n' "$wanted" | grep -qxF "$(basename "$f")" || rm -f "$f"
done
missing=()
while read -r _ file _; do
    [ -f "$debs/$file" ] || missing+=("$file")
done <<<"$uris"
if [ "${#missing[@]}" -gt 0 ]; then
    (cd "$debs" && apt-get download -q "${packages[@]}" >&2) || die "apt-get download failed"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vsnd-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT
ex="$work/extract"
root="$work/root"
mkdir -p "$ex" "$root"

deb_of() { printf '%s\n' "$uris" | awk -v p="$1" '{split($2, a, "_"); if (a[1] == p) print $2}'; }
for p in "${user_packages[@]}"; do
    f=$(deb_of "$p")
    [ -n "$f" ] || die "no .deb resolved for $p"
    dpkg-deb -x "$debs/$f" "$ex"
done

# Kernel: only vmlinuz, its config, the module lists and the sound and virtio module
# trees are unpacked (the package ships no modules.dep: depmod runs at install time).
kdeb="$debs/$(deb_of "$kernel_pkg")"
kex="$work/kernel"
mkdir -p "$kex"
dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$kex" --wildcards \
    './boot/vmlinuz-*' './boot/config-*' './lib/modules/*/modules.order' \
    './lib/modules/*/modules.builtin' './lib/modules/*/kernel/sound/*' \
    './lib/modules/*/kernel/drivers/virtio/*'
kver=$(basename "$(ls -d "$kex"/lib/modules/*)")
kmods="$kex/lib/modules/$kver"
cp "$kex/boot/vmlinuz-$kver" "$work/vmlinuz"

# What the guest needs built in: PCI virtio transport, 8250 console, devtmpfs, ...
for opt in CONFIG_VIRTIO_PCI CONFIG_SERIAL_8250_CONSOLE CONFIG_DEVTMPFS CONFIG_BLK_DEV_INITRD \
    CONFIG_RD_GZIP CONFIG_VIRTIO; do
    grep -qx "$opt=y" "$kex/boot/config-$kver" || die "$kver: $opt is not built in"
done

# Module load order from each module's own `depends=` field (what `modinfo -F
# depends` prints), files located via modules.order.
norm() { printf '%s' "$1" | tr '-' '_'; }
mod_file() {
    local path f
    path=$(awk -v want="$(norm "$1")" '{
        b = $0; sub(/.*\//, "", b); sub(/\.ko.*/, "", b); gsub(/-/, "_", b)
        if (b == want) { print; exit }
    }' "$kmods/modules.order")
    [ -n "$path" ] || return 0
    for f in "$kmods/$path" "$kmods/$path.xz" "$kmods/$path.zst"; do
        [ -f "$f" ] && { echo "${f#"$kmods"/}"; return 0; }
    done
    die "module $1 ($path) is outside the unpacked module trees"
}
order=()
mkdir -p "$root/lib/modules"
add_module() {
    local name=$1 path ko dep n
    for n in "${order[@]+"${order[@]}"}"; do
        [ "$(norm "${n%.ko}")" = "$(norm "$name")" ] && return 0
    done
    path=$(mod_file "$name")
    if [ -z "$path" ]; then
        grep -q "/$(norm "$name").ko\|/${name}.ko" "$kmods/modules.builtin" &&
            { log "$name is built in"; return 0; }
        die "module $name not found in $kver"
    fi
    ko="$root/lib/modules/$(basename "${path%.xz}")"
    case "$path" in
    *.xz) xz -dc "$kmods/$path" >"$ko" ;;
    *.zst) zstd -dcq "$kmods/$path" >"$ko" ;;
    *) cp "$kmods/$path" "$ko" ;;
    esac
    for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$dep"
    done
    order+=("$(basename "$ko")")
}
for m in "${sound_modules[@]}"; do add_module "$m"; done
mkdir -p "$root/etc/vsnd"
printf '%s\n' "${order[@]}" >"$root/etc/vsnd/modules"
log "modules: ${order[*]}"

# Busybox with its applets as symlinks.
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
cp "$ex/bin/busybox" "$root/bin/busybox"
"$root/bin/busybox" --list-full | while read -r applet; do
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done

# alsa-utils binaries and the shared objects the guest's own loader resolves for them.
libpath="$ex/lib/x86_64-linux-gnu:$ex/usr/lib/x86_64-linux-gnu"
loader="$ex/lib64/ld-linux-x86-64.so.2"
[ -e "$loader" ] || loader="$ex/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu" "$root/usr/lib/x86_64-linux-gnu"
cp -L "$loader" "$root/lib64/ld-linux-x86-64.so.2"
for b in "${guest_bins[@]}"; do
    [ -e "$ex/$b" ] || die "$b missing from alsa-utils"
    rm -f "$root/$b"
    cp -a "$ex/$b" "$root/$b"
    [ -L "$ex/$b" ] && continue
    listing=$("$loader" --library-path "$libpath" --list "$ex/$b") || die "cannot resolve libraries of $b"
    while read -r lib; do
        case "$lib" in
        "$ex"/*) ;;
        *) die "$b needs $lib, which no guest package provides" ;;
        esac
        rel=${lib#"$ex"/}
        mkdir -p "$root/$(dirname "$rel")"
        [ -e "$root/$rel" ] || cp -L "$lib" "$root/$rel"
    done < <(printf '%s\n' "$listing" | awk '/=>/ { if ($3 == "not") { print "NOTFOUND:" $1 } else print $3 }' |
        sed 's/^NOTFOUND:\(.*\)/\/missing\/\1/')
done
# glibc loads libgcc_s at run time to unwind on thread exit, so no listing names it;
# alsabat aborts at its end without it.
gcc_s=$(find "$ex" -name 'libgcc_s.so.1' | head -n1)
[ -n "$gcc_s" ] || die "libgcc_s.so.1 missing from libgcc-s1"
cp -L "$gcc_s" "$root/lib/x86_64-linux-gnu/libgcc_s.so.1"
mkdir -p "$root/usr/share"
cp -a "$ex/usr/share/alsa" "$root/usr/share/alsa"

cat >"$root/init" <<'EOF'
#!/bin/sh
# gst-vhostsnd test guest init (see scripts/build-guest-image.sh).
export PATH=/usr/bin:/usr/sbin:/bin:/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /root
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/vsnd/modules); do
    insmod "/lib/modules/$m" || echo "VSND-INSMOD-FAILED $m"
done
# alsabat (and anything else that needs getrandom) fails before the CRNG is ready.
dd if=/dev/random of=/dev/null bs=1 count=1 2>/dev/null
echo "VSND-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -f /vsnd/cmd.sh ]; then
    cp /vsnd/cmd.sh /tmp/vsnd-cmd.sh
else
    enc=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^vsnd\.cmd=//p' | tail -n1)
    if [ -n "$enc" ]; then
        echo "$enc" | base64 -d >/tmp/vsnd-cmd.sh || echo "VSND-CMD-DECODE-FAILED"
    else
        echo 'echo "VSND-NO-COMMAND"; exit 127' >/tmp/vsnd-cmd.sh
    fi
fi
if [ -d /vsnd/in ]; then cd /vsnd/in; else cd /tmp; fi
sh /tmp/vsnd-cmd.sh
rc=$?
cd /
echo "VSND-RC=$rc"
sync
poweroff -f
EOF
chmod 755 "$root/init"

cat >"$root/bin/vsnd-export" <<'EOF'
#!/bin/sh
# vsnd-export FILE [NAME]: copy FILE to the host over the console.
[ -f "$1" ] || { echo "vsnd-export: no such file: $1" >&2; exit 1; }
name=${2:-$(basename "$1")}
size=$(wc -c <"$1")
# Keep kernel messages from splitting the base64 lines.
saved=$(cut -f1 /proc/sys/kernel/printk)
echo 1 >/proc/sys/kernel/printk
echo "VSND-FILE-BEGIN $name $size"
base64 "$1"
echo "VSND-FILE-END $name"
echo "$saved" >/proc/sys/kernel/printk
EOF
cat >"$root/bin/vsnd-wait-card" <<'EOF'
#!/bin/sh
# vsnd-wait-card [SECONDS]: wait until ALSA card 0 has a PCM device node.
n=$(( ${1:-5} * 10 ))
while [ "$n" -gt 0 ]; do
    ls /dev/snd/pcmC0D* >/dev/null 2>&1 && exit 0
    sleep 0.1
    n=$((n - 1))
done
echo "vsnd-wait-card: no sound card" >&2
exit 1
EOF
chmod 755 "$root/bin/vsnd-export" "$root/bin/vsnd-wait-card"
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/etc"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"

(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
    gzip -6 -n >"$work/initramfs.cpio.gz"
{
    echo "kernel $kver ($kernel_pkg)"
    echo "modules ${order[*]}"
    printf '%s\n' "$uris" | awk '{print $2}'
} >"$work/manifest.txt"

rm -rf "$out.tmp"
mkdir -p "$out.tmp"
mv "$work/vmlinuz" "$work/initramfs.cpio.gz" "$work/manifest.txt" "$out.tmp/"
rm -rf "$out"
mv "$out.tmp" "$out"
# Older images are stale: only the current key is kept.
for d in "$cache_root"/*/; do
    d=${d%/}
    [ "$d" = "$out" ] || [ "$(basename "$d")" = debs ] || rm -rf "$d"
done
log "built $out ($(du -sh "$out" | cut -f1))"
echo "$out"
