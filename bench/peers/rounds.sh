#!/usr/bin/env bash
# Interleaved rounds on a noisy host: our integer engine on EDSR-baseline x2 320x180 w4a4, then
# ONNX Runtime int8 and OpenVINO int8 on the same network and weights, ROUNDS times in turn
# (each side the median of RUNS frames), then the ratios per round. The network is exported
# and NNCF-quantized once; every round times the same models. STAT=fastest: each side's fastest
# of its RUNS frames instead of the median (on a shared host the median of a few frames moves
# with the neighbours' load; the fastest frame is each side's speed when they leave it alone).
#   ROUNDS=3 RUNS=5 [STAT=fastest] bench/peers/rounds.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -c "import onnx, onnxruntime, openvino, nncf" 2>/dev/null \
    || python3 -m pip install -q onnx onnxruntime openvino nncf
rounds=${ROUNDS:-3}
runs=${RUNS:-5}
stat=()
if [ "${STAT:-median}" = fastest ]; then
    stat=(--fastest)
fi
dir=$(mktemp -d)
cargo bench --locked --bench cpu -- --frames 1 --only none --export "$dir" > /dev/null
python3 bench/peers/peers.py "$dir" --only x2 --int8-only --runs 1 --save-ov-int8 "$dir/ov" > /dev/null
echo "each side's ${STAT:-median} of $runs frames"
echo "| round | integer w4a4 | ONNX Runtime int8 | OpenVINO int8 | vs ORT | vs OV |"
echo "|---|---:|---:|---:|---:|---:|"
for r in $(seq "$rounds"); do
    ours=$(cargo bench --locked --bench cpu -- --frames "$runs" "${stat[@]}" --only "EDSR-baseline x2 integer w4a4" \
        | awk -F'|' '/integer w4a4/ {gsub(/ /, "", $5); print $5}')
    peers=$(python3 bench/peers/peers.py "$dir" --only x2 --int8-only --runs "$runs" "${stat[@]}" \
        --ov-int8 "$dir/ov")
    ort=$(awk -F'|' '/ONNX Runtime int8/ {gsub(/ /, "", $5); print $5}' <<< "$peers")
    ov=$(awk -F'|' '/OpenVINO int8/ {gsub(/ /, "", $5); print $5}' <<< "$peers")
    awk -v r="$r" -v a="$ours" -v b="$ort" -v c="$ov" \
        'BEGIN { printf "| %d | %d ms | %d ms | %d ms | %.2fx | %.2fx |\n", r, a, b, c, b / a, c / a }'
done
rm -rf "$dir"
