#!/usr/bin/env bash
# Several streams in one process: N branches of a `tee`, each its own `adabmupscale` (one
# engine each, n-threads=0), 30 frames of 320x180 I420 → 640x360, for one or more builds of the
# plugin alternating in each round (these machines are shared and noisy). Prints wall time
# and peak resident memory of each run.
#
#   scripts/element-streams.sh ROUNDS STREAMS PRECISION PLUGIN_DIR...
#   e.g. scripts/element-streams.sh 3 8 fp32 /tmp/plug-base target/release
set -euo pipefail
[ -x /usr/bin/time ] || { echo "$0 needs GNU time: apt-get install time" >&2; exit 2; }
[ $# -ge 4 ] || { echo "usage: $0 ROUNDS STREAMS PRECISION PLUGIN_DIR..." >&2; exit 2; }
rounds=$1 streams=$2 precision=$3
shift 3
branches=()
for _ in $(seq "$streams"); do
    branches+=(t. ! queue ! adabmupscale precision="$precision" ! fakesink)
done
for r in $(seq "$rounds"); do
    for dir in "$@"; do
        t=$( { GST_PLUGIN_PATH="$dir" /usr/bin/time -f "%e %M" gst-launch-1.0 -q \
            videotestsrc num-buffers=30 pattern=ball ! \
            video/x-raw,width=320,height=180,format=I420 ! tee name=t "${branches[@]}" \
            >/dev/null; } 2>&1 | tail -1)
        read -r s kb <<<"$t"
        echo "round $r $dir: $streams streams $precision: $s s, $((kb / 1024)) MiB"
    done
done
