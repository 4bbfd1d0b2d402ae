"""What each compression technique buys on real data, measured through LiteRT.

Trains a small CNN on scikit-learn's bundled digits (fixed seeds, held-out test
split), applies every technique and combination with `tflight`, converts each
result with `converters`, and runs it in LiteRT. One table: test accuracy,
`.tflite` size, gzip size and ratios against the float model; the Keras-vs-
TFLite agreement of every QAT model; and the training-step time of QAT and of
pruning relative to float (median over many steps, all measured in this run).

Usage:
  python benchmarks/compression.py [--json PATH] [--epochs N] [--fine-tune N]

Targets (printed as PASS/FAIL at the end):
  * QAT int8 within 0.5 pt of float; PTQ int8 within 1.5 pt;
  * 80 % pruned + int8: gzip >= 10x smaller than the float gzip, <= 1.5 pt loss;
  * every QAT model: Keras vs TFLite accuracy within 0.3 pt;
  * training step of QAT and of pruning <= 1.3x float.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from converters.files import write_json  # noqa: E402
from tflight._keras import tf_keras  # noqa: E402

SEED = 0
BATCH = 32
ROUNDS = 5


@dataclasses.dataclass
class Row:
    name: str
    accuracy: float  # LiteRT, test split
    size: int
    gzip_size: int
    keras_accuracy: float | None = None
    agreement: float | None = None
    sparsity: float | None = None
    size_ratio: float = 0.0
    gzip_ratio: float = 0.0


def build(k):
    k.utils.set_random_seed(SEED)
    return k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            k.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            k.layers.MaxPooling2D(2, name="pool"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(256, activation="relu", name="fc"),
            k.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def compile_kwargs(lr: float):
    k = tf_keras()
    return {
        "optimizer": k.optimizers.Adam(lr),
        "loss": k.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    }


def evaluate(name, model, data, mode, *, calib, qat=False, sparse=False) -> Row:
    result = converters.convert(
        model, mode, representative_data=calib, validate=False, sparse=sparse
    )
    runner = converters.TFLiteModel(result.flatbuffer)
    lite_top = runner.predict(data.x_test).argmax(axis=1)
    row = Row(
        name=name,
        accuracy=float(np.mean(lite_top == data.y_test)),
        size=result.size,
        gzip_size=result.gzip_size,
    )
    keras_top = model.predict(data.x_test, verbose=0).argmax(axis=1)
    row.keras_accuracy = float(np.mean(keras_top == data.y_test))
    if qat:
        report = tflight.check_agreement(
            model, runner, data.x_test, y=data.y_test, min_agreement=0.0
        )
        row.agreement = report.agreement
    report = tflight.sparsity_report(model)
    row.sparsity = report.overall
    return row


class StepTimer(tf_keras().callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._t = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def step_time(model, data, *, epochs: int = 4) -> float:
    """Median seconds per training step after the first (tracing) epoch."""
    timer = StepTimer()
    steps = int(np.ceil(len(data.x_train) / BATCH))
    tflight.fit(
        model,
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=BATCH,
        verbose=0,
        shuffle=False,
        callbacks=[timer],
    )
    return statistics.median(timer.times[steps:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--epochs", type=int, default=40, help="float training epochs")
    parser.add_argument("--fine-tune", type=int, default=10, help="epochs per compression stage")
    args = parser.parse_args(argv)

    k = tf_keras()
    data = tflight.load_digits(seed=SEED)
    calib = data.x_train[:300]
    steps = int(np.ceil(len(data.x_train) / BATCH))
    ramp = steps * max(1, args.fine_tune - 2)  # reach the target, then recover
    fit_kwargs = {"batch_size": BATCH, "verbose": 0, "epochs": args.fine_tune}
    lr = 1e-4

    t0 = time.perf_counter()
    float_model = build(k)
    float_model.compile(**compile_kwargs(1e-3))
    float_model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=BATCH, verbose=0)

    rows: list[Row] = []
    rows.append(evaluate("float", float_model, data, "fp32", calib=calib))
    rows.append(evaluate("PTQ int8", float_model, data, "int8", calib=calib))

    def run(techniques):
        return (
            tflight.Pipeline(techniques)
            .fit(float_model, data.x_train, data.y_train, compile=compile_kwargs(lr), **fit_kwargs)
            .model
        )

    qat = run([tflight.QAT()])
    rows.append(evaluate("QAT int8", qat, data, "int8", calib=calib, qat=True))

    for target in (0.5, 0.8):
        pct = f"{target:.0%}"
        pruned = run([tflight.Prune(sparsity=tflight.PolynomialDecay(target, end_step=ramp))])
        rows.append(evaluate(f"pruned {pct}", pruned, data, "fp32", calib=calib))
        if target == 0.8:
            rows.append(
                evaluate(f"pruned {pct} sparse", pruned, data, "fp32", calib=calib, sparse=True)
            )
        rows.append(evaluate(f"pruned {pct} + int8", pruned, data, "int8", calib=calib))
        if target == 0.8:
            rows.append(
                evaluate(
                    f"pruned {pct} + int8 sparse", pruned, data, "int8", calib=calib, sparse=True
                )
            )

    two_four = run([tflight.Prune(m_by_n=(2, 4), unsupported="skip")])  # conv1: 1 input channel
    rows.append(evaluate("2:4", two_four, data, "fp32", calib=calib))
    rows.append(evaluate("2:4 + int8", two_four, data, "int8", calib=calib))

    for n in (16, 32):
        clustered = run([tflight.Cluster(n_clusters=n)])
        rows.append(evaluate(f"{n} clusters", clustered, data, "fp32", calib=calib))
        rows.append(evaluate(f"{n} clusters + int8", clustered, data, "int8", calib=calib))

    prune80 = tflight.Prune(sparsity=tflight.PolynomialDecay(0.8, end_step=ramp))
    pqat = run([prune80, tflight.QAT()])
    rows.append(evaluate("PQAT 80% int8", pqat, data, "int8", calib=calib, qat=True))
    pcqat = run([prune80, tflight.Cluster(n_clusters=16), tflight.QAT()])
    rows.append(evaluate("PCQAT 80%/16 int8", pcqat, data, "int8", calib=calib, qat=True))

    base = rows[0]
    for row in rows:
        row.size_ratio = base.size / row.size
        row.gzip_ratio = base.gzip_size / row.gzip_size

    # Training-step time, float vs QAT vs pruning, measured side by side.
    timed_float = tf_keras().models.clone_model(float_model)
    timed_float.set_weights(float_model.get_weights())
    timed_float.compile(**compile_kwargs(lr))
    timed_qat = tflight.quantize(float_model, compile=compile_kwargs(lr))
    timed_prune = tflight.prune(float_model, sparsity=0.5, compile=compile_kwargs(lr))
    times = {"float": [], "QAT": [], "pruning": []}
    for _ in range(ROUNDS):  # interleaved rounds: noise on a shared machine hits all alike
        times["float"].append(step_time(timed_float, data))
        times["QAT"].append(step_time(timed_qat, data))
        times["pruning"].append(step_time(timed_prune, data))
    step = {name: statistics.median(v) for name, v in times.items()}

    # ---- render
    print(
        f"\nDigits CNN ({float_model.count_params():,} params), test split n={len(data.x_test)}, "
        f"all accuracies measured in LiteRT (Keras accuracy in brackets)"
    )
    header = (
        f"{'variant':<26}{'acc %':>8}{'(keras)':>9}{'Δ pt':>7}{'size B':>10}{'gzip B':>9}"
        f"{'size×':>7}{'gzip×':>7}{'sparsity':>9}{'agree %':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        agree = f"{row.agreement:.2%}"[:-1] if row.agreement is not None else "-"
        print(
            f"{row.name:<26}{row.accuracy * 100:>8.2f}{f'({row.keras_accuracy * 100:.2f})':>9}"
            f"{(row.accuracy - base.accuracy) * 100:>+7.2f}{row.size:>10,}{row.gzip_size:>9,}"
            f"{row.size_ratio:>7.2f}{row.gzip_ratio:>7.2f}{row.sparsity:>9.1%}{agree:>9}"
        )
    print(
        f"\nTraining step (median of {ROUNDS} interleaved rounds, batch {BATCH}): "
        f"float {step['float'] * 1e3:.2f} ms, QAT {step['QAT'] * 1e3:.2f} ms "
        f"({step['QAT'] / step['float']:.2f}×), pruning {step['pruning'] * 1e3:.2f} ms "
        f"({step['pruning'] / step['float']:.2f}×)"
    )

    by_name = {row.name: row for row in rows}
    pt = lambda name: (base.accuracy - by_name[name].accuracy) * 100  # noqa: E731
    qat_rows = [row for row in rows if row.agreement is not None]
    checks = {
        "QAT int8 within 0.5 pt of float": pt("QAT int8") <= 0.5,
        "PTQ int8 within 1.5 pt of float": pt("PTQ int8") <= 1.5,
        "80% pruned + int8: gzip >= 10x smaller than float gzip": by_name[
            "pruned 80% + int8"
        ].gzip_ratio
        >= 10.0,
        "80% pruned + int8: <= 1.5 pt loss": pt("pruned 80% + int8") <= 1.5,
        "every QAT model: Keras vs TFLite accuracy within 0.3 pt": all(
            abs(row.keras_accuracy - row.accuracy) * 100 <= 0.3 for row in qat_rows
        ),
        "QAT training step <= 1.3x float": step["QAT"] / step["float"] <= 1.3,
        "pruning training step <= 1.3x float": step["pruning"] / step["float"] <= 1.3,
    }
    print()
    for label, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")

    if args.json:
        payload = {
            "params": int(float_model.count_params()),
            "test_samples": len(data.x_test),
            "rows": [dataclasses.asdict(row) for row in rows],
            "train_step_seconds": step,
            "train_step_ratio": {
                "QAT": step["QAT"] / step["float"],
                "pruning": step["pruning"] / step["float"],
            },
            "targets": checks,
        }
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
