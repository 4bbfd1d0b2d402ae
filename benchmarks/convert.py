"""Conversion speed and size: tflight's validated conversion vs four separate conversions.

For MobileNetV2 (3.5 M parameters, 1000-class head, `weights=None`, trained
for a few epochs on scikit-learn's digits upscaled to SIZExSIZEx3 in [-1, 1]) it
times, in the same process and interleaved run by run:

* baseline: four `tf.lite.TFLiteConverter.from_keras_model` conversions, one per
  mode (fp32, fp16, dynamic, int8), each with the standard TFLite recipe, no check;
* tflight (the headline): `converters.convert_many(model, [the four modes])` as a
  user calls it, which traces and freezes the model once, converts every mode
  from that in one child process and validates each file in LiteRT against
  Keras on 32 held-out test images;
* tflight without validation (`validate=False`), for reference.

Why a trained model: with random weights MobileNetV2 cannot be validated
meaningfully after quantization. Measured at 96x96: without batch-norm
statistics its signal vanishes through the depth (logits ~1e-11, softmax exactly
1/1000, below the int8 softmax output step 1/256: SNR 0 dB whatever the
thresholds or input range); with batch-norm statistics taken from data, its
class scores are near-ties and rounding errors are amplified (even `dynamic`,
which keeps activations float, misses 15 dB and agrees on 59 % of top-1). A
trained network has decisive outputs, as real models do; weights and graph
(and so conversion work) are those of MobileNetV2. Its batch-norm statistics
are re-estimated from training images after the short training (otherwise
they stay near their initial values and the network is almost constant, which
would make any agreement figure hollow).

Medians over `--runs` runs. Sizes are the ratios of the fp32 file over the
quantized ones. The first call of a process also starts the conversion child
process (one TensorFlow import); that one-off cost is reported separately.

Targets: validated tflight <= 0.6x the baseline time; int8 >= 3.5x and fp16 >=
1.98x smaller than fp32; every mode validated.

Usage:
  python benchmarks/convert.py [--runs 3] [--json results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converters.files import write_json  # noqa: E402

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


def _trained_mobilenet_v2(size: int, epochs: int):
    """MobileNetV2 trained briefly on the digits; returns (model, calibration, test images)."""
    import keras

    from tflight.datasets import load_digits

    data = load_digits(seed=0)

    def prep(x: np.ndarray) -> np.ndarray:
        r = max(1, size // 8)
        x = np.repeat(np.repeat(x, r, 1), r, 2)[:, :size, :size]
        return (np.repeat(x, 3, 3) * 2.0 - 1.0).astype(np.float32)

    x_train, x_test = prep(data.x_train), prep(data.x_test)
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(size, size, 3), classes=1000, classifier_activation=None
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    # A few hundred steps leave the batch-norm moving statistics (momentum
    # 0.999) near their initial values, so the inference-mode network is
    # almost constant (10 % test accuracy). Re-estimate them from one batch
    # of training images, as after any short training.
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x_train[:512], training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    accuracy = float(model.evaluate(x_test, data.y_test, verbose=0)[1])
    return model, x_train, x_test, accuracy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each side")
    parser.add_argument("--calibration-samples", type=int, default=100)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs on the digits")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    import keras

    import converters

    start = time.perf_counter()
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    converters.convert(tiny, "fp32")
    child_start = time.perf_counter() - start

    model, x_train, x_test, accuracy = _trained_mobilenet_v2(args.size, args.epochs)
    calibration = x_train[: args.calibration_samples]
    validation_data = x_test[:32]

    baseline_times, validated_times, unvalidated_times = [], [], []
    baseline_sizes: dict[str, int] = {}
    results: dict = {}
    failures: dict[str, str] = {}
    for run in range(args.runs):
        start = time.perf_counter()
        for mode in MODES:
            baseline_sizes[mode] = len(_baseline(model, mode, calibration))
        baseline_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        try:
            results = converters.convert_many(
                model, MODES, representative_data=calibration, validation_data=validation_data
            )
        except converters.errors.PartialConversionError as e:
            results = e.results
            failures = {m: str(err) for m, err in e.failures.items()}
        validated_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        converters.convert_many(model, MODES, representative_data=calibration, validate=False)
        unvalidated_times.append(time.perf_counter() - start)
        print(
            f"run {run + 1}/{args.runs}: baseline {baseline_times[-1]:.1f} s, "
            f"tflight validated {validated_times[-1]:.1f} s, "
            f"unvalidated {unvalidated_times[-1]:.1f} s",
            flush=True,
        )

    base = statistics.median(baseline_times)
    ours = statistics.median(validated_times)
    ours_unvalidated = statistics.median(unvalidated_times)
    sizes = {m: r.size for m, r in results.items()}
    validation = {m: r.validation.to_dict() for m, r in results.items()}
    ratio = lambda m: round(sizes["fp32"] / sizes[m], 3) if m in sizes and "fp32" in sizes else None  # noqa: E731
    headline = {
        "validated_time_ratio": round(ours / base, 3),
        "unvalidated_time_ratio": round(ours_unvalidated / base, 3),
        "size_ratio_int8": ratio("int8"),
        "size_ratio_fp16": ratio("fp16"),
        "modes_validated": sorted(m for m, v in validation.items() if v["passed"]),
        "int8_snr_db": None if "int8" not in results else round(results["int8"].validation.snr_db, 1),
        "int8_top1": None if "int8" not in results else results["int8"].validation.top1,
    }
    figures = {
        "headline": headline,
        "model": f"MobileNetV2 {args.size}x{args.size}x3, 1000-class head, trained "
        f"{args.epochs} epochs on digits (test accuracy {accuracy:.3f})",
        "modes": MODES,
        "runs": args.runs,
        "calibration_samples": args.calibration_samples,
        "validation_samples": len(validation_data),
        "child_start_s": round(child_start, 2),
        "baseline_seconds": baseline_times,
        "tflight_validated_seconds": validated_times,
        "tflight_unvalidated_seconds": unvalidated_times,
        "baseline_median_s": round(base, 2),
        "tflight_validated_median_s": round(ours, 2),
        "tflight_unvalidated_median_s": round(ours_unvalidated, 2),
        "sizes": sizes,
        "gzip_sizes": {m: r.gzip_size for m, r in results.items()},
        "baseline_sizes": baseline_sizes,
        "size_ratio_dynamic": ratio("dynamic"),
        "validation": validation,
        "failures": failures,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": os.getloadavg()},
    }
    checks = {
        "validated_time_ratio": headline["validated_time_ratio"] <= TARGET_TIME_RATIO,
        "size_ratio_int8": (headline["size_ratio_int8"] or 0) >= TARGET_INT8_RATIO,
        "size_ratio_fp16": (headline["size_ratio_fp16"] or 0) >= TARGET_FP16_RATIO,
        "all_validated": headline["modes_validated"] == sorted(MODES),
    }
    figures["targets_met"] = checks

    def mark(ok: bool) -> str:
        return "meets target" if ok else "MISSES target"

    print()
    print(f"{figures['model']}, modes {', '.join(MODES)}, medians of {args.runs} runs")
    print(f"  4 x from_keras_model (no check)     {base:7.1f} s")
    print(f"  convert_many, validated (headline)  {ours:7.1f} s")
    print(
        f"  ratio                               {ours / base:7.2f}x   "
        f"(<= {TARGET_TIME_RATIO}: {mark(checks['validated_time_ratio'])})"
    )
    print(f"  convert_many, validate=False        {ours_unvalidated:7.1f} s "
          f"({ours_unvalidated / base:.2f}x)")
    print(f"  conversion child start (once)       {child_start:7.1f} s")
    print()
    print(f"  {'mode':<8}{'size (bytes)':>14}{'gzip':>14}{'fp32 / mode':>13}  validation")
    for m in MODES:
        if m in results:
            r = results[m]
            print(
                f"  {m:<8}{r.size:>14,}{r.gzip_size:>14,}{sizes['fp32'] / r.size:>12.2f}x"
                f"  {r.validation.short()} on {r.validation.samples} {r.validation.sample_source}"
            )
        else:
            print(f"  {m:<8} FAILED: {failures.get(m, '')}")
    print(
        f"  int8 {headline['size_ratio_int8']}x (>= {TARGET_INT8_RATIO}: "
        f"{mark(checks['size_ratio_int8'])}), fp16 {headline['size_ratio_fp16']}x "
        f"(>= {TARGET_FP16_RATIO}: {mark(checks['size_ratio_fp16'])})"
    )
    if args.json is not None:
        write_json(args.json, figures)
        print(f"wrote {args.json}")
    return figures


if __name__ == "__main__":
    main()
