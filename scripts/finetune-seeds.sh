#!/bin/bash
# Fine-tunes one calibrated model several times, differing only in random seeds, and picks the
# run with the smallest PSNR drop against the floating-point model on a validation set made of
# training-folder images (never the test sets); then reports every run on the test sets too.
#
#   scripts/finetune-seeds.sh CALIBRATED.safetensors FP32.safetensors OUTDIR NAME=ARGS...
#   scripts/finetune-seeds.sh runs/x4n-w8a6-errsens.safetensors models/edsr-r8f32-x4.safetensors \
#       runs/s28 s1= s2="--seed 2" s3="--seed 3" s4="--seed 4" s5="--seed 5" \
#       c2="--crop-seed 2" c3="--crop-seed 3"
#
# Validation set: every 5th image of train/BSD200 and every 8th of train/SunHays80 (50 images,
# HR degraded with our bicubic by adabm-eval). MAX_FAB=X in the environment leaves out runs
# whose validation FAB is above X (a bit budget, e.g. 4.0 for w4a4). A run whose model exists
# in OUTDIR is not run again, nor an evaluation whose JSON is newer than its model. Needs
# target/release/adabm-{finetune,eval} (cargo build --release --workspace) and ../shared/data.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 4 ] || { sed -n 5,9p "$0" >&2; exit 2; }
CAL=$1 FP=$2 OUT=$3
shift 3
DATA=${ADABM_DATA:-../shared/data}
[ -d "$DATA/train/BSD200" ] && [ -d "$DATA/train/SunHays80" ] || {
  echo "no $DATA/train/{BSD200,SunHays80}: see ../shared/data/SOURCES.md" >&2; exit 1; }
mkdir -p "$OUT/val/BSD40" "$OUT/val/Sun10"
pick() { # every Nth file of a folder, linked into another
  local i=0 f
  for f in "$1"/*; do i=$((i + 1)); [ $((i % $2)) = 0 ] && ln -sf "$(realpath "$f")" "$3/"; done
  return 0
}
pick "$DATA/train/BSD200" 5 "$OUT/val/BSD40"
pick "$DATA/train/SunHays80" 8 "$OUT/val/Sun10"
VAL=$OUT/val/BSD40,$OUT/val/Sun10
TEST=$DATA/test/Set5,$DATA/test/Set14,$DATA/test/B100

names=()
for spec in "$@"; do
  name=${spec%%=*} args=${spec#*=}
  names+=("$name")
  m=$OUT/ft-$name.safetensors
  [ -f "$m" ] && continue
  s=$(date +%s)
  # shellcheck disable=SC2086 # the run's arguments are words
  target/release/adabm-finetune --model "$CAL" $args --out "$m" > "$OUT/ft-$name.log" 2>&1
  echo "$name: fine-tuned in $(($(date +%s) - s)) s"
done
eval_to() { # model, sets, json
  [ "$3" -nt "$1" ] || target/release/adabm-eval --model "$1" --sets "$2" --json "$3" > "${3%.json}.log"
}
eval_to "$FP" "$VAL" "$OUT/val-fp32.json"
eval_to "$FP" "$TEST" "$OUT/test-fp32.json"
for name in "${names[@]}"; do
  eval_to "$OUT/ft-$name.safetensors" "$VAL" "$OUT/val-$name.json"
  eval_to "$OUT/ft-$name.safetensors" "$TEST" "$OUT/test-$name.json"
done

python3 - "$OUT" "${MAX_FAB:-inf}" "${names[@]}" <<'EOF'
import json, sys
out, max_fab, names = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
def sets(p):
    return {s['set']: s['model']['mean'] for s in json.load(open(p))['sets']}
def drop(kind, name):
    fp, q = sets(f'{out}/{kind}-fp32.json'), sets(f'{out}/{kind}-{name}.json')
    d = sum(fp[k]['psnr'] - q[k]['psnr'] for k in q) / len(q)
    return d, sum(q[k]['fab'] for k in q) / len(q), q
rows = []
for n in names:
    (vd, vf, _), (td, tf, tq) = drop('val', n), drop('test', n)
    rows.append((vd, n, vf, td, tf, tq))
print(f"{'run':6s} {'val drop':>9s} {'val FAB':>8s} | {'test drop':>9s} {'test FAB':>8s}  test PSNR per set")
for vd, n, vf, td, tf, tq in rows:
    per = ' / '.join(f"{k} {v['psnr']:.3f}" for k, v in tq.items())
    print(f"{n:6s} {vd:9.4f} {vf:8.2f} | {td:9.4f} {tf:8.2f}  {per}")
within = [r for r in rows if r[2] <= max_fab]
if not within:
    sys.exit(f"no run has a validation FAB of at most {max_fab}")
best = min(within)
print(f"selected on the validation set: {best[1]} ({out}/ft-{best[1]}.safetensors): "
      f"test drop {best[3]:.4f} dB at FAB {best[4]:.2f}")
EOF
