"""Bridge keras-hub backbones, built from their constructors, to tf_keras and back.

No preset can be downloaded here, so each backbone is built from its
constructor with random weights: a ResNet18-shaped ResNetBackbone, a DenseNet
with two dense stacks, and small MobileNet (hard_swish, squeeze-and-excite
blocks) and EfficientNet (fused-MBConv block) backbones, plus a BERT backbone,
which the bridge refuses (its transformer layers have no tf_keras
counterpart). Each row: parameters, whether the tf_keras rebuild and the round
trip agree, the largest absolute differences (forward, verified on random
inputs; round trip, on other random inputs) and the wall time per direction.

Usage:
    .venv/bin/python benchmarks/bridge_keras_hub.py [--json PATH]

The JSON has a top-level "headline": {"backbones_ok", "backbones_total",
"max_round_trip_diff", "bert_refused_with"}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converters.files import write_json  # noqa: E402


def _backbones() -> dict:
    import keras_hub

    m = keras_hub.models
    return {
        "ResNet18 (ResNetBackbone)": lambda: m.ResNetBackbone(
            input_conv_filters=[64],
            input_conv_kernel_sizes=[7],
            stackwise_num_filters=[64, 128, 256, 512],
            stackwise_num_blocks=[2, 2, 2, 2],
            stackwise_num_strides=[1, 2, 2, 2],
            block_type="basic_block",
            image_shape=(64, 64, 3),
        ),
        "DenseNetBackbone": lambda: m.DenseNetBackbone(
            stackwise_num_repeats=[2, 2], growth_rate=8, image_shape=(64, 64, 3)
        ),
        "MobileNetBackbone": lambda: m.MobileNetBackbone(
            stackwise_expansion=[[1], [4, 6]],
            stackwise_num_blocks=[1, 2],
            stackwise_num_filters=[[16], [24, 24]],
            stackwise_kernel_size=[[3], [3, 5]],
            stackwise_num_strides=[[2], [2, 1]],
            stackwise_se_ratio=[[None], [0.25, 0.25]],
            stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
            stackwise_padding=[[1], [1, 2]],
            output_num_filters=64,
            depthwise_filters=16,
            depthwise_stride=1,
            depthwise_residual=False,
            last_layer_filter=64,
            squeeze_and_excite=0.5,
            image_shape=(64, 64, 3),
        ),
        "EfficientNetBackbone": lambda: m.EfficientNetBackbone(
            stackwise_kernel_sizes=[3, 3, 5],
            stackwise_num_repeats=[1, 2, 2],
            stackwise_input_filters=[16, 16, 24],
            stackwise_output_filters=[16, 24, 40],
            stackwise_expansion_ratios=[1, 4, 6],
            stackwise_squeeze_and_excite_ratios=[0.0, 0.25, 0.25],
            stackwise_strides=[1, 2, 2],
            stackwise_block_types=["fused", "v1", "v1"],
            stackwise_force_input_filters=[0, 0, 0],
            stackwise_nores_option=[False, False, False],
            stackwise_width_coefficients=[1.0, 1.0, 1.0],
            stackwise_depth_coefficients=[1.0, 1.0, 1.0],
            input_shape=(64, 64, 3),
            num_features=128,
        ),
    }


def run_one(name: str, build) -> dict:
    import keras

    import tflight
    from tflight import bridge

    row: dict = {"name": name, "passed": False}
    try:
        keras.utils.set_random_seed(0)
        source = build()
        row["params"] = int(source.count_params())
        start = time.perf_counter()
        forward = tflight.to_tf_keras(source)
        row["to_tf_keras_s"] = time.perf_counter() - start
        row["max_abs_diff"] = bridge.report_of(forward).max_abs_diff
        start = time.perf_counter()
        back = tflight.to_keras3(forward)
        row["to_keras3_s"] = time.perf_counter() - start
        shape = tuple(source.inputs[0].shape[1:])
        x = np.random.default_rng(1).uniform(0, 1, size=(2, *shape)).astype("float32")
        a = np.asarray(source(x, training=False), dtype=np.float64)
        b = np.asarray(back(x, training=False), dtype=np.float64)
        row["round_trip_diff"] = float(np.max(np.abs(a - b)))
        row["passed"] = row["round_trip_diff"] == 0.0
    except Exception as e:  # noqa: BLE001 - one failing backbone is a row
        row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
    return row


def bert_refusal() -> str:
    import keras_hub

    import tflight

    bert = keras_hub.models.BertBackbone(
        vocabulary_size=1000,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=32,
    )
    try:
        tflight.to_tf_keras(bert)
    except tflight.errors.UnsupportedLayerError as e:
        return f"UnsupportedLayerError: {e}"
    return "bridged (unexpected)"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[dict], bert: str) -> str:
    header = (
        f"{'backbone':<26} {'params':>11} {'result':<6} {'max abs diff':>12} "
        f"{'round trip':>10} {'to_tf_keras':>11} {'to_keras3':>9}"
    )
    lines = ["tflight bridge over keras-hub backbones (constructors, random weights)", header]
    lines.append("-" * len(header))
    for r in rows:
        lines.append(
            f"{r['name']:<26} {_fmt(r.get('params'), ',d'):>11} "
            f"{'PASS' if r['passed'] else 'FAIL':<6} {_fmt(r.get('max_abs_diff'), '.3g'):>12} "
            f"{_fmt(r.get('round_trip_diff'), '.3g'):>10} "
            f"{_fmt(r.get('to_tf_keras_s'), '.1f') + ' s':>11} "
            f"{_fmt(r.get('to_keras3_s'), '.1f') + ' s':>9}"
        )
        if r.get("error"):
            lines.append(f"    {r['error']}")
    lines.append(f"BertBackbone: {bert[:160]}...")
    return "\n".join(lines)


def _write_json(path: Path, payload: dict) -> None:
    write_json(path, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    for name, build in _backbones().items():
        rows.append(run_one(name, build))
        print(f"{name}: {'PASS' if rows[-1]['passed'] else 'FAIL'}", file=sys.stderr, flush=True)
    bert = bert_refusal()
    print(render(rows, bert))
    if args.json:
        done = [r for r in rows if "round_trip_diff" in r]
        _write_json(
            args.json,
            {
                "headline": {
                    "backbones_ok": sum(r["passed"] for r in rows),
                    "backbones_total": len(rows),
                    "max_round_trip_diff": max((r["round_trip_diff"] for r in done), default=None),
                    "bert_refused_with": bert.split(":")[0],
                },
                "rows": rows,
                "bert": bert,
            },
        )
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
