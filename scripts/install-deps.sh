#!/usr/bin/env bash
# Installs the system packages adabm builds and tests against (Debian 12): GStreamer 1.22
# development files, the tools and the plugins the tests use (x264enc, mp4mux, decodebin,
# avdec_h264), meson/ninja and a C++ compiler. Does nothing when everything is already there.
set -euo pipefail
need=0
pkg-config --exists gstreamer-1.0 gstreamer-base-1.0 gstreamer-video-1.0 gstreamer-app-1.0 gstreamer-check-1.0 2>/dev/null || need=1
for el in x264enc mp4mux qtdemux decodebin avdec_h264 videotestsrc videoconvert; do
    gst-inspect-1.0 "$el" >/dev/null 2>&1 || need=1
done
command -v meson >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1 || need=1
# A C++ compiler: the tests build the CUDA kernels for an emulated GPU (tests/cuda_host.rs) and
# the YUV kernels for the host with it (they skip, saying so, without one).
command -v c++ >/dev/null 2>&1 || need=1
if [ "$need" = 1 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends \
        pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-tools \
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
        gstreamer1.0-plugins-ugly gstreamer1.0-libav meson ninja-build g++ >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust 1.95+ with rustup (https://rustup.rs)"; exit 1; }
