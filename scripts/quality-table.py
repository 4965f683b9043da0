#!/usr/bin/env python3
"""Runs adabm-eval on Set5, Set14 and B100 for the given models (and bicubic) and prints the
BENCHMARKS.md quality table in Markdown.

  scripts/quality-table.py SCALE LABEL=MODEL[:EVAL-FLAGS] ...   (run from the repository root)

EVAL-FLAGS are extra adabm-eval flags separated by commas, e.g. `--no-adaptive`."""
import json, subprocess, sys, tempfile, os

SETS = ["Set5", "Set14", "B100"]
ROOT = "../shared/data/test"


def run(args):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run(["target/release/adabm-eval", *args, "--json", f.name,
                        "--sets", ",".join(os.path.join(ROOT, s) for s in SETS)],
                       check=True, stdout=subprocess.DEVNULL)
        return json.load(open(f.name))


def main():
    scale = sys.argv[1]
    rows = []
    bic = run(["--bicubic", "--scale", scale])
    rows.append(("bicubic", "—", "—", [s["bicubic"]["mean"] for s in bic["sets"]], None))
    for spec in sys.argv[2:]:
        label, rest = spec.split("=", 1)
        model, _, flags = rest.partition(":")
        doc = run(["--model", model, *[f for f in flags.split(",") if f]])
        means = [s["model"]["mean"] for s in doc["sets"]]
        rows.append((label, f"{doc['n_params']:,}", f"{doc['macs_per_lr_pixel'] / 1e6:.2f} M",
                     means, doc))
    print(f"| x{scale} | parameters | MACs / LR px | " +
          " | ".join(f"{s} PSNR / SSIM" for s in SETS) + " | FAB | GBitOPs (Set14 mean) |")
    print("|---|---:|---:|" + "---:|" * len(SETS) + "---:|---:|")
    for label, params, macs, means, doc in rows:
        cells = [f"{m['psnr']:.2f} / {m['ssim']:.4f}" for m in means]
        fab = f"{sum(m['fab'] for m in means) / len(means):.2f}" if doc else "—"
        bitops = f"{means[1]['bitops'] / 1e9:.1f}" if doc else "—"
        print(f"| {label} | {params} | {macs} | " + " | ".join(cells) + f" | {fab} | {bitops} |")


if __name__ == "__main__":
    main()
