#!/usr/bin/env python3
"""What the CUDA f16 path (kernels/README.md, "Floating-point layers") should give: a float EDSR
run in numpy with its conv weights (but the f32 head and tail) and every stored feature map
rounded to f16, f32 accumulation, against plain f32, on a 48x30 test image. Prints the PSNR
between the two byte outputs and the share of bytes within ±1: the margin under which
tests/cuda.rs parity_float_layers' tolerance (≥ 45 dB, ≥ 99%) sits.

  scripts/f16-emulation.py MODEL.safetensors ...   (float models; adabm-model random makes some)
"""
import json, sys
import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open

def conv(x, w, b):  # x [H,W,C] f32, w [O,I,3,3]
    H, W, C = x.shape
    p = np.zeros((H + 2, W + 2, C), np.float32); p[1:-1, 1:-1] = x
    out = np.zeros((H, W, w.shape[0]), np.float32)
    for dy in range(3):
        for dx in range(3):
            out += p[dy:dy + H, dx:dx + W] @ w[:, :, dy, dx].T
    return out + b

def shuffle(x, r):
    H, W, C = x.shape
    c = C // (r * r)
    return x.reshape(H, W, c, r, r).transpose(0, 3, 1, 4, 2).reshape(H * r, W * r, c)

def run(path, img, f16):
    d = load_file(path)
    cfg = json.loads(safe_open(path, 'np').metadata()['config'])
    q = (lambda a: a.astype(np.float16).astype(np.float32)) if f16 else (lambda a: a)
    W = {k: (q(v) if k.endswith('weight') and not k.startswith('head') and k != 'tail.1.weight' else v) for k, v in d.items()}
    mean = np.array(cfg['rgb_mean'], np.float32) * cfg['rgb_range']
    x = img * (cfg['rgb_range'] / 255.0) - mean
    h = conv(x, W['head.0.weight'], W['head.0.bias'])
    res = h.copy(); a = q(h)
    for i in range(cfg['n_resblocks']):
        t = q(np.maximum(conv(a, W[f'body.{i}.conv1.weight'], W[f'body.{i}.conv1.bias']), 0))
        res = res + cfg['res_scale'] * conv(t, W[f'body.{i}.conv2.weight'], W[f'body.{i}.conv2.bias'])
        a = q(res)
    n = cfg['n_resblocks']
    a = q(conv(a, W[f'body.{n}.weight'], W[f'body.{n}.bias']) + h)
    ups = sorted({k.rsplit('.', 1)[0] for k in W if k.startswith('tail.0.')})
    for u in ups:
        y = conv(a, W[u + '.weight'], W[u + '.bias'])
        r = int(round((y.shape[2] / a.shape[2]) ** 0.5))
        a = q(shuffle(y, r))
    out = conv(a, W['tail.1.weight'], W['tail.1.bias'])
    return (out + mean) * (255.0 / cfg['rgb_range'])

rng = np.random.default_rng(1)
yy, xx = np.mgrid[0:30, 0:48]
img = np.stack([(xx * 5 + yy * 3) % 256, (xx * 7) % 256, (yy * 11 + xx) % 256], -1).astype(np.float32)
img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).round().astype(np.float32)
for m in sys.argv[1:]:
    a = np.clip(np.rint(run(m, img, False)), 0, 255); b = np.clip(np.rint(run(m, img, True)), 0, 255)
    mse = ((a - b) ** 2).mean()
    print(m, 'PSNR', 10 * np.log10(255 * 255 / mse) if mse else 'inf', 'within1', (np.abs(a - b) <= 1).mean(), 'max', np.abs(a - b).max())
