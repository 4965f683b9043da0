#!/usr/bin/env bash
# Builds adabm for 64-bit ARM (aarch64: NVIDIA Jetson, AWS Graviton, Ampere, Raspberry Pi 4/5)
# on an x86-64 Debian 12 machine and runs its tests there under qemu-user: there the integer
# engine has its scalar level, the `sdot` level (NeonDot) and the `usmmla` level (NeonI8mm,
# both in src/engine/intcpu/neon.rs), and the f32 convolutions their NEON Winograd and direct
# kernels (src/engine/conv.rs; other shapes the im2col GEMM), code that no x86-64 run reaches.
#
#   scripts/aarch64-check.sh          clippy for aarch64, then the engine's tests under qemu
#                                     (library, engine, model file, the integer engine at
#                                     every level: about 3 minutes of tests)
#   scripts/aarch64-check.sh --all    also the built-in models, the integer engine and the
#                                     element (about 10 minutes under qemu)
#   scripts/aarch64-check.sh --instructions ROW [LEVEL...]
#                                     no tests: the guest instructions one frame of the bench
#                                     row ROW (`cargo bench --bench cpu -- --only ROW`) executes
#                                     under qemu at each ADABM_CPU_LEVEL (default: scalar neon
#                                     i8mm),
#                                     from runs of 1 and 3 timed frames (the difference over
#                                     2), and the functions taking them at the last level;
#                                     counted by bench/qemu/insn.c, a qemu plugin, on one core.
#                                     Not a speed: qemu's time says nothing of an ARM core's.
#
# Installs with apt what it needs (the arm64 architecture for GStreamer's libraries and core
# development files, the cross linker, qemu-user) and the Rust target with rustup. Debian 12's
# libgstreamer-plugins-base1.0-dev cannot be installed for two architectures at once (apt
# would remove the host's), so the aarch64 link uses the arm64 runtime libraries through
# pkg-config files and .so links made here from the host's (target/aarch64-pkgconfig). The
# element tests that run the host's gst-launch-1.0 (`gst_launch_*`) cannot load an aarch64
# plugin and are skipped here.
set -euo pipefail
cd "$(dirname "$0")/.."
all=0
[ "${1:-}" = --all ] && all=1
insn_row=""
if [ "${1:-}" = --instructions ]; then
    insn_row=${2:?"--instructions ROW [LEVEL...]"}
    shift 2
    insn_levels=("$@")
    [ $# -gt 0 ] || insn_levels=(scalar neon i8mm)
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
A=/usr/lib/aarch64-linux-gnu
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null \
    || [ ! -f $A/pkgconfig/gstreamer-base-1.0.pc ] || [ ! -e $A/libgstvideo-1.0.so.0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends qemu-user gcc-aarch64-linux-gnu \
        libc6-dev-arm64-cross libc6:arm64 libgstreamer1.0-dev:arm64 \
        libgstreamer-plugins-base1.0-0:arm64 >/dev/null
fi
# (libgstreamer1.0-0:arm64 makes the plugin directory with the core elements only.)
if [ "$all" = 1 ] && [ ! -e $A/gstreamer-1.0/libgstvideotestsrc.so ]; then
    $SUDO apt-get install -y -qq --no-install-recommends gstreamer1.0-plugins-base:arm64 \
        gstreamer1.0-plugins-good:arm64 >/dev/null
fi
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
    || rustup target add aarch64-unknown-linux-gnu

# The plugins-base libraries (gstreamer-video, -app, ...): the host's .pc files pointed at a
# directory of links to the arm64 runtime libraries.
PC=$PWD/target/aarch64-pkgconfig
mkdir -p "$PC/lib"
H=/usr/lib/x86_64-linux-gnu
[ -f "$H/pkgconfig/gstreamer-video-1.0.pc" ] || {
    echo "no $H/pkgconfig/gstreamer-video-1.0.pc: run scripts/install-deps.sh first" >&2; exit 1; }
for pc in "$H"/pkgconfig/gstreamer-{app,audio,pbutils,tag,video}-1.0.pc; do
    lib=$(sed -n 's/^Libs: .*-l\(gst[a-z]*-1.0\).*/\1/p' "$pc")
    [ -e "$A/lib$lib.so.0" ] || { echo "no $A/lib$lib.so.0" >&2; exit 1; }
    ln -sf "$A/lib$lib.so.0" "$PC/lib/lib$lib.so"
    # Requires.private (orc-0.4, zlib: static linking only) would send pkg-config looking
    # for arm64 .pc files that only their -dev packages bring.
    sed -e "s|^libdir=.*|libdir=$PC/lib|" -e '/^Requires\.private:/d' "$pc" > "$PC/$(basename "$pc")"
done

T=aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# The multiarch libc (libc6:arm64) and libraries, found through the normal paths: qemu's -L
# with the cross toolchain's older libc copy hangs at the first thread.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER=qemu-aarch64
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_LIBDIR=$PC:$A/pkgconfig:/usr/share/pkgconfig
# The registry is scanned in-process (an aarch64 gst-plugin-scanner cannot run as a child).
export GST_REGISTRY_FORK=no GST_REGISTRY=${TMPDIR:-/tmp}/adabm-aarch64-registry.bin
# Every feature qemu emulates, `dotprod` and `i8mm` among them: the tests run the integer
# engine's `sdot` and `usmmla` levels (NeonDot, NeonI8mm) beside the scalar one.
export QEMU_CPU=max

if [ -n "$insn_row" ]; then
    plugin=$PWD/target/qemu-insn.so
    gcc -shared -fPIC -O2 -o "$plugin" bench/qemu/insn.c
    bin=$(cargo bench --locked --target $T --bench cpu --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cpu" and m.get("executable"):
        print(m["executable"])')
    count() { # level frames [profile file] -> guest instructions of the whole run
        ADABM_CPU_LEVEL=$1 QPROF=${3:-} taskset -c 0 qemu-aarch64 -plugin "$plugin" "$bin" \
            --only "$insn_row" --frames "$2" 2>&1 >/dev/null | sed -n 's/^guest instructions: //p'
    }
    prof=$PWD/target/qemu-insn-profile.txt
    for level in "${insn_levels[@]}"; do
        one=$(count "$level" 1)
        three=$(count "$level" 3 "$prof")
        echo "$insn_row, ADABM_CPU_LEVEL=$level: $(( (three - one) / 2 )) guest instructions a frame"
    done
    # Where the last level's instructions went (the 3-frame run, start-up included). qemu-user
    # loads the PIE binary at 0x5500000000.
    python3 - "$bin" "$prof" <<'PY'
import bisect, collections, subprocess, sys
binary, prof = sys.argv[1:3]
syms = sorted((int(a, 16), n) for a, t, n in (
    l.split(" ", 2) for l in subprocess.run(
        ["aarch64-linux-gnu-nm", "-C", "--defined-only", binary],
        capture_output=True, text=True, check=True).stdout.splitlines() if l.count(" ") >= 2)
    if t in "tTwW")
addrs = [a for a, _ in syms]
by = collections.Counter()
for line in open(prof):
    v, n = line.split()
    i = bisect.bisect_right(addrs, int(v, 16) - 0x5500000000) - 1
    by[syms[i][1][:100] if i >= 0 else "?"] += int(n)
total = sum(by.values())
for name, n in by.most_common(6):
    print(f"  {100 * n / total:5.1f}%  {name}")
PY
    exit 0
fi

echo "== clippy, aarch64"
cargo clippy --locked --target $T --workspace --all-targets -- -D warnings
echo "== tests, aarch64 under qemu-user"
cargo test --locked --target $T -p gst-adabm --lib --test engine --test model_file
# The fused integer engine at every level (scalar, `sdot`, `usmmla`) against the integer
# reference.
cargo test --locked --target $T -p gst-adabm --test intengine \
    kernels_equal_the_scalar_reference_at_every_level
if [ "$all" = 1 ]; then
    cargo test --locked --target $T -p gst-adabm --test builtin --test intengine
    cargo test --locked --target $T -p gst-adabm --test element -- \
        --skip gst_launch_
fi
