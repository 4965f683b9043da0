#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what scripts/gpu-check.sh needs to time the CPU peers on a
# lent GPU machine's host CPU (which has ONNX Runtime and numpy but no OpenVINO or NNCF, and no
# network): .peers/ov-slim.tar.xz, the OpenVINO runtime for Python 3.12 trimmed to the CPU
# plugin and the IR/ONNX frontends (~21 MB), and .peers/edsr-baseline-x{2,4}.int8.{xml,bin},
# the NNCF int8 models of the benchmark's networks (bench/peers/peers.py --save-ov-int8; the
# weights are the deterministic ones of `cargo bench --bench cpu -- --export`).
# Then carry `.peers` (with gpu-bin.tar.xz) to the device tool.
set -euo pipefail
cd "$(dirname "$0")/.."
OV=${OV_VERSION:-2026.4.1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p .peers
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$tmp/whl" "openvino==$OV"
mkdir -p "$tmp/ov" && (cd "$tmp/ov" && unzip -q "$tmp"/whl/openvino-*.whl)
libs="$tmp/ov/openvino/libs"
rm -rf "$tmp/ov/openvino/include" "$tmp/ov/openvino/cmake" "$libs/cache.json" \
    "$libs"/libopenvino_intel_gpu_plugin.so "$libs"/libopenvino_intel_npu_plugin.so \
    "$libs"/libopenvino_{tensorflow,tensorflow_lite,paddle,pytorch,jax,gguf}_frontend.so.*
tar -cJf .peers/ov-slim.tar.xz -C "$tmp/ov" openvino
# The int8 models: this machine's OpenVINO and NNCF (bench/peers/run.sh installs them).
python3 -c "import onnx, onnxruntime, openvino, nncf" 2>/dev/null \
    || python3 -m pip install -q onnx onnxruntime "openvino==$OV" nncf
cargo bench --locked --bench cpu -- --frames 1 --only "EDSR-baseline x2 integer w4a4" \
    --export "$tmp/w" > /dev/null
python3 bench/peers/peers.py "$tmp/w" --runs 1 --save-ov-int8 .peers
ls -la .peers
