"""Structured pruning and low-rank factorization: do the models get faster, and stay accurate?

Three parts, each measured side by side in one run:

* **Speed** — MobileNetV2 (1.0, 224) and ResNet50 from `keras.applications`
  with `weights=None` (random weights: speed and size only), 50 % of the
  convolution/Dense MACs removed by `prune_channels(flops_target=0.5,
  round_to=8)`. Uncut and cut models are converted to fp32 and int8 `.tflite`
  and timed with LiteRT's XNNPACK delegate in one child process per thread
  count, the files interleaved in every round (rotating order); the figure is
  the median over rounds of each round's median invoke time (the fastest
  single invoke is kept beside it: on a loaded machine it is the figure least
  disturbed by other processes). Beside each file:
  the latency estimated from its per-op work on the `pixel4` and `cortex-a53`
  device profiles (`tflight.profiles.estimate_latency`, labelled estimated).
  The emulated ARM64 instruction count is not measured here.
* **Accuracy** — a BatchNorm CNN trained on scikit-learn's bundled digits
  (fixed split, held-out test set), 50 % of the MACs removed with the L1
  criterion, then fine-tuned plainly or with distillation from the uncut model
  (`tflight.Distiller`); accuracy through LiteRT (fp32 `.tflite`), mean of the
  seeds. On the first seed the criteria (L1, L2, BN scale, Taylor, APoZ) are
  compared after the cut and after plain fine-tuning.
* **Low-rank** — an MLP (64-1024-1024-10) trained on digits, factorized to
  half its MACs (`factorize(macs_target=0.5)`), fine-tuned; LiteRT accuracy and
  interleaved latency against the original.

Measured (`python benchmarks/structured.py --json structured.json`, 9.2 minutes,
2-core x86-64 with AVX-512 VNNI shared with other jobs, load average 9.4):
MobileNetV2 MACs 300.8 M -> 150.1 M, fp32 1 thread 15.00 -> 8.38 ms (1.79x),
int8 1 thread 1.77 -> 1.15 ms (1.54x); ResNet50 MACs 3.86 G -> 1.93 G, fp32
1 thread 91.9 -> 57.1 ms (1.61x), int8 1.49x; pixel4 estimates 1.75x / 1.70x
(MobileNetV2 fp32 / int8) and 1.94x (ResNet50). Digits CNN, 50 % MACs removed,
8 epochs of fine-tuning: LiteRT accuracy drop 0.15 pt plain and 0.44 pt with
distillation (mean of seeds 0-2). Low-rank MLP at 49.8 % of the MACs: 2.03x
faster, 0.44 pt lower accuracy. On a machine this loaded the medians move by
tens of percent between runs; the fastest-invoke ratios are kept beside them.

Usage:
  python benchmarks/structured.py --json structured.json
  python benchmarks/structured.py --rounds 5 --seeds 0 --json quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_CHILD = """
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
spec = json.loads(sys.argv[1])
interps = []
for path in spec["paths"]:
    it = Interpreter(model_path=path, num_threads=spec["threads"])
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    if np.issubdtype(d["dtype"], np.integer):
        x = rng.integers(-128, 127, d["shape"]).astype(d["dtype"])
    else:
        x = rng.uniform(-1, 1, d["shape"]).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    for _ in range(spec["warmup"]):
        it.invoke()
    interps.append(it)
medians = [[] for _ in interps]
mins = [float("inf") for _ in interps]
n = len(interps)
for r in range(spec["rounds"]):
    for j in range(n):
        i = (j + r) % n
        it, times = interps[i], []
        for _ in range(spec["runs"]):
            t = time.perf_counter()
            it.invoke()
            times.append(time.perf_counter() - t)
        medians[i].append(float(np.median(times)) * 1e3)
        mins[i] = min(mins[i], float(np.min(times)) * 1e3)
print(json.dumps({"medians": medians, "mins": mins}))
"""


def _latency(
    paths: list[str], *, threads: int, rounds: int, runs: int
) -> tuple[list[float], list[float]]:
    """Median (over rounds) of per-round median invoke ms, and the fastest invoke, per file.

    The files are interleaved in one child process, in a rotating order.
    """
    spec = {"paths": paths, "threads": threads, "rounds": rounds, "runs": runs, "warmup": 3}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    return [statistics.median(r) for r in rows["medians"]], rows["mins"]


def _estimates(path: str) -> dict:
    from tflight.profiles import estimate_latency

    out = {}
    for profile in ("pixel4", "cortex-a53"):
        try:
            est = estimate_latency(path, profile)
            out[profile] = {"ms": round(est.ms, 3), "label": est.label}
        except Exception as e:  # noqa: BLE001 - a profile problem must not lose the run
            out[profile] = {"error": str(e)}
    return out


def _speed(args, tmp: Path) -> dict:
    import keras

    import converters
    from tflight.structured import prune_channels

    results = {}
    for name, factory in (
        ("mobilenetv2", lambda: keras.applications.MobileNetV2(weights=None)),
        ("resnet50", lambda: keras.applications.ResNet50(weights=None)),
    ):
        keras.utils.set_random_seed(0)
        model = factory()
        start = time.perf_counter()
        cut = prune_channels(model, flops_target=0.5, round_to=8)
        cut_seconds = time.perf_counter() - start
        print(f"{name}: cut in {cut_seconds:.1f} s, MACs {cut.macs_ratio:.1%}", flush=True)
        calib = np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
        files, check = {}, {}
        for label, m in (("uncut", model), ("cut", cut.model)):
            conv = converters.convert_many(
                m, ["fp32", "int8"], representative_data=calib, validate=False
            )
            for mode, res in conv.items():
                path = tmp / f"{name}_{label}_{mode}.tflite"
                path.write_bytes(res.flatbuffer)
                files[f"{label}_{mode}"] = str(path)
            lite = converters.TFLiteModel(conv["fp32"].flatbuffer).predict(calib[:2])
            check[label] = float(np.max(np.abs(lite - np.asarray(m(calib[:2], training=False)))))
            print(f"{name} {label}: converted", flush=True)
        entry = {
            "macs_before": cut.macs_before,
            "macs_after": cut.macs_after,
            "macs_ratio": cut.macs_ratio,
            "params_before": cut.params_before,
            "params_after": cut.params_after,
            "cut_seconds": round(cut_seconds, 2),
            "fp32_tflite_vs_keras_max_abs_diff": check,
            "size_bytes": {k: os.path.getsize(p) for k, p in files.items()},
            "estimated_ms": {k: _estimates(p) for k, p in files.items()},
            "latency_ms": {},
            "latency_min_ms": {},
            "speedup": {},
            "speedup_of_min": {},
        }
        keys = list(files)
        for threads in (1, 2):
            ms, fastest = _latency(
                [files[k] for k in keys], threads=threads, rounds=args.rounds, runs=args.runs
            )
            lat = dict(zip(keys, ms, strict=True))
            low = dict(zip(keys, fastest, strict=True))
            entry["latency_ms"][f"{threads}t"] = {k: round(v, 3) for k, v in lat.items()}
            entry["latency_min_ms"][f"{threads}t"] = {k: round(v, 3) for k, v in low.items()}
            for mode in ("fp32", "int8"):
                entry["speedup"][f"{mode}_{threads}t"] = round(
                    lat[f"uncut_{mode}"] / lat[f"cut_{mode}"], 3
                )
                entry["speedup_of_min"][f"{mode}_{threads}t"] = round(
                    low[f"uncut_{mode}"] / low[f"cut_{mode}"], 3
                )
            print(f"{name} {threads} thread(s): {entry['latency_ms'][f'{threads}t']}", flush=True)
        for mode in ("fp32", "int8"):
            est = entry["estimated_ms"]
            entry["speedup"][f"{mode}_pixel4_estimated"] = round(
                est[f"uncut_{mode}"]["pixel4"].get("ms", float("nan"))
                / est[f"cut_{mode}"]["pixel4"].get("ms", float("nan")),
                3,
            )
        results[name] = entry
    return results


def _digits_cnn(keras, seed: int):
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    i = keras.Input((8, 8, 1))
    x = i
    for filters in (32, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, layers.Dense(10)(x), name="digits_cnn")


def _lite_accuracy(model, data) -> float:
    import converters

    out = converters.convert(model, "fp32")
    pred = converters.TFLiteModel(out.flatbuffer).predict(data.x_test, batch_size=64)
    return float(np.mean(np.argmax(pred, -1) == data.y_test) * 100)


def _digits(args) -> dict:
    import keras

    import tflight
    from tflight.structured import fine_tune, prune_channels

    data = tflight.load_digits(seed=0)
    xy = (data.x_train, data.y_train)
    seeds, criteria = [], {}
    for seed in args.seeds:
        model = _digits_cnn(keras, seed)
        fine_tune(model, *xy, epochs=args.epochs, learning_rate=1e-3)
        base = _lite_accuracy(model, data)
        row = {"seed": seed, "uncut": base}
        for method, teacher in (("plain", None), ("distilled", model)):
            keras.utils.set_random_seed(seed)
            cut = prune_channels(model, flops_target=0.5)
            row["macs_ratio"] = cut.macs_ratio
            row["params"] = [cut.params_before, cut.params_after]
            row["after_cut"] = _lite_accuracy(cut.model, data)
            fine_tune(
                cut.model, *xy, teacher=teacher, epochs=args.ft_epochs, learning_rate=5e-4
            )
            row[method] = _lite_accuracy(cut.model, data)
        print(f"digits seed {seed}: {row}", flush=True)
        seeds.append(row)
        if seed == args.seeds[0]:
            for name in ("l1", "l2", "bn", "taylor", "apoz"):
                keras.utils.set_random_seed(seed)
                cut = prune_channels(
                    model, flops_target=0.5, importance=name, data=(data.x_train, data.y_train)
                )
                after = _lite_accuracy(cut.model, data)
                fine_tune(cut.model, *xy, epochs=args.ft_epochs, learning_rate=5e-4)
                criteria[name] = {"after_cut": after, "fine_tuned": _lite_accuracy(cut.model, data)}
                print(f"criterion {name}: {criteria[name]}", flush=True)

    def mean(key):
        return float(np.mean([r["uncut"] - r[key] for r in seeds]))

    return {
        "seeds": seeds,
        "drop_pt_plain": mean("plain"),
        "drop_pt_distilled": mean("distilled"),
        "drop_pt_after_cut": mean("after_cut"),
        "criteria_seed0": criteria,
        "fine_tune_epochs": args.ft_epochs,
        "train_epochs": args.epochs,
    }


def _lowrank(args, tmp: Path) -> dict:
    import keras

    import converters
    import tflight
    from tflight.lowrank import factorize
    from tflight.structured import fine_tune

    data = tflight.load_digits(seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(1024, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp",
    )
    fine_tune(model, data.x_train, data.y_train, epochs=args.epochs)
    base = _lite_accuracy(model, data)
    result = factorize(model, macs_target=0.5)
    after = _lite_accuracy(result.model, data)
    fine_tune(result.model, data.x_train, data.y_train, epochs=args.ft_epochs, learning_rate=5e-4)
    tuned = _lite_accuracy(result.model, data)
    paths = []
    for label, m in (("original", model), ("lowrank", result.model)):
        path = tmp / f"mlp_{label}.tflite"
        path.write_bytes(converters.convert(m, "fp32").flatbuffer)
        paths.append(str(path))
    ms, fastest = _latency(paths, threads=1, rounds=args.rounds, runs=args.runs * 20)
    return {
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "layers": result.to_dict()["layers"],
        "accuracy": {"original": base, "after_factorization": after, "fine_tuned": tuned},
        "accuracy_drop_pt": base - tuned,
        "latency_ms_1t": {"original": ms[0], "lowrank": ms[1]},
        "speedup_1t": ms[0] / ms[1],
        "latency_min_ms_1t": {"original": fastest[0], "lowrank": fastest[1]},
        "speedup_of_min_1t": fastest[0] / fastest[1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--rounds", type=int, default=7, help="Interleaved timing rounds.")
    parser.add_argument("--runs", type=int, default=15, help="Invokes per file per round.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40, help="Training epochs (digits).")
    parser.add_argument("--ft-epochs", type=int, default=8, help="Fine-tuning epochs.")
    parser.add_argument("--skip-speed", action="store_true", help="Skip MobileNetV2/ResNet50.")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out: dict = {"config": vars(args) | {"json": str(args.json)}}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            out["speed"] = _speed(args, Path(tmp))
        out["digits"] = _digits(args)
        out["lowrank_mlp"] = _lowrank(args, Path(tmp))
    headline = {
        "digits_accuracy_drop_pt": round(out["digits"]["drop_pt_plain"], 2),
        "digits_accuracy_drop_pt_distilled": round(out["digits"]["drop_pt_distilled"], 2),
        "lowrank_mlp_speedup_1t": round(out["lowrank_mlp"]["speedup_1t"], 3),
        "lowrank_mlp_accuracy_drop_pt": round(out["lowrank_mlp"]["accuracy_drop_pt"], 2),
        "lowrank_mlp_macs_ratio": round(
            out["lowrank_mlp"]["macs_after"] / out["lowrank_mlp"]["macs_before"], 3
        ),
    }
    if "speed" in out:
        s = out["speed"]
        headline = {
            "mobilenetv2_fp32_speedup_1t": s["mobilenetv2"]["speedup"]["fp32_1t"],
            "mobilenetv2_int8_speedup_1t": s["mobilenetv2"]["speedup"]["int8_1t"],
            "mobilenetv2_fp32_speedup_2t": s["mobilenetv2"]["speedup"]["fp32_2t"],
            "mobilenetv2_int8_speedup_2t": s["mobilenetv2"]["speedup"]["int8_2t"],
            "resnet50_fp32_speedup_1t": s["resnet50"]["speedup"]["fp32_1t"],
            "resnet50_int8_speedup_1t": s["resnet50"]["speedup"]["int8_1t"],
            "resnet50_fp32_speedup_2t": s["resnet50"]["speedup"]["fp32_2t"],
            "resnet50_int8_speedup_2t": s["resnet50"]["speedup"]["int8_2t"],
            "mobilenetv2_fp32_speedup_of_min_1t": s["mobilenetv2"]["speedup_of_min"]["fp32_1t"],
            "mobilenetv2_int8_speedup_of_min_1t": s["mobilenetv2"]["speedup_of_min"]["int8_1t"],
            "resnet50_fp32_speedup_of_min_1t": s["resnet50"]["speedup_of_min"]["fp32_1t"],
            "mobilenetv2_macs_ratio": round(s["mobilenetv2"]["macs_ratio"], 3),
            "resnet50_macs_ratio": round(s["resnet50"]["macs_ratio"], 3),
        } | headline
    out["headline"] = headline
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["load_average"] = os.getloadavg()
    print(json.dumps(headline, indent=2))
    if args.json:
        tmp_path = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp_path.write_text(json.dumps(out, indent=2, default=float))
        os.replace(tmp_path, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
