"""LiteRT's GPU accelerator on software Vulkan, and the emulated ARM64 instruction count.

Two parts, each through the public API:

* **GPU accelerator** — the tests' tiny CNN (Conv2D 8, pool, Dense 10) trained on scikit-learn's bundled
  digits (fixed split), converted with `converters.convert(..., target="gpu")`
  (batch fixed to 1), then benchmarked with `tflight.benchmark(...,
  accelerator="gpu")` on the 450 test digits: accuracy on the accelerator
  beside the CPU accelerator's and Keras', max |GPU - CPU| and the SNR of the
  GPU outputs against the CPU's. Then MobileNetV1 (0.25, 128) from
  `keras.applications` (`weights=None`: timing only) through
  `converters.run_on_gpu`, with its 1000-class head and without it (global
  average pool): whether every op was delegated, the median latency on the
  GPU accelerator against the CPU's, and the output check (random weights:
  the outputs are tiny and fp16 may not resolve them; a failure of the
  accelerator on one variant is recorded in the JSON). The GPU accelerator runs
  on Mesa's llvmpipe software Vulkan device, so its latency is CPU time of
  shader code, **not GPU timing**, and is labelled so.
* **Emulated ARM64** — the small conv model of the tests (Conv2D 8 + pool +
  Dense, int8 with int8 inputs and outputs) run by LiteRT's AArch64 build under
  qemu (`tflight.benchmark(..., device="arm64")`), twice: guest instructions per
  invoke in LiteRT's libraries (emulated, repeatable) and whether the two runs
  count the same.

Usage:
  python benchmarks/gpu.py --json gpu.json
  python benchmarks/gpu.py --skip-arm64 --json gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def _tiny_cnn(keras, seed: int = 0):
    """The tests' 3-layer CNN (tests/conftest.py)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="tiny_cnn",
    )


def _xent(keras):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def gpu_digits(args, tmp: Path) -> dict:
    import keras

    import converters
    import tflight

    data = tflight.load_digits(seed=0)
    model = _tiny_cnn(keras, 0)
    model.compile(keras.optimizers.Adam(1e-3), _xent(keras), metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)
    keras_acc = float(np.mean(model.predict(data.x_test, verbose=0).argmax(-1) == data.y_test))
    res = converters.convert(model, "fp32", target="gpu")
    path = res.save(tmp / "digits_fp32_gpu.tflite")
    npz = tmp / "digits_test.npz"
    np.savez(npz, x=data.x_test, y=data.y_test)
    cfg = dict(runs=args.runs, min_time=0.0, warmup_runs=1, warmup_min_time=0.0)
    gpu = tflight.benchmark(str(path), inputs=str(npz), estimate=[],
                            config=tflight.BenchmarkConfig(accelerator="gpu", **cfg))
    cpu = tflight.benchmark(str(path), inputs=str(npz), estimate=[],
                            config=tflight.BenchmarkConfig(accelerator="cpu", **cfg))
    g = gpu.gpu
    return {
        "model": "the tests' tiny CNN (Conv2D 8, pool, Dense 10) trained on digits, fp32, batch 1",
        "train_epochs": args.epochs,
        "test_samples": int(gpu.samples or 0),
        "keras_accuracy": keras_acc,
        "gpu_accuracy": gpu.accuracy,
        "cpu_accuracy": cpu.accuracy,
        "gpu_max_abs_diff_vs_cpu": g.max_abs_diff,
        "gpu_snr_db_vs_cpu": g.snr_db,
        "fully_accelerated": g.fully_accelerated,
        "fallback": list(g.fallback),
        "adapter": g.adapter,
        "accelerator": gpu.accelerator,
        "timing_note": g.timing_note,
        "method": "measured on LiteRT's GPU accelerator over software Vulkan",
    }


def gpu_mobilenet(args) -> dict:
    """MobileNetV1 (0.25, 128) on the GPU accelerator: with its 1000-class head, then without.

    A failure of the accelerator on one variant is recorded, not hidden, and
    the other variant is still measured.
    """
    import keras

    import converters
    from converters.gpu import GpuUnavailableError

    out = {}
    for name, top in (("with_top", True), ("headless_avg_pool", False)):
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNet(
            alpha=0.25, input_tensor=keras.Input((128, 128, 3), batch_size=1), weights=None,
            include_top=top, pooling=None if top else "avg",
        )
        res = converters.convert(model, "fp32", validate=False)
        try:
            run = converters.run_on_gpu(res.flatbuffer, runs=args.mobilenet_runs)
        except GpuUnavailableError as e:
            out[name] = {"error": " ".join(str(e).split())[:400]}
            print(f"MobileNetV1 {name}: {out[name]}", flush=True)
            continue
        out[name] = {
            "model": f"MobileNetV1 (0.25, 128), keras.applications, weights=None, fp32, batch 1, "
                     f"{'1000-class head' if top else 'no head, global average pool'}",
            "fully_accelerated": run.fully_accelerated,
            "fallback": list(run.fallback),
            "gpu_ms_software_vulkan": run.gpu_ms,
            "cpu_ms": run.cpu_ms,
            "snr_db_vs_cpu": run.snr_db,
            "max_abs_diff_vs_cpu": run.max_abs_diff,
            "output_check_passed": run.passed,
            "output_check_failures": list(run.failures),
            "runs": args.mobilenet_runs,
            "adapter": run.adapter,
            "timing_note": run.timing_note,
            "method": "software Vulkan (llvmpipe), not GPU timing",
        }
        print(f"MobileNetV1 {name}: {out[name]}", flush=True)
    return out


def arm64_instructions(args, tmp: Path) -> dict:
    import keras

    import converters
    import tflight

    data = tflight.load_digits(seed=0)
    model = _tiny_cnn(keras, 0)
    model.compile(optimizer="adam", loss=_xent(keras))
    model.fit(data.x_train, data.y_train, epochs=3, batch_size=32, verbose=0)
    res = converters.convert(
        model, "int8", representative_data=data.x_train[:64], input_dtype="int8",
        output_dtype="int8", validate=False,
    )
    path = res.save(tmp / "cnn_int8.tflite")
    npz = tmp / "digits16.npz"
    np.savez(npz, x=data.x_test[:16], y=data.y_test[:16])
    counts, rows = [], []
    for _ in range(2):
        r = tflight.benchmark(str(path), inputs=str(npz), device="arm64", estimate=[],
                              config=tflight.BenchmarkConfig(runs=5, min_time=0.0))
        d = r.device
        counts.append(d.instructions_per_invoke)
        rows.append({
            "instructions_per_invoke": d.instructions_per_invoke,
            "outputs_match_host": d.outputs_match,
            "unsized_blocks": d.unsized_blocks,
            "cost_note": d.cost_note,
            "emulator": d.emulator,
            "runtime": d.runtime,
            "emulator_wall_s": round(d.wall_s, 1),
        })
    return {
        "model": "tests' tiny CNN (Conv2D 8, pool, Dense 10), int8 with int8 inputs/outputs",
        "runs": rows,
        "instructions_per_invoke": counts[0],
        "repeatable": counts[0] is not None and counts[0] == counts[1],
        "emulated_cpu": os.environ.get("QEMU_CPU") or "the emulator's default core",
        "method": "emulated (qemu guest instructions in LiteRT's libraries)",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="Write the results here.")
    p.add_argument("--epochs", type=int, default=10, help="Training epochs of the digits CNN.")
    p.add_argument("--runs", type=int, default=5, help="Measured invokes per digits benchmark.")
    p.add_argument("--mobilenet-runs", type=int, default=20, help="Invokes of MobileNetV1.")
    p.add_argument("--skip-gpu", action="store_true")
    p.add_argument("--skip-arm64", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out: dict = {"config": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
                 "load_average_start": os.getloadavg()}
    headline: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        if not args.skip_gpu:
            d = out["gpu_digits"] = gpu_digits(args, Path(tmp))
            print(f"digits on the GPU accelerator: {d}", flush=True)
            m = out["gpu_mobilenet_v1"] = gpu_mobilenet(args)
            print(f"MobileNetV1 0.25/128 on the GPU accelerator: {m}", flush=True)
            headline |= {
                "digits_gpu_accuracy": d["gpu_accuracy"],
                "digits_cpu_accuracy": d["cpu_accuracy"],
                "digits_keras_accuracy": d["keras_accuracy"],
                "digits_test_samples": d["test_samples"],
                "digits_gpu_max_abs_diff": d["gpu_max_abs_diff_vs_cpu"],
                "digits_gpu_snr_db": d["gpu_snr_db_vs_cpu"],
                **{
                    f"mobilenet_v1_{variant}_{key}": m[variant].get(key, m[variant].get("error"))
                    for variant in m
                    for key in ("fully_accelerated", "gpu_ms_software_vulkan", "cpu_ms",
                                "snr_db_vs_cpu")
                },
                "gpu_timing_note": d["timing_note"],
            }
        if not args.skip_arm64:
            a = out["arm64"] = arm64_instructions(args, Path(tmp))
            print(f"ARM64 (emulated): {a}", flush=True)
            headline |= {
                "arm64_instructions_per_invoke": a["instructions_per_invoke"],
                "arm64_count_repeatable": a["repeatable"],
                "arm64_method": a["method"],
            }
    out["headline"] = headline
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["load_average_end"] = os.getloadavg()
    print(json.dumps(headline, indent=2, default=str))
    if args.json:
        tmp_path = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp_path.write_text(json.dumps(out, indent=2, default=str))
        os.replace(tmp_path, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
