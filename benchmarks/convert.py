"""Conversion speed and size: tflight's shared export vs four separate conversions.

For MobileNetV2 (224x224, random weights: this measures time and size, not
accuracy) it times, in the same process and interleaved run by run:

* baseline: four `tf.lite.TFLiteConverter.from_keras_model` conversions, one per
  mode (fp32, fp16, dynamic, int8), each with the standard TFLite recipe;
* tflight: `converters.convert_many(model, [the four modes])`, which traces and
  freezes the model once and converts every mode from that.

Both use the same representative data and skip validation, so they do the same
work; the time of `convert_many` with validation (the default) is reported on
its own line. Medians over `--runs` runs. Sizes are the ratios of the fp32 file
over the quantized ones.

Targets: tflight <= 0.6x the baseline time; int8 >= 3.5x and fp16 >= 1.98x
smaller than fp32.

Usage:
  python benchmarks/convert.py [--runs 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

MODES = ["fp32", "fp16", "dynamic", "int8"]
TARGET_TIME_RATIO = 0.6
TARGET_INT8_RATIO = 3.5
TARGET_FP16_RATIO = 1.98


def _baseline(model, mode: str, calibration: np.ndarray) -> bytes:
    """One conversion with TFLite's documented post-training recipe."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":

        def representative_dataset():
            for i in range(len(calibration)):
                yield [calibration[i : i + 1]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Keras 3 prints every captured variable of its export; keep the report readable.
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--calibration-samples", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    import keras

    import converters

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(args.size, args.size, 3), classes=1000
    )
    rng = np.random.default_rng(0)
    calibration = rng.random((args.calibration_samples, args.size, args.size, 3), np.float32)

    baseline_times, tflight_times = [], []
    baseline_sizes: dict[str, int] = {}
    results = {}
    for run in range(args.runs):
        start = time.perf_counter()
        for mode in MODES:
            baseline_sizes[mode] = len(_baseline(model, mode, calibration))
        baseline_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        results = converters.convert_many(
            model, MODES, representative_data=calibration, validate=False
        )
        tflight_times.append(time.perf_counter() - start)
        print(
            f"run {run + 1}/{args.runs}: baseline {baseline_times[-1]:.1f} s, "
            f"tflight {tflight_times[-1]:.1f} s",
            flush=True,
        )

    start = time.perf_counter()
    validation_failed = False
    try:
        validated = converters.convert_many(model, MODES, representative_data=calibration)
        validation = {m: r.validation.short() for m, r in validated.items()}
    except converters.errors.ValidationError as e:
        # With random weights the softmax outputs are all about 1/1000, below
        # the int8 output step of 1/256, so int8 cannot match them: report it.
        validation = {"error": str(e)}
        validation_failed = True
    validated_time = time.perf_counter() - start

    base = statistics.median(baseline_times)
    ours = statistics.median(tflight_times)
    sizes = {m: r.size for m, r in results.items()}
    figures = {
        "model": f"MobileNetV2 {args.size}x{args.size} (weights=None)",
        "modes": MODES,
        "runs": args.runs,
        "calibration_samples": args.calibration_samples,
        "baseline_seconds": baseline_times,
        "tflight_seconds": tflight_times,
        "baseline_median_s": round(base, 2),
        "tflight_median_s": round(ours, 2),
        "time_ratio": round(ours / base, 3),
        "tflight_with_validation_s": round(validated_time, 2),
        "validation_failed": validation_failed,
        "sizes": sizes,
        "gzip_sizes": {m: r.gzip_size for m, r in results.items()},
        "baseline_sizes": baseline_sizes,
        "size_ratio_fp16": round(sizes["fp32"] / sizes["fp16"], 3),
        "size_ratio_dynamic": round(sizes["fp32"] / sizes["dynamic"], 3),
        "size_ratio_int8": round(sizes["fp32"] / sizes["int8"], 3),
        "validation": validation,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    checks = {
        "time_ratio": figures["time_ratio"] <= TARGET_TIME_RATIO,
        "size_ratio_int8": figures["size_ratio_int8"] >= TARGET_INT8_RATIO,
        "size_ratio_fp16": figures["size_ratio_fp16"] >= TARGET_FP16_RATIO,
    }
    figures["targets_met"] = checks

    def mark(ok: bool) -> str:
        return "meets target" if ok else "MISSES target"

    print()
    print(f"{figures['model']}, modes {', '.join(MODES)}, medians of {args.runs} runs")
    print(f"  4 x from_keras_model        {base:7.1f} s")
    print(f"  convert_many (one export)   {ours:7.1f} s")
    print(
        f"  ratio                       {ours / base:7.2f}x   "
        f"(<= {TARGET_TIME_RATIO}: {mark(checks['time_ratio'])})"
    )
    stopped = ", stopped by a validation failure" if validation_failed else ""
    print(f"  convert_many + validation   {validated_time:7.1f} s (one run{stopped})")
    print()
    print(f"  {'mode':<8}{'size (bytes)':>14}{'gzip':>14}{'fp32 / mode':>13}{'baseline size':>15}")
    for m in MODES:
        r = results[m]
        print(
            f"  {m:<8}{r.size:>14,}{r.gzip_size:>14,}{sizes['fp32'] / r.size:>12.2f}x"
            f"{baseline_sizes[m]:>15,}"
        )
    print(
        f"  int8 {figures['size_ratio_int8']:.2f}x (>= {TARGET_INT8_RATIO}: "
        f"{mark(checks['size_ratio_int8'])}), fp16 {figures['size_ratio_fp16']:.2f}x "
        f"(>= {TARGET_FP16_RATIO}: {mark(checks['size_ratio_fp16'])})"
    )
    print("  validation: " + "; ".join(f"{m} {v}" for m, v in figures["validation"].items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
