#!/usr/bin/env bash
# Peak resident memory and wall time of the element upscaling 1080p to 4K (built-in x2 models,
# 4 frames of `videotestsrc`), for one or more builds of the plugin, alternating builds in each
# round so that they share the machine's state (these machines are shared and noisy).
#
#   scripts/element-memory.sh [ROUNDS] PLUGIN_DIR...
#
# e.g. build the base commit into another target dir and compare:
#   scripts/element-memory.sh 2 /tmp/plug-base target/release
set -euo pipefail
[ -x /usr/bin/time ] || { echo "$0 needs GNU time: apt-get install time" >&2; exit 2; }
rounds="${1:-1}"
shift
[ $# -ge 1 ] || { echo "usage: $0 [ROUNDS] PLUGIN_DIR..." >&2; exit 2; }
echo "| round | plugin | precision | format | max resident | wall |"
echo "|---:|---|---|---|---:|---:|"
for r in $(seq "$rounds"); do
    for p in fp32 w4a4; do
        for f in I420 RGB v210; do
            for dir in "$@"; do
                t=$( { GST_PLUGIN_PATH="$dir" /usr/bin/time -f "%M %e" gst-launch-1.0 -q \
                    videotestsrc num-buffers=4 pattern=ball ! \
                    video/x-raw,width=1920,height=1080,format="$f" ! \
                    adabmupscale precision="$p" ! fakesink >/dev/null; } 2>&1 | tail -1)
                read -r kb s <<<"$t"
                awk -v r="$r" -v d="$dir" -v p="$p" -v f="$f" -v kb="$kb" -v s="$s" \
                    'BEGIN { printf "| %s | %s | %s | %s | %.0f MiB | %s s |\n", r, d, p, f, kb / 1024, s }'
            done
        done
    done
done
