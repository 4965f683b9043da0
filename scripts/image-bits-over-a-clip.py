#!/usr/bin/env python3
"""How often a clip's per-frame image bit b_I changes (per-frame bit switching can flicker).

Reads the output of `gst-launch-1.0 -m ... ! adabmupscale post-stats=true ! ...` (one
`adabm-stats` element message per frame; progressive video: the per-field messages of an
interlaced stream are skipped) and prints, per log: the frames, the count of each
b_I, the frames where b_I changed, the runs of equal b_I, how many runs are shorter than 3
frames (a toggle a viewer could see as a flicker), the complexity change between frames (median
and 90th percentile, over the frames that are not scene cuts: |change| < 3) and the mean FAB.

    GST_PLUGIN_PATH=target/release gst-launch-1.0 -m filesrc location=CLIP.mp4 ! qtdemux ! \\
        avdec_h264 ! videoconvert ! adabmupscale scale=2 precision=w4a4 post-stats=true ! \\
        fakesink > x2-w4a4.log
    python3 scripts/image-bits-over-a-clip.py x2-w4a4.log [more.log ...]

With `--hysteresis H --thresholds L,U` (the model's l_i2b, u_i2b: `adabm-model info`) it also
replays each log's complexities through the element's `image-hysteresis=H` rule
(`quant::sticky_thresholds`) and prints the b_I runs that would give: the same frames, so the
two differ only by the rule.
"""
import re
import sys


def field(line, name, kind):
    m = re.search(name + r"=\(" + kind + r"\)(-?[0-9.e+]+)", line)
    return float(m.group(1)) if m else None


def image_bit(c, lower, upper):
    return -1 if c < lower else (1 if c > upper else 0)


def sticky(c, lower, upper, h):
    """b_I per frame with the element's hysteresis (quant::sticky_thresholds)."""
    out, prev = [], None
    for x in c:
        lo, up = lower, upper
        if prev is not None and h > 0:
            lo = lower - h * abs(lower) if prev >= 0 else lower + h * abs(lower)
            up = upper - h * abs(upper) if prev >= 1 else upper + h * abs(upper)
        prev = image_bit(x, lo, up)
        out.append(prev)
    return out


def runs_of(b):
    runs = []
    for x in b:
        if runs and runs[-1][0] == x:
            runs[-1][1] += 1
        else:
            runs.append([x, 1])
    return runs


def main(argv):
    replay = None
    if "--hysteresis" in argv:
        i = argv.index("--hysteresis")
        h = float(argv[i + 1])
        j = argv.index("--thresholds")
        lower, upper = (float(v) for v in argv[j + 1].split(","))
        replay = (h, lower, upper)
        argv = [a for k, a in enumerate(argv) if k not in (i, i + 1, j, j + 1)]
    paths = argv
    if not paths:
        sys.exit(__doc__)
    for path in paths:
        c, b, fab = [], [], []
        with open(path, errors="replace") as f:
            for line in f:
                if "adabm-stats" not in line or "field=" in line:
                    continue
                c.append(field(line, "complexity", "double"))
                b.append(int(field(line, "image-bits", "int")))
                fab.append(field(line, "fab", "double"))
        if not b:
            print(f"{path}: no adabm-stats messages (was post-stats=true and gst-launch -m used?)")
            continue
        runs = runs_of(b)
        changes = [i for i in range(1, len(b)) if b[i] != b[i - 1]]
        short = sum(1 for _, n in runs[1:-1] if n < 3)
        d = sorted(abs(c[i] - c[i - 1]) for i in range(1, len(c)))
        d = [x for x in d if x < 3.0] or [0.0]
        counts = {k: b.count(k) for k in sorted(set(b))}
        print(
            f"{path}: {len(b)} frames, b_I {counts}, changes at frames {changes}, "
            f"runs {[tuple(r) for r in runs]}, runs shorter than 3 frames {short}, "
            f"|complexity change| median {d[len(d) // 2]:.3f} p90 {d[int(0.9 * (len(d) - 1))]:.3f}, "
            f"mean FAB {sum(fab) / len(fab):.3f}"
        )
        if replay:
            h, lower, upper = replay
            r = runs_of(sticky(c, lower, upper, h))
            plain = runs_of(sticky(c, lower, upper, 0.0))
            print(
                f"  replayed: thresholds {lower}, {upper}: hysteresis 0 runs {[tuple(x) for x in plain]} "
                f"(short {sum(1 for _, n in plain[1:-1] if n < 3)}); hysteresis {h} runs "
                f"{[tuple(x) for x in r]} (short {sum(1 for _, n in r[1:-1] if n < 3)})"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
