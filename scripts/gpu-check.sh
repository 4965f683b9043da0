#!/usr/bin/env bash
# On a GPU machine, from binaries built by scripts/gpu-build.sh (carried as gpu-bin.tar.xz):
#   1. CUDA parity tests (bit-exact against the CPU integer reference), ADABM_REQUIRE_GPU=1,
#      and the float layers' f16 parity in a process of its own;
#   2. compute-sanitizer memcheck (mixed-batch and float-layer parity) and racecheck;
#   3. the element tests that need a GPU (backend=cuda / auto), with GStreamer carried along;
#   4. the CUDA benchmark (EDSR-baseline x2 1080p->4K, x4 270p->1080p, built-in models, shared
#      engine with 1 and 2 lanes, I420 frames converted on the CPU vs the GPU), its f16 rows, (LD32=1, the default) the 32-bit fragment-load variant
#      (ADABM_CUDA_LDMATRIX=0) for comparison with the default ldmatrix loads of the integer
#      convs, (PREFETCH=1, the default) the L2 prefetch of the epilogue operands
#      (ADABM_CUDA_PREFETCH=1): integer parity and bench, and (LDALL=1, the default) ldmatrix
#      in the f16 convs too: parity, memcheck, bench;
#   5. PyTorch fp16 on the same weights and device; adabm-convert against real torch.save files
#      (zip and legacy formats: scripts/torch-formats-check.py);
#   6. (VNNI=1, the default) the integer CPU engine on the host CPU, which has the VNNI
#      extensions this development machine lacks: the kernel exactness tests and the whole
#      engine at every level the CPU has, AVX2 vs VNNI frame by frame, and direct vs Winograd
#      at every level;
#   7. (PEERS=1, the default, when .peers/ was carried) the CPU peers on the host CPU: our f32
#      reference and integer engine (cpu-bench) beside ONNX Runtime (installed there) and
#      OpenVINO (a trimmed runtime and NNCF int8 models: scripts/peers-prepare.sh makes .peers/).
# Carry gpu-bin.tar.xz (scripts/gpu-build.sh) and .peers (scripts/peers-prepare.sh).
# Every output goes to $RAW (default /tmp/adabm-gpu-results); $OUT gets summary.txt and
# results.tar.gz of everything, re-packed after each step (the device tool returns 8 files at
# most, and a step killed at the time limit still leaves the earlier ones packed).
# Files: device.txt, cpu.txt, parity.txt, parity-float.txt, sanitizer.txt, element.txt,
#   element-yuv-host.txt,
# bench.md, bench-float.md, bench-ld32.md, parity-prefetch.txt, bench-prefetch.md, parity-float-ldall.txt, bench-float-ldall.md, torch.md, torch-formats.txt, cpu-tests.txt, cpu-levels.txt,
# cpu-winograd.txt, cpu-kernels-avxvnni.txt, frame-io.txt, cpu-bench.md, peers.md, summary.txt (ncu-*.txt with NCU=1).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
RAW=${RAW:-/tmp/adabm-gpu-results}
BIN=${BIN:-gpu-bin}
[ "$RAW" = /tmp/adabm-gpu-results ] && rm -rf "$RAW"   # no stale files from an earlier run
mkdir -p "$OUT" "$RAW"
# Carried as one archive (scripts/gpu-build.sh): unpack it when the folder is not here.
if [ ! -d "$BIN" ] && [ -f gpu-bin.tar.xz ]; then tar -xJf gpu-bin.tar.xz; fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export XDG_CACHE_HOME=/tmp/adabm-cache   # NVRTC cubin cache shared by the runs below
export ADABM_REQUIRE_GPU=1
summary() {
    echo "$*" | tee -a "$RAW/summary.txt"
    cp "$RAW/summary.txt" "$OUT/summary.txt"
    tar -czf "$OUT/results.tar.gz" -C "$RAW" .
}
: > "$RAW/summary.txt"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,clocks.max.sm,memory.total,driver_version --format=csv; } > "$RAW/device.txt" 2>&1
summary "device: $(head -1 "$RAW/device.txt")"

# The host CPU first (seconds): its VNNI levels are what step 7 tests.
{ lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket'; grep -o -w -E 'avx2|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni' /proc/cpuinfo | sort | uniq -c; } > "$RAW/cpu.txt" 2>&1
summary "cpu: $(grep 'Model name' "$RAW/cpu.txt" | sed 's/.*: *//') [$(awk '/avx/ {printf "%s ", $2}' "$RAW/cpu.txt")]"

# The f16 path of floating-point layers (first run on an H200 in session 10) in a process of
# its own, so that a fault there (a sticky CUDA error) cannot take the integer parity with it.
# The NVRTC compile-and-spill test is CI's (a minute of device time saved).
start=$(date +%s)
timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" --test-threads=1 --nocapture --skip parity_float_layers --skip kernels_compile > "$RAW/parity.txt" 2>&1
summary "parity rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/parity.txt" | tail -1)"
start=$(date +%s)
timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" parity_float_layers --test-threads=1 --nocapture > "$RAW/parity-float.txt" 2>&1
summary "parity (float layers, f16) rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/parity-float.txt" | tail -1)"

if [ "${SANITIZER:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_mixed_bits_in_one_batch --test-threads=1 > "$RAW/sanitizer.txt" 2>&1
    summary "sanitizer rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'ERROR SUMMARY' "$RAW/sanitizer.txt" | tail -1)"
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_float_layers --test-threads=1 >> "$RAW/sanitizer.txt" 2>&1
    summary "sanitizer (float layers) rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'ERROR SUMMARY' "$RAW/sanitizer.txt" | tail -1)"
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool racecheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_builtin_models --test-threads=1 >> "$RAW/sanitizer.txt" 2>&1
    summary "racecheck rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'RACECHECK SUMMARY' "$RAW/sanitizer.txt" | tail -1)"
fi

# The element on the GPU (GStreamer carried in gpu-bin/gst, run through its own loader).
if [ -x "$BIN/element-tests" ]; then
    start=$(date +%s)
    G="$PWD/$BIN/gst"
    GST_PLUGIN_SYSTEM_PATH="$G/plugins" GST_PLUGIN_PATH="$G/plugins" GST_REGISTRY="/tmp/adabm-registry.bin" \
        GST_REGISTRY_FORK=no timeout "${ELEMENT_TIMEOUT:-120}" \
        "$G/ld-linux-x86-64.so.2" --library-path "$G:${LD_LIBRARY_PATH:-}" "$BIN/element-tests" \
        backend_selection_and_fallback cuda_backend_matches_the_integer_reference \
        --test-threads=1 --nocapture > "$RAW/element.txt" 2>&1
    summary "element rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/element.txt" | tail -1)"
    # The same with YUV converted on the CPU (the fallback of a device that fails the start-up
    # check): frames go as f32 RGB (Pixels::RgbF32), the same bytes.
    start=$(date +%s)
    ADABM_CUDA_YUV=host GST_PLUGIN_SYSTEM_PATH="$G/plugins" GST_PLUGIN_PATH="$G/plugins" \
        GST_REGISTRY="/tmp/adabm-registry.bin" GST_REGISTRY_FORK=no timeout "${ELEMENT_TIMEOUT:-120}" \
        "$G/ld-linux-x86-64.so.2" --library-path "$G:${LD_LIBRARY_PATH:-}" "$BIN/element-tests" \
        cuda_backend_matches_the_integer_reference \
        --test-threads=1 --nocapture > "$RAW/element-yuv-host.txt" 2>&1
    summary "element, YUV on the CPU rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/element-yuv-host.txt" | tail -1)"
fi

start=$(date +%s)
timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" --export /tmp/adabm-weights --skip "[f16]" > "$RAW/bench.md" 2>&1
summary "bench rc=$? ($(( $(date +%s) - start )) s)"
# I420 through a shared engine, converted on the CPU vs on the GPU (session 22), round 3 rows.
summary "yuv on the GPU: $(grep -E '^\| (built-in|EDSR).* \| 3 \| ' "$RAW/bench.md" | tr '\n' ' ')"
start=$(date +%s)
timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" --only "[f16]" > "$RAW/bench-float.md" 2>&1
summary "bench (float layers, f16) rc=$? ($(( $(date +%s) - start )) s)"

# The 32-bit fragment loads (ADABM_CUDA_LDMATRIX=0), the default before ldmatrix measured
# faster in the integer convs: the same benchmark, to compare with bench.md.
if [ "${LD32:-1}" = 1 ]; then
    start=$(date +%s)
    ADABM_CUDA_LDMATRIX=0 timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" \
        --skip "[f16]" > "$RAW/bench-ld32.md" 2>&1
    summary "bench (32-bit fragment loads) rc=$? ($(( $(date +%s) - start )) s)"
fi
# The L2 prefetch of the residual / head operands (ADABM_CUDA_PREFETCH=1, session 29, not yet
# the default): the integer parity tests, then the benchmark to compare with bench.md.
if [ "${PREFETCH:-1}" = 1 ]; then
    start=$(date +%s)
    ADABM_CUDA_PREFETCH=1 timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests"         parity_random_models_odd_sizes parity_mixed_bits_in_one_batch parity_builtin_models         --test-threads=1 --nocapture > "$RAW/parity-prefetch.txt" 2>&1
    rc=$?
    summary "parity (L2 prefetch) rc=$rc ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/parity-prefetch.txt" | tail -1)"
    if [ $rc = 0 ]; then
        start=$(date +%s)
        ADABM_CUDA_PREFETCH=1 timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" \
            --skip "[f16]" > "$RAW/bench-prefetch.md" 2>&1
        summary "bench (L2 prefetch) rc=$? ($(( $(date +%s) - start )) s)"
    fi
fi
# ldmatrix in the f16 convs too (ADABM_CUDA_LDMATRIX=all, not yet the default): their parity
# and memcheck, then the f16 rows to compare with bench-float.md.
if [ "${LDALL:-1}" = 1 ]; then
    start=$(date +%s)
    ADABM_CUDA_LDMATRIX=all timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" parity_float_layers \
        --test-threads=1 --nocapture > "$RAW/parity-float-ldall.txt" 2>&1
    rc=$?
    summary "parity (float layers, ldmatrix) rc=$rc ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$RAW/parity-float-ldall.txt" | tail -1)"
    if [ $rc = 0 ]; then
        start=$(date +%s)
        ADABM_CUDA_LDMATRIX=all timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck \
            --error-exitcode 9 "$BIN/cuda-tests" parity_float_layers --test-threads=1 \
            >> "$RAW/parity-float-ldall.txt" 2>&1
        summary "sanitizer (float layers, ldmatrix) rc=$? ($(( $(date +%s) - start )) s)"
        start=$(date +%s)
        ADABM_CUDA_LDMATRIX=all timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" \
            --only "[f16]" > "$RAW/bench-float-ldall.md" 2>&1
        summary "bench (float layers, ldmatrix) rc=$? ($(( $(date +%s) - start )) s)"
    fi
fi

# The integer CPU engine's VNNI kernels (exact against the scalar reference, and the whole
# engine at every level), then their speed against AVX2 in the same process.
if [ "${VNNI:-1}" = 1 ] && [ -x "$BIN/lib-tests" ]; then
    start=$(date +%s)
    { timeout "${CPU_TEST_TIMEOUT:-120}" "$BIN/lib-tests" intcpu --nocapture --test-threads=4 &&
      timeout "${CPU_TEST_TIMEOUT:-120}" "$BIN/intengine-tests" --nocapture; } > "$RAW/cpu-tests.txt" 2>&1
    summary "cpu tests rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'CPU levels on this host' "$RAW/cpu-tests.txt" | head -1); $(grep -E '^test result' "$RAW/cpu-tests.txt" | tr '\n' ' ')"
    start=$(date +%s)
    timeout "${CPU_BENCH_TIMEOUT:-150}" "$BIN/cpu-bench" --levels-ab "${CPU_FRAMES:-3}" > "$RAW/cpu-levels.txt" 2>&1
    summary "cpu levels rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'EDSR-baseline x2 integer w4a4 320x180' "$RAW/cpu-levels.txt" | tr '\n' ' ')"
    # The element's frame unpack / pack around the CUDA engine, 4K, 1 thread vs all cores.
    start=$(date +%s)
    timeout 60 "$BIN/cpu-bench" --frame-io 10 > "$RAW/frame-io.txt" 2>&1
    summary "frame io rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^\| Rgb ' "$RAW/frame-io.txt")"
    # At every level: direct (512-bit on AVX-512) vs Winograd F(2,3) (256-bit) vs F(2x2,3x3).
    start=$(date +%s)
    timeout "${CPU_BENCH_TIMEOUT:-150}" "$BIN/cpu-bench" --winograd-ab "${CPU_FRAMES:-3}" > "$RAW/cpu-winograd.txt" 2>&1
    summary "cpu winograd rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'x2 integer w4a4 320x180' "$RAW/cpu-winograd.txt" | tr '\n' ' ')"
    # AVX-VNNI's kernels alone, where the host has it: the direct kernel against F(4x4, 3x3)
    # on vpdpwssd for the 8-bit convs, and the narrow tail kernel (session 21 made both the
    # defaults there without an AVX-VNNI CPU to time them).
    if grep -q avx_vnni "$RAW/cpu.txt"; then
        start=$(date +%s)
        ADABM_CPU_LEVEL=avxvnni timeout 120 "$BIN/cpu-bench" --kernels 1 --frames 3 \
            > "$RAW/cpu-kernels-avxvnni.txt" 2>&1
        summary "cpu kernels avxvnni rc=$? ($(( $(date +%s) - start )) s): $(grep -E '64->256|64->3 ' "$RAW/cpu-kernels-avxvnni.txt" | tr '\n' ' ')"
    fi
fi

start=$(date +%s)
timeout "${TORCH_TIMEOUT:-150}" python3 bench/torch_fp16.py /tmp/adabm-weights --iters "${ITERS:-20}" > "$RAW/torch.md" 2>&1
summary "torch rc=$? ($(( $(date +%s) - start )) s)"
# adabm-convert against real PyTorch: zip and legacy torch.save files of EDSR-PyTorch's module
# layout import and export back bit-identical (seconds, CPU only).
if [ -x "$BIN/adabm-convert" ]; then
    start=$(date +%s)
    timeout "${TORCH_TIMEOUT:-150}" python3 scripts/torch-formats-check.py "$BIN/adabm-convert" \
        /tmp/adabm-torch-formats > "$RAW/torch-formats.txt" 2>&1
    summary "torch formats rc=$? ($(( $(date +%s) - start )) s): $(tr '\n' ' ' < "$RAW/torch-formats.txt" | cut -c1-300)"
fi

# The CPU peers on the host CPU (all its cores): our engines' rows (f32 reference, fake-quant,
# integer w4a4 / w8a6) and ONNX Runtime / OpenVINO on the same weights, inputs and threads.
if [ "${PEERS:-1}" = 1 ] && [ -f .peers/ov-slim.tar.xz ] && [ -x "$BIN/cpu-bench" ]; then
    start=$(date +%s)
    mkdir -p /tmp/ov-slim /tmp/adabm-peers
    tar -xJf .peers/ov-slim.tar.xz -C /tmp/ov-slim
    timeout "${CPU_BENCH_TIMEOUT:-150}" "$BIN/cpu-bench" --frames "${CPU_FRAMES:-3}" \
        --only "EDSR-baseline" --export /tmp/adabm-peers > "$RAW/cpu-bench.md" 2>&1
    summary "cpu bench rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'integer w4a4' "$RAW/cpu-bench.md" | tr '\n' ' ')"
    start=$(date +%s)
    PYTHONPATH="/tmp/ov-slim${PYTHONPATH:+:$PYTHONPATH}" timeout "${PEERS_TIMEOUT:-200}" \
        python3 bench/peers/peers.py /tmp/adabm-peers --runs "${CPU_FRAMES:-3}" --ov-int8 .peers \
        > "$RAW/peers.md" 2>&1
    summary "peers rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'int8' "$RAW/peers.md" | tr '\n' ' ')"
fi

# Optional Nsight Compute profile (NCU=1): duration and speed-of-light of every kernel of one
# EDSR-baseline x2 1080p frame, then the detailed sections of one body conv.
if [ "${NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
    start=$(date +%s)
    timeout "${NCU_TIMEOUT:-150}" ncu --section SpeedOfLight -c 40 \
        "$BIN/cuda-bench" --only "x2 w4a4" --iters 1 > "$RAW/ncu-frame.txt" 2>&1
    summary "ncu frame rc=$? ($(( $(date +%s) - start )) s)"
    [ "${NCU_CONV:-1}" = 1 ] || exit 0
    start=$(date +%s)
    timeout "${NCU_TIMEOUT:-150}" ncu -k regex:conv_mma_c64_e2 -c 1 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis --section LaunchStats --section SchedulerStats \
        "$BIN/cuda-bench" --only "x2 w4a4" --iters 1 > "$RAW/ncu-conv.txt" 2>&1
    summary "ncu conv rc=$? ($(( $(date +%s) - start )) s)"
fi
