"""Checks our floating-point engine against PyTorch running the same network.

Exports a floating-point model file to an EDSR-PyTorch state dict (`adabm-convert export`),
loads it into EDSR-PyTorch's module layout (MeanShift, head, ResBlocks, Upsampler with
PixelShuffle, tail; rgb_range 255), upscales a PNG with it in float32 on the CPU, and compares
the 8-bit result with `adabm-upscale` on the same PNG: every pixel within 1 level is expected
(the two sum in different orders; rounding of a value near .5 can differ).

  python3 scripts/torch-forward-check.py ADABM_CONVERT ADABM_UPSCALE MODEL.safetensors LR.png WORK
Needs torch, numpy and Pillow. Prints the comparison; exits non-zero when a pixel differs by
more than 1.
"""
import os
import re
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image


class EDSR(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.n_res = 1 + max(int(m.group(1)) for k in sd
                             for m in [re.match(r"body\.(\d+)\.body\.0\.weight", k)] if m)
        self.res_scale = 1.0
        self.sd = sd

    def conv(self, name, x):
        return F.conv2d(x, self.sd[name + ".weight"], self.sd[name + ".bias"], padding=1)

    def forward(self, x):
        sd = self.sd
        x = F.conv2d(x, sd["sub_mean.weight"], sd["sub_mean.bias"])
        x = self.conv("head.0", x)
        res = x
        for i in range(self.n_res):
            r = self.conv("body.%d.body.2" % i, F.relu(self.conv("body.%d.body.0" % i, res)))
            res = res + self.res_scale * r
        res = self.conv("body.%d" % self.n_res, res) + x
        k = 0
        while "tail.0.%d.weight" % k in sd:
            w = sd["tail.0.%d.weight" % k]
            r = int(round((w.shape[0] / w.shape[1]) ** 0.5))
            res = F.pixel_shuffle(self.conv("tail.0.%d" % k, res), r)
            k += 2
        x = self.conv("tail.1", res)
        return F.conv2d(x, sd["add_mean.weight"], sd["add_mean.bias"])


def main():
    convert, upscale, model, lr, work = sys.argv[1:6]
    os.makedirs(work, exist_ok=True)
    pt = os.path.join(work, "model.pt")
    ours = os.path.join(work, "ours.png")
    subprocess.run([convert, "export", model, pt, "--naming", "edsr"], check=True,
                   capture_output=True)
    subprocess.run([upscale, "--model", model, lr, ours], check=True, capture_output=True)
    sd = torch.load(pt, weights_only=True)
    net = EDSR(sd)
    img = np.asarray(Image.open(lr).convert("RGB"), dtype=np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0].permute(1, 2, 0).numpy()
    ref = np.clip(np.round(y), 0, 255).astype(np.int16)
    got = np.asarray(Image.open(ours).convert("RGB"), dtype=np.int16)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    d = np.abs(got - ref)
    mse = float(np.mean((got - ref).astype(np.float64) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    print("%s on %s: %dx%d -> %dx%d, %d resblocks; |ours - PyTorch| max %d, equal %.4f%%, "
          "within 1 %.4f%%, PSNR %.1f dB" % (
              os.path.basename(model), os.path.basename(lr), img.shape[1], img.shape[0],
              got.shape[1], got.shape[0], net.n_res, d.max(), 100 * np.mean(d == 0),
              100 * np.mean(d <= 1), psnr))
    sys.exit(0 if d.max() <= 1 else 1)


if __name__ == "__main__":
    main()
