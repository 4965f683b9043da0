"""Checks adabm-convert against real PyTorch (run where torch is installed: scripts/gpu-check.sh).

Builds EDSR-PyTorch's baseline module layout (MeanShift sub_mean/add_mean, head, ResBlocks with
body.{0,2}, the body's last conv, Upsampler + tail conv) with random weights, saves its state
dict with torch.save in the zip format and in the legacy format
(`_use_new_zipfile_serialization=False`, what PyTorch < 1.6 wrote, in the era of the
EDSR-PyTorch release models; pickle protocols 2 and 4), imports each with `adabm-convert
import`, exports the result back to a zip .pt and loads that with torch.load: every conv tensor must come back bit-identical (the mean shifts,
kept as the RGB mean and rebuilt as mean x rgb_range, within 1e-6 relative).

  python3 scripts/torch-formats-check.py ADABM_CONVERT WORKDIR
Prints one line per case and exits non-zero on any difference.
"""
import collections
import os
import struct
import subprocess
import sys
import zipfile

import torch
import torch.nn as nn


class MeanShift(nn.Conv2d):
    def __init__(self, sign):
        super().__init__(3, 3, kernel_size=1)
        mean = torch.tensor([0.4488, 0.4371, 0.4040]) * 255.0
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * mean
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(f, f, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(f, f, 3, padding=1))


class EDSR(nn.Module):
    def __init__(self, scale, nres, f):
        super().__init__()
        self.sub_mean = MeanShift(-1)
        self.add_mean = MeanShift(1)
        self.head = nn.Sequential(nn.Conv2d(3, f, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(f) for _ in range(nres)],
                                  nn.Conv2d(f, f, 3, padding=1))
        up = []
        for r in {2: [2], 3: [3], 4: [2, 2]}[scale]:
            up += [nn.Conv2d(f, r * r * f, 3, padding=1), nn.PixelShuffle(r)]
        self.tail = nn.Sequential(nn.Sequential(*up), nn.Conv2d(f, 3, 3, padding=1))


def main():
    convert, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    failures = 0
    for scale in (2, 3, 4):
        torch.manual_seed(scale)
        sd = EDSR(scale, 2, 16).state_dict()
        for fmt, zipped, proto in (("zip", True, 2), ("zip-no-crc", True, 2),
                                   ("legacy", False, 2), ("legacy-p4", False, 4)):
            pt = os.path.join(work, "x%d-%s.pt" % (scale, fmt))
            ours = os.path.join(work, "x%d-%s.safetensors" % (scale, fmt))
            back = os.path.join(work, "x%d-%s-back.pt" % (scale, fmt))
            # zip-no-crc: torch.save without CRC-32s (PyTorch >= 2.4), which records 0s.
            if hasattr(torch.serialization, "set_crc32_options"):
                torch.serialization.set_crc32_options(fmt != "zip-no-crc")
            torch.save(sd, pt, _use_new_zipfile_serialization=zipped, pickle_protocol=proto)
            if hasattr(torch.serialization, "set_crc32_options"):
                torch.serialization.set_crc32_options(True)
            for args in (["import", pt, ours], ["export", ours, back, "--naming", "edsr"]):
                r = subprocess.run([convert] + args, capture_output=True, text=True)
                if r.returncode != 0:
                    print("x%d %s: adabm-convert %s failed: %s" % (scale, fmt, args[0], r.stderr))
                    failures += 1
                    break
            else:
                got = torch.load(back, weights_only=True)

                def same(k, v):
                    if k not in got or got[k].shape != v.shape:
                        return False
                    if "mean" in k:  # kept as the mean, rebuilt as mean x rgb_range
                        return torch.allclose(got[k], v, rtol=1e-6, atol=0)
                    return torch.equal(got[k], v)
                bad = [k for k, v in sd.items() if not same(k, v)]
                print("x%d %s: %d tensors, %s" % (scale, fmt, len(sd),
                                                   "identical" if not bad else "DIFFER: %s" % bad))
                failures += bool(bad)
        # A zip file damaged after torch.save wrote it (one bit of one stored weight):
        # torch.load returns the changed value; adabm-convert must refuse it, naming the entry.
        pt = os.path.join(work, "x%d-zip.pt" % scale)
        bad = bytearray(open(pt, "rb").read())
        z = zipfile.ZipFile(pt)
        info = next(i for i in z.infolist() if i.filename.endswith("data/0"))
        name_len, extra_len = struct.unpack("<HH", bad[info.header_offset + 26:
                                                        info.header_offset + 30])
        bad[info.header_offset + 30 + name_len + extra_len + 2] ^= 1
        damaged = os.path.join(work, "x%d-damaged.pt" % scale)
        open(damaged, "wb").write(bad)
        r = subprocess.run([convert, "import", damaged, damaged + ".safetensors"],
                           capture_output=True, text=True)
        refused = r.returncode != 0 and "data/0 is damaged" in r.stderr
        print("x%d zip with one flipped bit: %s" % (
            scale, "refused (data/0 is damaged)" if refused else "NOT REFUSED: " + r.stderr))
        failures += not refused
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
