#!/usr/bin/env python3
"""Validation PSNR against training time from adabm-train's log.jsonl files (Markdown table).

  scripts/psnr-log.py runs/x2/log.jsonl [runs/x4/log.jsonl ...]"""
import json, sys

for path in sys.argv[1:]:
    rows = [json.loads(l) for l in open(path)]
    vals = [r for r in rows if r.get("val_psnr") is not None]
    # A resumed run appends to the same log; keep the last entry of each iteration.
    by_iter = {r["iter"]: r for r in vals}
    print(f"\n`{path}`\n")
    print("| iteration | wall time | Set5 PSNR |")
    print("|---:|---:|---:|")
    for it in sorted(by_iter):
        r = by_iter[it]
        m = r["elapsed_s"] / 60
        print(f"| {it} | {m:.0f} min | {r['val_psnr']:.3f} |")
