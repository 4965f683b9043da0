"""Checks our quantized (AdaBM) models against AdaBM's forward pass written in PyTorch.

The PyTorch side is written from the method's specification (docs: adabm-method.md —
"Quantizers", "Bit-width of layer k", "Image → bit", "Layer → bit"), not from our engine:
  - activations: q = round((clamp(x, l, u) − l) / (u − l) · (2^b − 1)), x̂ = q / (2^b − 1) ·
    (u − l) + l, zero padding applied to x̂ (F.conv2d pads the quantized map);
  - weights: k = round((clamp(w, −u_w, u_w) + u_w) / (2 u_w) · (2^b_w − 1)),
    ŵ = k / (2^b_w − 1) · 2 u_w − u_w;
  - b(k) = b_base + b_I + b_L(k), b_L = round(clamp(m_k, −1, 1));
  - b_I from the complexity c = 1000 · mean |Sobel / 8| of Y = 0.299 R + 0.587 G + 0.114 B of
    I / 255 (replicate padding): −1 below l_i2b, +1 above u_i2b;
  - fq: every block conv and the last body conv adaptive, head / upsampler convs / tail at
    fixed 8/8 bits; non-fq: the block convs adaptive, the rest floating point.
torch.round rounds half to even, as the reference's does.

It reads the model file (safetensors: weights, and the `quant` metadata with l, u, u_w and m
per layer and the image thresholds) itself, upscales a PNG on the CPU, and compares with
`adabm-upscale` on the same PNG: the complexity, b_I and FAB it prints, and the 8-bit pixels.

A quantized network is not continuous: an activation within float rounding of a code boundary
lands on either side, and a 4-bit code step is 1/15 of the layer's range, which the next
layers spread. So no float implementation reproduces another's pixels exactly, PyTorch's own
float32 forward included (with and without oneDNN its convolutions sum in other orders, and
land on different pixels). The pixels are therefore
compared with PyTorch in float64 (the closest to exact arithmetic), beside PyTorch's two
float32 forwards against the same float64 one. One image's distance is heavy-tailed (a flip in
an early layer spreads over a large part of the image), so the criterion is over the images:
the median of our PSNRs between no more than 1 dB below the lower of the two float32 forwards'
medians. A wrong formula, rounding rule, padding or bit-width shifts every image by far more
(measured on the x2 w4a4 built-in, Set5: a weight grid of 2^b levels instead of 2^b − 1, 39
dB; zero padding before quantization instead of after, 47–49 dB; PyTorch float32, 54–60 dB).

  python3 scripts/torch-adabm-check.py ADABM_UPSCALE MODEL.safetensors LR.png [LR.png ...]
Needs torch, numpy and Pillow. Prints one line per image; exits non-zero when b_I or FAB
differ on any image, the complexity differs by more than 1e-3 relative, or the median PSNR is
more than 1 dB below PyTorch float32's.
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def read_model(path):
    """Tensors (as torch float32), the quantizer metadata and the network config."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    body = data[8 + n:]
    tensors = {}
    for name, t in header.items():
        assert t["dtype"] == "F32", (name, t["dtype"])
        a, b = t["data_offsets"]
        tensors[name] = torch.from_numpy(
            np.frombuffer(body[a:b], dtype="<f4").reshape(t["shape"]).copy())
    return tensors, json.loads(meta["quant"]), json.loads(meta["config"])


def quant_act(x, l, u, b):
    n = 2.0 ** b - 1
    q = torch.round((torch.clamp(x, l, u) - l) / (u - l) * n)
    return q / n * (u - l) + l


def quant_weight(w, uw, bw):
    n = 2.0 ** bw - 1
    k = torch.round((torch.clamp(w, -uw, uw) + uw) / (2 * uw) * n)
    return k / n * 2 * uw - uw


def complexity(img):
    """Gradient density of an HxWx3 0–255 image, as the method defines it."""
    x = torch.from_numpy(img / 255.0)
    y = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[None, None]
    y = F.pad(y, (1, 1, 1, 1), mode="replicate")
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=y.dtype) / 8
    gx = F.conv2d(y, sx[None, None])
    gy = F.conv2d(y, sx.t().contiguous()[None, None])
    return 1000.0 * float(torch.cat([gx.abs(), gy.abs()]).mean())


class AdaBM:
    def __init__(self, tensors, quant, config):
        self.t, self.q, self.cfg = tensors, quant, config
        self.fq = quant["mode"] == "fq"
        self.n_res = 1 + max(int(m.group(1)) for k in tensors
                             for m in [re.match(r"body\.(\d+)\.conv1\.weight", k)] if m)
        self.last = "body.%d" % self.n_res
        self.bits = []

    def adaptive(self, name):
        return re.fullmatch(r"body\.\d+\.conv[12]", name) or (self.fq and name == self.last)

    def conv(self, name, x, b_i):
        w, bias = self.t[name + ".weight"], self.t[name + ".bias"]
        if self.adaptive(name):
            p = self.q["layers"][name]
            b_l = float(torch.round(torch.clamp(torch.tensor(p["m"]), -1, 1)))
            b = self.q["a_bits"] + b_i + int(b_l)
            self.bits.append(b)
            x = quant_act(x, p["l"], p["u"], b)
            w = quant_weight(w, p["u_w"], self.q["w_bits"])
        elif self.fq:
            p = self.q["layers"][name]
            x = quant_act(x, p["l"], p["u"], 8)
            w = quant_weight(w, p["u_w"], 8)
        return F.conv2d(x, w, bias, padding=1)

    def forward(self, x, b_i):
        mean = torch.tensor(self.cfg["rgb_mean"]).view(1, 3, 1, 1) * self.cfg["rgb_range"]
        self.bits = []
        x = self.conv("head.0", x - mean, b_i)
        res = x
        for i in range(self.n_res):
            r = F.relu(self.conv("body.%d.conv1" % i, res, b_i))
            res = res + self.cfg["res_scale"] * self.conv("body.%d.conv2" % i, r, b_i)
        res = self.conv(self.last, res, b_i) + x
        k = 0
        while "tail.0.%d.weight" % k in self.t:
            w = self.t["tail.0.%d.weight" % k]
            r = int(round((w.shape[0] / w.shape[1]) ** 0.5))
            res = F.pixel_shuffle(self.conv("tail.0.%d" % k, res, b_i), r)
            k += 2
        return self.conv("tail.1", res, b_i) + mean


def compare(a, b):
    """(share of equal pixels, share within 1 level, max difference, PSNR between)."""
    d = np.abs(a - b)
    mse = float(np.mean((a - b).astype(np.float64) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    return float(np.mean(d == 0)), float(np.mean(d <= 1)), int(d.max()), psnr


def main():
    upscale, model = sys.argv[1:3]
    tensors, quant, config = read_model(model)
    nets = {dt: AdaBM({k: v.to(dt) for k, v in tensors.items()}, quant, config)
            for dt in (torch.float64, torch.float32)}
    ok = True
    # PSNR between ours / PyTorch float32 with oneDNN / without, and PyTorch float64, per image.
    psnrs = {"ours": [], "oneDNN": [], "native": []}

    def run(img, b_i, dt, onednn=True):
        torch.backends.mkldnn.enabled = onednn
        x = torch.from_numpy(img).to(dt).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = nets[dt].forward(x, b_i)[0].permute(1, 2, 0).numpy()
        torch.backends.mkldnn.enabled = True
        return np.clip(np.round(y), 0, 255).astype(np.int16)

    with tempfile.TemporaryDirectory() as work:
        for lr in sys.argv[3:]:
            ours = os.path.join(work, "ours.png")
            printed = subprocess.run([upscale, "--model", model, lr, ours], check=True,
                                     capture_output=True, text=True).stdout
            m = re.search(r"complexity ([\d.]+), b_I ([+-]\d+), FAB ([\d.]+)", printed)
            c_ours, bi_ours, fab_ours = float(m.group(1)), int(m.group(2)), float(m.group(3))
            img = np.asarray(Image.open(lr).convert("RGB"), dtype=np.float64)
            c = complexity(img)
            b_i = -1 if c < quant["image_lower"] else (1 if c > quant["image_upper"] else 0)
            ref = run(img, b_i, torch.float64)
            fab = sum(nets[torch.float64].bits) / len(nets[torch.float64].bits)
            got = np.asarray(Image.open(ours).convert("RGB"), dtype=np.int16)
            assert got.shape == ref.shape, (got.shape, ref.shape)
            row = {"ours": compare(got, ref),
                   "oneDNN": compare(run(img, b_i, torch.float32), ref),
                   "native": compare(run(img, b_i, torch.float32, onednn=False), ref)}
            for k, r in row.items():
                psnrs[k].append(min(r[3], 99.0))
            good = (bi_ours == b_i and abs(fab_ours - fab) < 5e-4
                    and abs(c_ours - c) <= 1e-3 * max(c, 1.0))
            ok &= good
            print("%s on %s: complexity %.3f / %.3f, b_I %+d / %+d, FAB %.3f / %.3f (ours / "
                  "PyTorch); against PyTorch float64, equal pixels / within 1 / max / PSNR: %s%s"
                  % (os.path.basename(model), os.path.basename(lr), c_ours, c, bi_ours, b_i,
                     fab_ours, fab, "; ".join(
                         "%s %.2f%% / %.2f%% / %d / %.1f dB"
                         % (k, 100 * r[0], 100 * r[1], r[2], r[3]) for k, r in row.items()),
                     "" if good else "  <-- b_I, FAB or complexity MISMATCH"))
    med = {k: float(np.median(v)) for k, v in psnrs.items()}
    pixels_ok = med["ours"] >= min(med["oneDNN"], med["native"]) - 1.0
    print("%s, %d images: median PSNR against PyTorch float64: ours %.1f dB, PyTorch float32 "
          "%.1f dB (oneDNN) / %.1f dB (native): %s" % (
              os.path.basename(model), len(psnrs["ours"]), med["ours"], med["oneDNN"],
              med["native"], "as close" if pixels_ok else "FURTHER"))
    sys.exit(0 if ok and pixels_ok else 1)


if __name__ == "__main__":
    main()
