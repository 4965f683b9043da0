#!/usr/bin/env bash
# On a GPU machine, from binaries built by scripts/gpu-build.sh (carried in gpu-bin/):
#   1. CUDA parity tests (bit-exact against the CPU integer reference), ADABM_REQUIRE_GPU=1;
#   2. compute-sanitizer memcheck on the mixed-batch parity test;
#   3. the CUDA benchmark (EDSR-baseline x2 1080p->4K, x4 270p->1080p, built-in models);
#   4. PyTorch fp16 on the same weights and device.
#   5. the element tests that need a GPU (backend=cuda), with GStreamer carried along;
#   6. (LDMATRIX=1, the default) parity and benchmark again with ADABM_CUDA_LDMATRIX=1;
#   7. (VNNI=1, the default) the integer CPU engine on the host CPU, which has the VNNI
#      extensions this development machine lacks: the kernel exactness tests and the whole
#      engine at every level the CPU has (cpu-tests.txt), then AVX2 vs VNNI frame by frame
#      (cpu-levels.txt) and, at the best level, direct vs Winograd (cpu-winograd.txt).
# Results go to $OUT (default ./gpu-out): device.txt, parity.txt, parity-float.txt,
# sanitizer.txt, element.txt, bench.md, bench-float.md, torch.md, parity-ldmatrix.txt, bench-ldmatrix.md, cpu.txt, cpu-tests.txt,
# cpu-levels.txt, cpu-winograd.txt, summary.txt (ncu-*.txt with NCU=1).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-out}
BIN=${BIN:-gpu-bin}
mkdir -p "$OUT"
# Carried as one archive (scripts/gpu-build.sh): unpack it when the folder is not here.
if [ ! -d "$BIN" ] && [ -f gpu-bin.tar.xz ]; then tar -xJf gpu-bin.tar.xz; fi
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export XDG_CACHE_HOME=/tmp/adabm-cache   # NVRTC cubin cache shared by the runs below
export ADABM_REQUIRE_GPU=1
summary() { echo "$*" | tee -a "$OUT/summary.txt"; }
: > "$OUT/summary.txt"
{ nvidia-smi -L; nvidia-smi --query-gpu=name,clocks.max.sm,memory.total,driver_version --format=csv; } > "$OUT/device.txt" 2>&1
summary "device: $(head -1 "$OUT/device.txt")"

# The host CPU first (seconds): its VNNI levels are what step 7 tests.
{ lscpu | grep -E 'Model name|^CPU\(s\)|Thread|Socket'; grep -o -w -E 'avx2|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni' /proc/cpuinfo | sort | uniq -c; } > "$OUT/cpu.txt" 2>&1
summary "cpu: $(grep 'Model name' "$OUT/cpu.txt" | sed 's/.*: *//') [$(awk '/avx/ {printf "%s ", $2}' "$OUT/cpu.txt")]"

# The f16 path of floating-point layers (not yet run on a GPU when written) in a process of
# its own, so that a fault there (a sticky CUDA error) cannot take the integer parity with it.
# The NVRTC compile-and-spill test is CI's (a minute of device time saved).
start=$(date +%s)
timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" --test-threads=1 --nocapture --skip parity_float_layers --skip kernels_compile > "$OUT/parity.txt" 2>&1
summary "parity rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$OUT/parity.txt" | tail -1)"
start=$(date +%s)
timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" parity_float_layers --test-threads=1 --nocapture > "$OUT/parity-float.txt" 2>&1
summary "parity (float layers, f16) rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$OUT/parity-float.txt" | tail -1)"

if [ "${SANITIZER:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_mixed_bits_in_one_batch --test-threads=1 > "$OUT/sanitizer.txt" 2>&1
    summary "sanitizer rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool memcheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_float_layers --test-threads=1 >> "$OUT/sanitizer.txt" 2>&1
    summary "sanitizer (float layers) rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
    start=$(date +%s)
    timeout "${SANITIZER_TIMEOUT:-120}" compute-sanitizer --tool racecheck --error-exitcode 9 \
        "$BIN/cuda-tests" parity_builtin_models --test-threads=1 >> "$OUT/sanitizer.txt" 2>&1
    summary "racecheck rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'RACECHECK SUMMARY' "$OUT/sanitizer.txt" | tail -1)"
fi

# The element on the GPU (GStreamer carried in gpu-bin/gst, run through its own loader).
if [ -x "$BIN/element-tests" ]; then
    start=$(date +%s)
    G="$PWD/$BIN/gst"
    GST_PLUGIN_SYSTEM_PATH="$G/plugins" GST_PLUGIN_PATH="$G/plugins" GST_REGISTRY="/tmp/adabm-registry.bin" \
        GST_REGISTRY_FORK=no timeout "${ELEMENT_TIMEOUT:-120}" \
        "$G/ld-linux-x86-64.so.2" --library-path "$G:${LD_LIBRARY_PATH:-}" "$BIN/element-tests" \
        backend_selection_and_fallback cuda_backend_matches_the_integer_reference \
        --test-threads=1 --nocapture > "$OUT/element.txt" 2>&1
    summary "element rc=$? ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$OUT/element.txt" | tail -1)"
fi

start=$(date +%s)
timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" --export /tmp/adabm-weights --skip "[f16]" > "$OUT/bench.md" 2>&1
summary "bench rc=$? ($(( $(date +%s) - start )) s)"
start=$(date +%s)
timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" --only "[f16]" > "$OUT/bench-float.md" 2>&1
summary "bench (float layers, f16) rc=$? ($(( $(date +%s) - start )) s)"

# The ldmatrix variant of the tensor-core conv (ADABM_CUDA_LDMATRIX=1, opt-in until measured):
# parity first, then the same benchmark; compare bench-ldmatrix.md with bench.md.
if [ "${LDMATRIX:-1}" = 1 ]; then
    start=$(date +%s)
    ADABM_CUDA_LDMATRIX=1 timeout "${PARITY_TIMEOUT:-240}" "$BIN/cuda-tests" --test-threads=1 \
        --nocapture --skip parity_float_layers --skip kernels_compile > "$OUT/parity-ldmatrix.txt" 2>&1
    rc=$?
    summary "parity (ldmatrix) rc=$rc ($(( $(date +%s) - start )) s): $(grep -E '^test result' "$OUT/parity-ldmatrix.txt" | tail -1)"
    if [ $rc = 0 ]; then
        start=$(date +%s)
        ADABM_CUDA_LDMATRIX=1 timeout "${BENCH_TIMEOUT:-200}" "$BIN/cuda-bench" --iters "${ITERS:-20}" \
            --skip "[f16]" > "$OUT/bench-ldmatrix.md" 2>&1
        summary "bench (ldmatrix) rc=$? ($(( $(date +%s) - start )) s)"
    fi
fi

# The integer CPU engine's VNNI kernels (exact against the scalar reference, and the whole
# engine at every level), then their speed against AVX2 in the same process.
if [ "${VNNI:-1}" = 1 ] && [ -x "$BIN/lib-tests" ]; then
    start=$(date +%s)
    { timeout "${CPU_TEST_TIMEOUT:-120}" "$BIN/lib-tests" intcpu --nocapture --test-threads=4 &&
      timeout "${CPU_TEST_TIMEOUT:-120}" "$BIN/intengine-tests" --nocapture; } > "$OUT/cpu-tests.txt" 2>&1
    summary "cpu tests rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'CPU levels on this host' "$OUT/cpu-tests.txt" | head -1); $(grep -E '^test result' "$OUT/cpu-tests.txt" | tr '\n' ' ')"
    start=$(date +%s)
    timeout "${CPU_BENCH_TIMEOUT:-150}" "$BIN/cpu-bench" --levels-ab "${CPU_FRAMES:-3}" > "$OUT/cpu-levels.txt" 2>&1
    summary "cpu levels rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'EDSR-baseline x2 integer w4a4 320x180' "$OUT/cpu-levels.txt" | tr '\n' ' ')"
    # At the best level: direct (512-bit on AVX-512) vs Winograd F(2,3) (256-bit).
    start=$(date +%s)
    timeout "${CPU_BENCH_TIMEOUT:-150}" "$BIN/cpu-bench" --winograd-ab "${CPU_FRAMES:-3}" --only "EDSR-baseline" > "$OUT/cpu-winograd.txt" 2>&1
    summary "cpu winograd rc=$? ($(( $(date +%s) - start )) s): $(grep -E 'x2 integer w4a4 320x180' "$OUT/cpu-winograd.txt" | tr '\n' ' ')"
fi

start=$(date +%s)
timeout "${TORCH_TIMEOUT:-150}" python3 bench/torch_fp16.py /tmp/adabm-weights --iters "${ITERS:-20}" > "$OUT/torch.md" 2>&1
summary "torch rc=$? ($(( $(date +%s) - start )) s)"

# Optional Nsight Compute profile (NCU=1): duration and speed-of-light of every kernel of one
# EDSR-baseline x2 1080p frame, then the detailed sections of one body conv.
if [ "${NCU:-0}" = 1 ] && command -v ncu > /dev/null; then
    start=$(date +%s)
    timeout "${NCU_TIMEOUT:-150}" ncu --section SpeedOfLight -c 40 \
        "$BIN/cuda-bench" --only "x2 w4a4" --iters 1 > "$OUT/ncu-frame.txt" 2>&1
    summary "ncu frame rc=$? ($(( $(date +%s) - start )) s)"
    [ "${NCU_CONV:-1}" = 1 ] || exit 0
    start=$(date +%s)
    timeout "${NCU_TIMEOUT:-150}" ncu -k regex:conv_mma_c64_e2 -c 1 --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis --section LaunchStats --section SchedulerStats \
        "$BIN/cuda-bench" --only "x2 w4a4" --iters 1 > "$OUT/ncu-conv.txt" 2>&1
    summary "ncu conv rc=$? ($(( $(date +%s) - start )) s)"
fi
