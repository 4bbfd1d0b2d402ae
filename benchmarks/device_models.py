"""Builds the architectures of the published latency tables and caches their work.

The device profiles (`tflight/devices/profiles.py`) are fitted to published latencies
of real devices (`tflight/devices/data/published_latency.csv`). To cost those models,
this script rebuilds each architecture with `keras.applications`
(`weights=None`: timing does not depend on the weights) at the published input
size, converts it with `converters.convert` to the published precision (fp32,
or full int8 with int8 input and output, calibrated on random data: enough to
count the work), and stores the per-op work summed per operator class and
arithmetic in `tflight/devices/data/model_work.json`. Tests and `device_truth.py` read
that file instead of converting dozens of large models on every run.

Run (about 20-30 minutes on 2 cores; models already in the file are skipped
unless --force):

    python benchmarks/device_models.py [--only NAME ...] [--force]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converters.files import write_json  # noqa: E402

OUT = ROOT / "tflight" / "data" / "model_work.json"


def _efficientnet_lite(index: int):
    """EfficientNet-Lite0..4 as in tensorflow/tpu models/official/efficientnet/lite.

    EfficientNet-B0 blocks without squeeze-and-excite, ReLU6 instead of swish,
    the stem (32) and head (1280) fixed, and the first and last stages not
    repeated more as the model is scaled (`fix_head_stem` in
    efficientnet_lite_builder.py / efficientnet_model.py of that repository).
    """
    import keras
    from keras import layers

    width, depth, res = {
        0: (1.0, 1.0, 224), 1: (1.0, 1.1, 240), 2: (1.1, 1.2, 260),
        3: (1.2, 1.4, 280), 4: (1.4, 1.8, 300),
    }[index]
    blocks = [  # kernel, repeats, stride, expand, in, out (EfficientNet-B0)
        (3, 1, 1, 1, 32, 16), (3, 2, 2, 6, 16, 24), (5, 2, 2, 6, 24, 40),
        (3, 3, 2, 6, 40, 80), (5, 3, 1, 6, 80, 112), (5, 4, 2, 6, 112, 192),
        (3, 1, 1, 6, 192, 320),
    ]

    def filters(f: int) -> int:
        f = f * width
        new = max(8, int(f + 4) // 8 * 8)
        return new + 8 if new < 0.9 * f else new

    def bn_act(x, act=True):
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x) if act else x

    inp = keras.Input((res, res, 3), batch_size=1)
    x = bn_act(layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(inp))
    cin = 32
    for i, (k, r, s, e, _, fo) in enumerate(blocks):
        fo = filters(fo)
        reps = r if i in (0, len(blocks) - 1) else int(math.ceil(depth * r))
        for j in range(reps):
            stride = s if j == 0 else 1
            h = x
            if e != 1:
                h = bn_act(layers.Conv2D(cin * e, 1, use_bias=False)(h))
            h = bn_act(layers.DepthwiseConv2D(k, strides=stride, padding="same", use_bias=False)(h))
            h = bn_act(layers.Conv2D(fo, 1, use_bias=False)(h), act=False)
            x = layers.Add()([x, h]) if stride == 1 and cin == fo else h
            cin = fo
    x = bn_act(layers.Conv2D(1280, 1, use_bias=False)(x))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(1000)(x)
    return keras.Model(inp, layers.Softmax()(x), name=f"efficientnet_lite{index}")


def _app(name: str, size: int, **kw):
    def build():
        import keras

        fn = getattr(keras.applications, name)
        return fn(weights=None, input_shape=(size, size, 3), **kw)

    return build, size


def architectures() -> dict[str, tuple]:
    """Architecture name -> (builder, input size). Names match the CSV's `model` column."""
    out: dict[str, tuple] = {}
    for a in ("0.25", "0.50", "0.75", "1.0"):
        for r in (128, 160, 192, 224):
            out[f"mobilenet_v1_{a}_{r}"] = _app("MobileNet", r, alpha=float(a))
    for a in ("0.35", "0.5", "0.75", "1.0", "1.3", "1.4"):
        for r in (96, 128, 160, 192, 224):
            out[f"mobilenet_v2_{a}_{r}"] = _app("MobileNetV2", r, alpha=float(a))
    for size in ("large", "small"):
        fn = f"MobileNetV3{size.title()}"
        for a in ("0.75", "1.0"):
            out[f"mobilenet_v3_{size}_{a}_224"] = _app(fn, 224, alpha=float(a),
                                                       include_preprocessing=False)
        out[f"mobilenet_v3_{size}_minimalistic_224"] = _app(
            fn, 224, minimalistic=True, include_preprocessing=False)
    out["nasnet_mobile"] = _app("NASNetMobile", 224)
    out["nasnet_large"] = _app("NASNetLarge", 331)
    out["inception_v3"] = _app("InceptionV3", 299)
    out["inception_resnet_v2"] = _app("InceptionResNetV2", 299)
    out["resnet_v2_101"] = _app("ResNet101V2", 299)
    out["resnet50_v1_299"] = _app("ResNet50", 299)
    out["resnet50_v2_299"] = _app("ResNet50V2", 299)
    out["resnet152_v2_299"] = _app("ResNet152V2", 299)
    out["vgg16"] = _app("VGG16", 224)
    out["vgg19"] = _app("VGG19", 224)
    for i in range(5):
        out[f"efficientnet_lite{i}"] = (lambda i=i: _efficientnet_lite(i)), (224, 240, 260, 280, 300)[i]
    return out


def needed() -> dict[str, set[str]]:
    """Model -> precisions that the published tables list for it."""
    import csv

    from tflight.devices.profiles import published_latency_path

    out: dict[str, set[str]] = {}
    with open(published_latency_path(), newline="") as f:
        for row in csv.DictReader(r for r in f if not r.startswith("#")):
            out.setdefault(row["model"], set()).add(row["precision"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="model names to (re)build")
    ap.add_argument("--force", action="store_true", help="rebuild models already cached")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    import converters
    from tflight.devices.profiles import model_work

    archs = architectures()
    want = needed()
    unknown = sorted(set(want) - set(archs))
    if unknown:
        print(f"Error: no builder for {unknown}", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    cache = json.loads(out_path.read_text()) if out_path.exists() else {"models": {}}
    cache["generated_by"] = "python benchmarks/device_models.py"
    names = args.only if args.only else sorted(want, key=lambda n: (n.startswith(("nasnet_l", "vgg", "resnet1")), n))
    for name in names:
        modes = sorted(want.get(name, {"fp32"}))
        if not args.force and all(f"{name}/{m}" in cache["models"] for m in modes):
            continue
        t0 = time.perf_counter()
        build, size = archs[name]
        model = build()
        data = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
        for mode in modes:
            kw = {}
            if mode == "int8":
                # The published quantized models take and return 8-bit tensors.
                kw = {"representative_data": data, "input_dtype": "int8", "output_dtype": "int8"}
            res = converters.convert(model, mode, validate=False, **kw)
            work = model_work(res.flatbuffer)
            cache["models"][f"{name}/{mode}"] = {
                "model": name,
                "precision": mode,
                "input_size": size,
                "params": int(model.count_params()),
                "tflite_bytes": len(res.flatbuffer),
                "macs": work.macs,
                "totals": work.totals(),
            }
            write_json(out_path, cache, indent=1, sort_keys=True)
            print(f"{name}/{mode}: {work.macs / 1e6:.0f} M MACs, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        del model
        import keras

        keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
