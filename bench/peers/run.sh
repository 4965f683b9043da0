#!/usr/bin/env bash
# The CPU comparison in one run: our f32 reference and integer engine (cargo bench --bench cpu),
# then ONNX Runtime and OpenVINO on the same networks and weights (bench/peers/peers.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import onnx, onnxruntime, openvino, nncf" 2>/dev/null \
    || python3 -m pip install -q onnx onnxruntime openvino nncf
dir=$(mktemp -d)
cargo bench --locked --bench cpu -- --frames "${FRAMES:-3}" --export "$dir"
python3 bench/peers/peers.py "$dir" --runs "${FRAMES:-3}"
