#!/usr/bin/env bash
# Builds, on this (CPU) machine, the binaries scripts/gpu-check.sh runs on a lent GPU machine
# (which has CUDA but no Rust or GStreamer): the CUDA test binary and the CUDA benchmark,
# the integer CPU engine's tests and benchmark, engine only (no GStreamer linkage), into
# gpu-bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu-bin
exe() { grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' | grep -v '^$' | tail -1; }
t=$(cargo test --release --locked --no-default-features --features cuda --test cuda --no-run --message-format=json 2>/dev/null | exe)
b=$(cargo bench --locked --no-default-features --features cuda --bench cuda --no-run --message-format=json 2>/dev/null | exe)
cp "$t" gpu-bin/cuda-tests
cp "$b" gpu-bin/cuda-bench

# The integer CPU engine's tests and benchmark, engine only: the GPU machines' CPUs (Xeon /
# EPYC) have AVX-512 VNNI or AVX-VNNI, which this machine lacks, so gpu-check.sh runs the VNNI
# kernels' exactness tests and the AVX2-vs-VNNI benchmark there.
u=$(cargo test --release --locked --no-default-features --lib --no-run --message-format=json 2>/dev/null | exe)
i=$(cargo test --release --locked --no-default-features --test intengine --no-run --message-format=json 2>/dev/null | exe)
c=$(cargo bench --locked --no-default-features --bench cpu --no-run --message-format=json 2>/dev/null | exe)
cp "$u" gpu-bin/lib-tests
# adabm-convert, checked against real PyTorch there (scripts/torch-formats-check.py).
cargo build --release --locked -p adabm-tools --bin adabm-convert
cp target/release/adabm-convert gpu-bin/
cp "$i" gpu-bin/intengine-tests
cp "$c" gpu-bin/cpu-bench

# The element tests, with the GStreamer libraries and the two plugins they use, plus this
# machine's glibc and loader: gpu-check.sh runs them through gpu-bin/gst/ld-linux so that
# the GPU machine's own (maybe older) glibc does not matter.
e=$(cargo test --release --locked --test element --no-run --message-format=json 2>/dev/null | exe)
rm -rf gpu-bin/gst && mkdir -p gpu-bin/gst/plugins
cp "$e" gpu-bin/element-tests
plugins=(/usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstcoreelements.so
         /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideotestsrc.so)
cp "${plugins[@]}" gpu-bin/gst/plugins/
for f in "$e" "${plugins[@]}"; do ldd "$f" | awk '/=>/ {print $3}'; done | sort -u | while read -r l; do
    [ -n "$l" ] && cp -L "$l" gpu-bin/gst/
done
# glibc's own pieces, so that nothing from the host's (other) glibc gets mixed in when the
# host's libcuda is loaded.
for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1; do
    cp -L "/lib/x86_64-linux-gnu/$l" gpu-bin/gst/
done
cp -L /lib64/ld-linux-x86-64.so.2 gpu-bin/gst/
ls -la gpu-bin; du -sh gpu-bin
# What the device tool carries (64 MiB at most per call; the binaries are ~63 MiB, 10 MiB
# compressed): carry gpu-bin.tar.xz, gpu-check.sh unpacks it.
tar -cJf gpu-bin.tar.xz gpu-bin
ls -la gpu-bin.tar.xz
