#!/usr/bin/env python3
"""CPU peers for the integer engine: the same EDSR-baseline network and weights (written by
`cargo bench --bench cpu -- --export DIR`) exported to ONNX, timed with ONNX Runtime (fp32 and
int8 QDQ, static calibration) and OpenVINO (fp32 and int8 from NNCF post-training
quantization) on the same input sizes and thread count.

    python3 bench/peers/peers.py DIR [--threads 2] [--runs 3] [--save-ov-int8 D | --ov-int8 D]
                                     [--only x2] [--int8-only] [--fastest]

Needs: pip install onnx onnxruntime openvino nncf   (bench/peers/run.sh does it).
`--save-ov-int8 D` also writes the NNCF-quantized OpenVINO models to D (`NAME.int8.xml/.bin`);
`--ov-int8 D` times those instead of quantizing (no NNCF needed: for a machine that has only
the OpenVINO runtime, such as a lent GPU machine's host CPU; scripts/gpu-check.sh).
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build_onnx(cfg, flat, path):
    nodes, inits = [], []
    off = 0

    def conv(name, x, c):
        nonlocal off
        nw = c["cout"] * c["cin"] * 9
        w = flat[off:off + nw].reshape(c["cout"], c["cin"], 3, 3)
        off += nw
        b = flat[off:off + c["cout"]]
        off += c["cout"]
        inits.append(numpy_helper.from_array(w.astype(np.float32), name + ".w"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), name + ".b"))
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name], pads=[1, 1, 1, 1]))
        return name

    mean = (np.array(cfg["rgb_mean"], np.float32) * cfg["rgb_range"]).reshape(1, 3, 1, 1)
    inits.append(numpy_helper.from_array(mean, "mean"))
    inits.append(numpy_helper.from_array(np.array(cfg["res_scale"], np.float32), "rs"))
    nodes.append(helper.make_node("Sub", ["x", "mean"], ["x0"]))
    convs = cfg["convs"]
    head = conv("head", "x0", convs[0])
    res, k = head, 1
    for i in range(cfg["n_resblocks"]):
        t = conv(f"b{i}c1", res, convs[k])
        nodes.append(helper.make_node("Relu", [t], [t + "r"]))
        t2 = conv(f"b{i}c2", t + "r", convs[k + 1])
        nodes.append(helper.make_node("Mul", [t2, "rs"], [t2 + "s"]))
        nodes.append(helper.make_node("Add", [res, t2 + "s"], [f"res{i}"]))
        res, k = f"res{i}", k + 2
    body = conv("body", res, convs[k])
    nodes.append(helper.make_node("Add", [body, head], ["skip"]))
    x, k = "skip", k + 1
    while k < len(convs) - 1:
        r = int(round((convs[k]["cout"] / convs[k]["cin"]) ** 0.5))
        u = conv(f"up{k}", x, convs[k])
        nodes.append(helper.make_node("DepthToSpace", [u], [u + "s"], blocksize=r, mode="CRD"))
        x, k = u + "s", k + 1
    t = conv("tail", x, convs[k])
    nodes.append(helper.make_node("Add", [t, "mean"], ["y"]))
    assert off == flat.size
    graph = helper.make_graph(
        nodes, "edsr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, None, None])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)


def image(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 128 + 80 * np.sin(xx * 0.07 + seed) * np.cos(yy * 0.11)
    img = np.stack([base + 15 * c for c in range(3)]) + rng.normal(0, 8, (3, h, w))
    return np.clip(img, 0, 255).astype(np.float32)[None]


FASTEST = False


def timed(fn, runs):
    """The median frame time of `runs` (after one warm-up), or the fastest with --fastest."""
    fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts) if FASTEST else statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--save-ov-int8", help="write the NNCF-quantized OpenVINO models here")
    ap.add_argument("--ov-int8", help="time the OpenVINO int8 models saved here (no NNCF)")
    ap.add_argument("--only", default="", help="networks whose name contains this (x2, x4)")
    ap.add_argument("--int8-only", action="store_true", help="skip the fp32 rows")
    ap.add_argument("--fastest", action="store_true",
                    help="report each runtime's fastest frame instead of the median")
    args = ap.parse_args()
    global FASTEST
    FASTEST = args.fastest
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    import openvino as ov
    if args.ov_int8:
        quantizer = f"OpenVINO int8 from {args.ov_int8}"
    else:
        import nncf
        quantizer = f"nncf {nncf.__version__}"

    print(f"onnxruntime {ort.__version__}, openvino {ov.__version__}, {quantizer}, {args.threads} threads")
    print("| network | input | runtime | ms/frame | fps | GMAC/s |")
    print("|---|---|---|---:|---:|---:|")
    for name, (w, h) in [("edsr-baseline-x2", (320, 180)), ("edsr-baseline-x4", (480, 270))]:
        if args.only not in name:
            continue
        p = os.path.join(args.dir, name)
        cfg = json.load(open(p + ".json"))
        flat = np.fromfile(p + ".bin", dtype="<f4")
        fp32 = p + ".onnx"
        build_onnx(cfg, flat, fp32)
        x = image(h, w, 1)
        calib = [image(h, w, s) for s in range(2, 6)]
        macs, s = 0, 1
        convs = cfg["convs"]
        for i, c in enumerate(convs):
            macs += c["cin"] * c["cout"] * 9 * s * s
            if 2 + 2 * cfg["n_resblocks"] <= i < len(convs) - 1:
                s *= int(round((c["cout"] / c["cin"]) ** 0.5))
        gmac = macs * w * h / 1e9

        def row(rt, t):
            print(f"| {name} | {w}x{h} | {rt} | {t * 1e3:.0f} | {1 / t:.2f} | {gmac / t:.0f} |", flush=True)

        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        if not args.int8_only:
            sess = ort.InferenceSession(fp32, so, providers=["CPUExecutionProvider"])
            row("ONNX Runtime fp32", timed(lambda: sess.run(None, {"x": x}), args.runs))

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"x": c} for c in calib])

            def get_next(self):
                return next(self.it, None)

        int8 = p + ".int8.onnx"
        quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        sess8 = ort.InferenceSession(int8, so, providers=["CPUExecutionProvider"])
        row("ONNX Runtime int8 (QDQ)", timed(lambda: sess8.run(None, {"x": x}), args.runs))

        core = ov.Core()
        cfg_ov = {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": "f32"}
        m = core.read_model(fp32)
        m.reshape([1, 3, h, w])
        if not args.int8_only:
            c32 = core.compile_model(m, "CPU", cfg_ov)
            row("OpenVINO fp32", timed(lambda: c32([x]), args.runs))
        if args.ov_int8:
            q = core.read_model(os.path.join(args.ov_int8, name + ".int8.xml"))
        else:
            q = nncf.quantize(m, nncf.Dataset(calib), subset_size=len(calib))
            if args.save_ov_int8:
                os.makedirs(args.save_ov_int8, exist_ok=True)
                ov.save_model(q, os.path.join(args.save_ov_int8, name + ".int8.xml"))
        c8 = core.compile_model(q, "CPU", {"INFERENCE_NUM_THREADS": args.threads})
        row("OpenVINO int8 (NNCF)", timed(lambda: c8([x]), args.runs))


if __name__ == "__main__":
    main()
