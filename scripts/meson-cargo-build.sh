#!/usr/bin/env bash
# Called by meson.build: builds the plugin with cargo and copies it to meson's output path.
#   meson-cargo-build.sh SOURCE_DIR TARGET_DIR PROFILE OUTPUT
set -euo pipefail
src=$1 target=$2 profile=$3 output=$4
args=()
[ "$profile" = release ] && args+=(--release)
cargo build --locked -p gst-adabm "${args[@]}" --manifest-path "$src/Cargo.toml" --target-dir "$target"
cp "$target/$profile/libgstadabm.so" "$output"
