#!/usr/bin/env bash
# The main job: set up, build the plugin and upscale a clip, printing the frame rate.
#
#   scripts/upscale.sh [IN.mp4] [OUT.mp4] [MODEL.safetensors]
#
# IN defaults to a 1-second 320x180 test clip made here; OUT to out-x2.mp4 next to it.
# MODEL defaults to the built-in x2 model (trained by us, embedded in the plugin); set SCALE=3
# or SCALE=4 in the environment for the built-in x3 / x4 model.
set -euo pipefail
# The paths as given, from the caller's directory (the script runs from the repository's).
abs() { case $1 in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
in_arg=${1:+$(abs "$1")}
out_arg=${2:+$(abs "$2")}
model_arg=${3:+$(abs "$3")}
for f in "$in_arg" "$model_arg"; do
    if [ -n "$f" ] && [ ! -f "$f" ]; then
        echo "scripts/upscale.sh: no such file: $f" >&2
        exit 1
    fi
done
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p gst-adabm -p adabm-tools
export GST_PLUGIN_PATH="$PWD/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
work="${TMPDIR:-/tmp}/adabm-upscale"
mkdir -p "$work"
in="$in_arg"
if [ -z "$in" ]; then
    in="$work/clip.mp4"
    gst-launch-1.0 -q videotestsrc num-buffers=25 pattern=ball ! \
        video/x-raw,format=I420,width=320,height=180,framerate=25/1 ! x264enc ! mp4mux ! filesink location="$in"
fi
scale="${SCALE:-2}"
out="${out_arg:-$work/out-x$scale.mp4}"
if [ -n "$model_arg" ]; then
    prop=("model-location=$model_arg")
else
    prop=("scale=$scale")
fi
log="$work/upscale.log"
start=$(date +%s.%N)
gst-launch-1.0 -m filesrc location="$in" ! decodebin ! videoconvert ! \
    adabmupscale "${prop[@]}" post-stats=true ! videoconvert ! video/x-raw,format=I420 ! \
    x264enc ! mp4mux ! filesink location="$out" >"$log" 2>&1 || {
    # What filesink wrote of a failed run is no playable file (mp4mux writes its index last).
    tail -20 "$log"; rm -f "$out"; echo "scripts/upscale.sh: failed (log: $log)" >&2; exit 1; }
end=$(date +%s.%N)
frames=$(grep -c "adabm-stats" "$log" || true)
fab=$(grep -o "fab=(double)[0-9.]*" "$log" | awk -F')' '{s+=$2; n++} END {if (n) printf "%.2f", s/n}')
awk -v f="$frames" -v a="$start" -v b="$end" -v fab="$fab" -v i="$in" -v o="$out" 'BEGIN {
    printf "upscaled %s -> %s: %d frames in %.1f s = %.2f fps (mean FAB %s)\n", i, o, f, b - a, f / (b - a), fab }'
