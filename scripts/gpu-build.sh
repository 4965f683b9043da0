#!/usr/bin/env bash
# Builds, on this (CPU) machine, the binaries scripts/gpu-check.sh runs on a lent GPU machine
# (which has CUDA but no Rust or GStreamer): the CUDA test binary and the CUDA benchmark,
# engine only (no GStreamer linkage), into gpu-bin/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p gpu-bin
exe() { grep -o '"executable":"[^"]*"' | sed 's/"executable":"//; s/"$//' | grep -v '^$' | tail -1; }
t=$(cargo test --release --locked --no-default-features --test cuda --no-run --message-format=json 2>/dev/null | exe)
b=$(cargo bench --locked --no-default-features --bench cuda --no-run --message-format=json 2>/dev/null | exe)
cp "$t" gpu-bin/cuda-tests
cp "$b" gpu-bin/cuda-bench
ls -la gpu-bin
