#!/usr/bin/env bash
# The quickest way to see gst-vhostsnd work without a desktop VM: builds the plugin,
# boots the tiny test guest (QEMU, vhost-user-snd-pci), has it play a 440 Hz tone on
# each channel (speaker-test) through vhostsndsrc into a WAV file, and prints what
# arrived: duration, frequency and level per channel.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --lib
image=$(bash scripts/build-guest-image.sh | tail -n1)

work=$(mktemp -d)
trap 'kill "${gst_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
sock=$work/snd.sock
out=${VHOSTSND_DEMO_WAV:-$PWD/demo.wav}

GST_PLUGIN_PATH=$PWD/target/release gst-launch-1.0 -q -e \
    vhostsndsrc socket="$sock" ! audioconvert ! audioresample \
    ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! wavenc ! filesink location="$out" &
gst_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

# speaker-test plays a 440 Hz sine on the left channel, then on the right.
script='head -c1 /dev/random >/dev/null
speaker-test -D hw:0,0 -c 2 -r 48000 -F S16_LE -t sine -f 440 -l 1 -b 100000 -p 25000 >/dev/null 2>&1
echo VSND-RC=$?; poweroff -f'
accel=tcg
cmd=$(printf '%s\n' "$script" | base64 -w0)
echo "demo: booting the guest (TCG)..." >&2
qemu-system-x86_64 -accel $accel -cpu max -m 256M \
    -object memory-backend-memfd,id=mem,size=256M,share=on -machine q35,memory-backend=mem \
    -chardev socket,id=vsnd,path="$sock" -device vhost-user-snd-pci,chardev=vsnd \
    -kernel "$image/vmlinuz" -initrd "$image/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 vsnd.cmd=$cmd" \
    -nographic -no-reboot -nodefaults -serial stdio -display none >"$work/console.log" 2>&1 || true
sleep 0.5
kill -INT "$gst_pid"
wait "$gst_pid" || true
grep -q 'VSND-RC=0' "$work/console.log" || { echo "demo: the guest failed:" >&2; tail -n 20 "$work/console.log" >&2; exit 1; }

python3 - "$out" <<'PY'
import math, struct, sys, wave
w = wave.open(sys.argv[1]); rate = w.getframerate(); n = w.getnframes()
data = struct.unpack("<%dh" % (n * 2), w.readframes(n))
print(f"recorded {sys.argv[1]}: {n / rate:.2f} s, {rate} Hz, 2 channels")
for c, name in ((0, "left"), (1, "right")):
    x = [v / 32768 for v in data[c::2]]
    blk = rate // 100
    loud = [i for i in range(0, len(x) - blk, blk) if max(abs(v) for v in x[i:i + blk]) > 0.05]
    if not loud:
        print(f"  {name}: silent"); continue
    seg = x[loud[0]:loud[-1] + blk]
    ups = sum(1 for i in range(1, len(seg)) if seg[i - 1] < 0 <= seg[i])
    rms = math.sqrt(sum(v * v for v in seg) / len(seg))
    print(f"  {name}: tone {len(seg) / rate:.2f} s at {ups * rate / len(seg):.0f} Hz, level {20 * math.log10(rms):.1f} dBFS")
PY
