#!/usr/bin/env python3
"""Writes tests/data/vp9-alpha.webm: 10 frames of 160x96 VP9 with an alpha channel (WebM with
transparency, as browsers and FFmpeg write it), the fixture of the pipeline test
`webm_with_alpha_goes_through_as_a420`. Colour: a horizontal ramp; alpha: vertical stripes of
255 and 60 that move by one stripe each frame.

GStreamer 1.22 decodes such files (`vp9alphadecodebin`, picked by `decodebin`) but has no
encoder for them, so this uses FFmpeg's libvpx-vp9 through PyAV (not a dependency of the
project or its tests; the file is committed):

    python3 -m venv /tmp/avenv && /tmp/avenv/bin/pip install av==12.0.0 numpy
    /tmp/avenv/bin/python scripts/make-vp9-alpha.py [OUT.webm]
"""
import sys

import av
import numpy as np

out_path = sys.argv[1] if len(sys.argv) > 1 else "tests/data/vp9-alpha.webm"
w, h = 160, 96
out = av.open(out_path, "w")
s = out.add_stream("libvpx-vp9", rate=25)
s.width, s.height, s.pix_fmt = w, h, "yuva420p"
for i in range(10):
    img = np.zeros((h, w, 4), np.uint8)
    img[..., 0] = np.linspace(0, 255, w)[None, :]
    img[..., 1] = 128
    img[..., 2] = 255 - img[..., 0]
    img[..., 3] = np.where((np.arange(w)[None, :] // 20 + i) % 2 == 0, 255, 60)
    frame = av.VideoFrame.from_ndarray(img, format="rgba").reformat(format="yuva420p")
    for p in s.encode(frame):
        out.mux(p)
for p in s.encode():
    out.mux(p)
out.close()
print(out_path)
