"""Bridge every keras.applications architecture that tf_keras also has.

For each architecture (random weights, `weights=None`) this builds the Keras 3
model, rebuilds it in tf_keras with `tflight.to_tf_keras` (verified on random
inputs), rebuilds that back with `tflight.to_keras3`, and prints one row:
parameters, pass/fail, the largest absolute output difference of the forward
rebuild and of the round trip, and the wall time of each direction (translation,
weight copy and verification included).

Input sizes are kept modest to keep the run short: each architecture runs at the
smallest size listed in `APPLICATIONS` that it accepts; the bridge does not
depend on the size.

Usage:
    .venv/bin/python benchmarks/bridge.py [--only NAME ...] [--atol 1e-5] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converters.files import write_json  # noqa: E402

# (name, input side): the smallest sizes the architectures accept are 32 (most),
# 71 (Xception) and 75 (InceptionV3).
APPLICATIONS = [
    ("MobileNet", 96),
    ("MobileNetV2", 96),
    ("MobileNetV3Small", 96),
    ("MobileNetV3Large", 96),
    ("EfficientNetB0", 96),
    ("ResNet50", 64),
    ("DenseNet121", 64),
    ("NASNetMobile", 96),
    ("Xception", 71),
    ("InceptionV3", 75),
    ("VGG16", 32),
    ("ConvNeXtTiny", 32),
]


def _round_trip_diff(source, back) -> float:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, *source.input_shape[1:])).astype("float32")
    a = np.asarray(source(x, training=False))
    b = np.asarray(back(x, training=False))
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def run_one(name: str, side: int, *, atol: float) -> dict:
    import keras

    import tflight
    from tflight import bridge

    row = {"name": name, "input": f"{side}x{side}x3", "params": None, "passed": False}
    try:
        keras.utils.set_random_seed(0)
        source = getattr(keras.applications, name)(weights=None, input_shape=(side, side, 3))
        row["params"] = int(source.count_params())
        start = time.perf_counter()
        forward = tflight.to_tf_keras(source, atol=atol)
        row["to_tf_keras_s"] = time.perf_counter() - start
        row["max_abs_diff"] = bridge.report_of(forward).max_abs_diff
        start = time.perf_counter()
        back = tflight.to_keras3(forward, atol=atol)
        row["to_keras3_s"] = time.perf_counter() - start
        row["round_trip_diff"] = _round_trip_diff(source, back)
        row["passed"] = row["round_trip_diff"] == 0.0
        if not row["passed"]:
            row["error"] = f"round trip differs by {row['round_trip_diff']:.3g}"
    except Exception as e:  # noqa: BLE001 - one failing architecture is a row, not a crash
        row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        row["traceback"] = traceback.format_exc()
    return row


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict], *, atol: float) -> str:
    header = (
        f"{'model':<17} {'input':<9} {'params':>11} {'result':<6} "
        f"{'max abs diff':>12} {'round trip':>10} {'to_tf_keras':>11} {'to_keras3':>9}"
    )
    lines = [f"tflight bridge over keras.applications (weights=None, atol {atol:g})", header]
    lines.append("-" * len(header))
    for r in rows:
        lines.append(
            f"{r['name']:<17} {r['input']:<9} {_fmt(r['params'], ',d'):>11} "
            f"{'PASS' if r['passed'] else 'FAIL':<6} {_fmt(r.get('max_abs_diff'), '.3g'):>12} "
            f"{_fmt(r.get('round_trip_diff'), '.3g'):>10} "
            f"{_fmt(r.get('to_tf_keras_s'), '.1f') + ' s':>11} "
            f"{_fmt(r.get('to_keras3_s'), '.1f') + ' s':>9}"
        )
        if r.get("error"):
            lines.append(f"    {r['error']}")
    passed = sum(r["passed"] for r in rows)
    lines.append(f"{passed}/{len(rows)} passed")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    write_json(path, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [n for n, _ in APPLICATIONS]
    parser.add_argument("--only", nargs="+", choices=names, help="run these architectures only")
    parser.add_argument("--atol", type=float, default=1e-5, help="verification tolerance")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    rows = []
    for name, side in APPLICATIONS:
        if args.only and name not in args.only:
            continue
        row = run_one(name, side, atol=args.atol)
        rows.append(row)
        print(
            f"{name}: {'PASS' if row['passed'] else 'FAIL'} ({row.get('max_abs_diff', '-')})",
            file=sys.stderr,
            flush=True,
        )
    print(render(rows, atol=args.atol))
    if args.json:
        _write_json(args.json, {"atol": args.atol, "rows": rows})
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
