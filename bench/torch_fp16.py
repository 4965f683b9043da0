#!/usr/bin/env python3
"""PyTorch fp16 baseline for the CUDA benchmark: the same EDSR architecture and weights as
`cargo bench --bench cuda -- --export DIR` wrote, run in fp16, channels-last, cuDNN autotuned,
on the same GPU. Prints one markdown row per case.

    python3 bench/torch_fp16.py DIR [--iters 20]
"""
import argparse
import json
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Edsr(nn.Module):
    def __init__(self, cfg, flat):
        super().__init__()
        self.cfg = cfg
        self.convs = nn.ModuleList()
        off = 0
        for c in cfg["convs"]:
            conv = nn.Conv2d(c["cin"], c["cout"], 3, padding=1)
            nw = c["cout"] * c["cin"] * 9
            conv.weight.data = torch.from_numpy(flat[off:off + nw].copy()).view(c["cout"], c["cin"], 3, 3)
            off += nw
            conv.bias.data = torch.from_numpy(flat[off:off + c["cout"]].copy())
            off += c["cout"]
            self.convs.append(conv)
        assert off == flat.size, (off, flat.size)
        rng = cfg["rgb_range"]
        self.register_buffer("mean", torch.tensor(cfg["rgb_mean"]).view(1, 3, 1, 1) * rng)

    def forward(self, x):
        cfg, cv = self.cfg, self.convs
        x = x - self.mean
        head = cv[0](x)
        res = head
        k = 1
        for _ in range(cfg["n_resblocks"]):
            t = F.relu(cv[k](res))
            res = res + cfg["res_scale"] * cv[k + 1](t)
            k += 2
        x = cv[k](res) + head
        k += 1
        while k < len(cv) - 1:
            r = int(round((cv[k].out_channels / cv[k].in_channels) ** 0.5))
            x = F.pixel_shuffle(cv[k](x), r)
            k += 1
        return cv[k](x) + self.mean


def bench(model, batch, h, w, iters):
    x = torch.rand(batch, 3, h, w, device="cuda", dtype=torch.half).mul(255).contiguous(
        memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            model(x)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    times.sort()
    return times[len(times) // 2] / batch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| network (PyTorch fp16, channels-last) | input → output | batch | fps | ms/frame | TFLOPS (2·MAC) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (w, h), batches in [("edsr-baseline-x2", (1920, 1080), [1]), ("edsr-baseline-x4", (480, 270), [1, 8])]:
        path = os.path.join(args.dir, name)
        if not os.path.exists(path + ".json"):
            print(f"(missing {path}.json)")
            continue
        cfg = json.load(open(path + ".json"))
        flat = np.fromfile(path + ".bin", dtype="<f4")
        model = Edsr(cfg, flat).cuda().half().to(memory_format=torch.channels_last).eval()
        macs = 0
        s = 1
        convs = cfg["convs"]
        for i, c in enumerate(convs):
            macs += c["cin"] * c["cout"] * 9 * s * s
            if 2 + 2 * cfg["n_resblocks"] <= i < len(convs) - 1:  # upsampler stage
                s *= int(round((c["cout"] / c["cin"]) ** 0.5))
        for b in batches:
            t = bench(model, b, h, w, args.iters)
            sc = cfg["scale"]
            tflops = 2 * macs * w * h / t / 1e12
            print(f"| {name} | {w}x{h} → {w*sc}x{h*sc} | {b} | {1/t:.1f} | {t*1e3:.2f} | {tflops:.0f} |")


if __name__ == "__main__":
    main()
