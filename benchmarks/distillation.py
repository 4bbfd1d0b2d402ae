"""Distillation on digits: how much of the teacher-student accuracy gap does it close?

For each seed (fixed data split, held-out test set), trains on scikit-learn's
bundled 8x8 digits:

* a teacher CNN;
* the small student trained alone (cross-entropy, same epochs and optimizer);
* the student distilled with soft targets (T, alpha);
* the student distilled with soft targets + a feature loss (learned projection);
* the soft-distilled student fine-tuned with quantization-aware training while
  still distilling, converted to full int8.

Every accuracy is measured on the held-out split through LiteRT
(`converters.convert` then `converters.TFLiteModel.predict`); sizes are those of
the `.tflite` flatbuffers. The gap closed is
`(distilled - alone) / (teacher - alone)`, per seed, then mean and spread.

A second part measures what caching the teacher's outputs saves: median epoch
time with the teacher run live vs. from `Distiller.cache_teacher`, for the
digits teacher and for a large (random-weight, speed-only) teacher.

Settings are chosen on validation only (`benchmarks/_splits.py`): the
training split of `tflight.load_digits` is cut into train (80 %) and
validation (20 %); every candidate schedule (alpha x epochs, `--alphas`,
`--epoch-choices`) is scored by the distilled student's validation accuracy
on the selection seeds (`--select-seeds`), the best is kept, and only then is
the test split (the usual 450 held-out digits) unsealed and every model of the
report scored on it once. One distillation run per alpha is observed at each
candidate epoch count (as early stopping on validation would), so the grid
costs one run per alpha. Soft targets are harder to fit than one-hot labels:
the distilled student needs a long schedule to use them, and the student
trained alone gets the same number of epochs.

Usage:
  python benchmarks/distillation.py --json distillation.json
  python benchmarks/distillation.py --seeds 0 --epoch-choices 60 120 --skip-timing --json quick.json

References:
  Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015
  (MNIST: 146 test errors alone, 74 distilled, teacher 67: 91 % of the gap closed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from benchmarks._splits import Splits, digits_splits  # noqa: E402
from converters.files import write_json  # noqa: E402
from tflight._keras import keras, tf, tf_keras  # noqa: E402


def teacher_model(seed: int):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
            L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2"),
            L.Conv2D(64, 3, padding="same", activation="relu", name="conv3"),
            L.Flatten(name="flatten"),
            L.Dropout(0.3, name="dropout"),
            L.Dense(128, activation="relu", name="t_feat"),
            L.Dense(10, name="logits"),
        ],
        name="teacher",
    )


def student_model(seed: int):
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Flatten(name="flatten"),
            L.Dense(64, activation="relu", name="s_feat"),
            L.Dense(10, name="logits"),
        ],
        name="student",
    )


def big_teacher(seed: int):
    """A large CNN for the caching timings only (random weights)."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(256, 3, padding="same", activation="relu"),
            L.Conv2D(256, 3, padding="same", activation="relu"),
            L.Conv2D(256, 3, padding="same", activation="relu"),
            L.Flatten(),
            L.Dense(10),
        ],
        name="big_teacher",
    )


def shifted(x, dy: int, dx: int):
    """`x` moved by (dy, dx) pixels, zero-filled."""
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def augmented(x, y):
    """The training split plus its four one-pixel shifts (for the teacher only)."""
    shifts = ((1, 0), (-1, 0), (0, 1), (0, -1))
    return np.concatenate([x, *[shifted(x, a, b) for a, b in shifts]]), np.tile(y, 5)


def xent():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def litert_eval(model, x_test, y_test, mode="fp32", representative=None):
    result = converters.convert(model, mode, representative_data=representative)
    pred = converters.TFLiteModel(result.flatbuffer).predict(x_test)
    return float((pred.argmax(-1) == y_test).mean()), int(result.size)


def train_teacher(seed: int, train, args):
    """The big model trained with more effort (shift augmentation), on `train` only."""
    teacher = teacher_model(seed)
    teacher.compile(keras.optimizers.Adam(1e-3), xent())
    teacher.fit(*augmented(*train), epochs=args.teacher_epochs, batch_size=32, verbose=0)
    return teacher


class _WatchEpochs(keras.callbacks.Callback):
    """Validation accuracy of `student` after each of the epoch counts in `at`."""

    def __init__(self, student, validation, at):
        super().__init__()
        self.student, self.validation, self.at = student, validation, set(at)
        self.accuracy: dict[int, float] = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.at:
            x, y = self.validation
            pred = self.student.predict(x, batch_size=256, verbose=0)
            self.accuracy[epoch + 1] = float((pred.argmax(-1) == y).mean())


def select_schedule(splits: Splits, args, teachers: dict):
    """Chooses (alpha, epochs) by the distilled student's validation accuracy.

    The scorer sees the train and validation splits only (the test split is
    sealed while it runs). One run per (seed, alpha) is watched at every
    candidate epoch count.
    """
    watched: dict[tuple[int, float], dict[int, float]] = {}

    def run(seed: int, alpha: float, train, validation) -> dict[int, float]:
        if (seed, alpha) not in watched:
            if seed not in teachers:
                teachers[seed] = train_teacher(seed, train, args)
            student = student_model(seed)
            d = tflight.Distiller(teachers[seed], student, temperature=args.temperature,
                                  alpha=alpha)
            d.compile(optimizer=keras.optimizers.Adam(args.lr))
            watch = _WatchEpochs(student, validation, args.epoch_choices)
            d.fit(d.cache_teacher(*train).dataset(32, seed=seed),
                  epochs=max(args.epoch_choices), verbose=0, callbacks=[watch])
            watched[seed, alpha] = watch.accuracy
            print(f"selection seed {seed}, alpha {alpha}: validation accuracy by epochs "
                  f"{watch.accuracy}", flush=True)
        return watched[seed, alpha]

    def score(candidate, train, validation) -> float:
        alpha, epochs = candidate
        return statistics.mean(
            run(s, alpha, train, validation)[epochs] for s in args.select_seeds
        )

    candidates = [(a, e) for a in args.alphas for e in args.epoch_choices]
    return splits.select(
        candidates, score,
        rule=(f"highest mean validation accuracy of the soft-distilled student over seeds "
              f"{args.select_seeds} ({len(splits.validation[1])} validation digits)"),
    )


def run_seed(seed: int, train, test, *, alpha: float, epochs: int, args, teacher=None) -> dict:
    rows = {}
    xt, yt = train
    xv, yv = test
    fit = dict(epochs=epochs, batch_size=32, verbose=0)

    # Every student sees only the plain training split.
    teacher = teacher if teacher is not None else train_teacher(seed, train, args)

    alone = student_model(seed)
    alone.compile(keras.optimizers.Adam(args.lr), xent())
    alone.fit(xt, yt, **fit)

    def distilled(feature: bool):
        student = student_model(seed)
        d = tflight.Distiller(
            teacher,
            student,
            temperature=args.temperature,
            alpha=alpha,
            feature_layers=[("t_feat", "s_feat")] if feature else None,
            feature_weight=args.feature_weight if feature else None,
        )
        d.compile(optimizer=keras.optimizers.Adam(args.lr))
        cache = d.cache_teacher(xt, yt)
        d.fit(cache.dataset(32, seed=seed), epochs=epochs, verbose=0)
        return student

    soft = distilled(False)
    soft_feat = distilled(True) if not args.skip_feature else None

    # QAT fine-tune of the soft-distilled student, still distilling.
    qat = tflight.qat(soft)
    dq = tflight.Distiller(teacher, qat, temperature=args.temperature, alpha=alpha)
    dq.compile(optimizer=tf_keras().optimizers.Adam(args.lr / 4))
    dq.fit(dq.cache_teacher(xt, yt).dataset(32, seed=seed), epochs=args.qat_epochs, verbose=0)

    for name, model in (
        ("teacher", teacher),
        ("student_alone", alone),
        ("distilled_soft", soft),
        ("distilled_soft_feature", soft_feat),
    ):
        if model is None:
            continue
        acc, size = litert_eval(model, xv, yv)
        rows[name] = {"accuracy": acc, "params": int(model.count_params()), "tflite_bytes": size}
    acc, size = litert_eval(
        tflight.strip_quantization(qat), xv, yv, "int8", representative=xt[:256]
    )
    rows["distilled_qat_int8"] = {
        "accuracy": acc,
        "params": int(soft.count_params()),
        "tflite_bytes": size,
    }
    gap = rows["teacher"]["accuracy"] - rows["student_alone"]["accuracy"]
    for name in ("distilled_soft", "distilled_soft_feature", "distilled_qat_int8"):
        if name not in rows:
            continue
        gain = rows[name]["accuracy"] - rows["student_alone"]["accuracy"]
        rows[name]["gap_closed"] = gain / gap if gap > 0 else float("nan")
    return rows


def epoch_times(teacher, train, *, epochs: int, seed: int) -> dict:
    """Median seconds per epoch, teacher live vs. cached (one warm-up epoch each)."""
    xt, yt = train

    def distiller():
        d = tflight.Distiller(teacher, student_model(seed))
        d.compile(optimizer=keras.optimizers.Adam(1e-3))
        return d

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    live, t_live = distiller(), Timer()
    live_ds = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(32)
    live.fit(live_ds, epochs=epochs + 1, verbose=0, callbacks=[t_live])
    cached_d, t_cached = distiller(), Timer()
    start = time.perf_counter()
    cache = cached_d.cache_teacher(xt, yt)
    cache_seconds = time.perf_counter() - start
    cached_d.fit(
        cache.dataset(32, shuffle=False), epochs=epochs + 1, verbose=0, callbacks=[t_cached]
    )
    live_epoch = statistics.median(t_live.times[1:])
    cached_epoch = statistics.median(t_cached.times[1:])
    return {
        "teacher": teacher.name,
        "teacher_params": int(teacher.count_params()),
        "live_epoch_s": live_epoch,
        "cached_epoch_s": cached_epoch,
        "cache_build_s": cache_seconds,
        "epoch_speedup": live_epoch / cached_epoch,
        "speedup_over_run": (epochs * live_epoch) / (cache_seconds + epochs * cached_epoch),
        "epochs": epochs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epoch-choices", type=int, nargs="+", default=[120, 250],
                   help="candidate distillation epochs, chosen on validation")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--qat-epochs", type=int, default=5)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5],
                   help="candidate alphas, chosen on validation")
    p.add_argument("--select-seeds", type=int, nargs="+", default=[0],
                   help="seeds whose validation accuracy chooses the schedule")
    p.add_argument("--skip-feature", action="store_true",
                   help="skip the soft + feature-loss student")
    p.add_argument("--feature-weight", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--timing-epochs", type=int, default=5)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--json", help="write the figures to this path")
    args = p.parse_args(argv)

    splits = digits_splits(seed=0)
    print(
        f"digits: {len(splits.train[1])} train / {len(splits.validation[1])} validation / "
        f"{splits.test_size} test (sealed until the schedule is chosen), seeds {args.seeds}, "
        f"T={args.temperature}, alphas {args.alphas}, epochs {args.epoch_choices}"
    )
    teachers: dict = {}
    selection = select_schedule(splits, args, teachers)
    alpha, epochs = selection.choice
    print(f"chosen on validation: alpha {alpha}, {epochs} epochs "
          f"(scores {selection.to_dict()['validation_scores']})")
    test = selection.test
    per_seed = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        per_seed[seed] = run_seed(seed, splits.train, test, alpha=alpha, epochs=epochs, args=args,
                                  teacher=teachers.get(seed))
        accs = {k: round(v["accuracy"], 4) for k, v in per_seed[seed].items()}
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): {accs}")

    names = list(next(iter(per_seed.values())))
    summary = {}
    print(
        f"\n{'model':<24} {'LiteRT acc (mean ± sd)':>24} {'params':>8} {'.tflite B':>10} {'gap closed':>18}"
    )
    for name in names:
        accs = [per_seed[s][name]["accuracy"] for s in args.seeds]
        entry = {
            "accuracy_mean": statistics.mean(accs),
            "accuracy_sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "accuracy_per_seed": accs,
            "params": per_seed[args.seeds[0]][name]["params"],
            "tflite_bytes": per_seed[args.seeds[0]][name]["tflite_bytes"],
        }
        gap_text = ""
        if "gap_closed" in per_seed[args.seeds[0]][name]:
            gaps = [per_seed[s][name]["gap_closed"] for s in args.seeds]
            entry["gap_closed_per_seed"] = gaps
            entry["gap_closed_mean"] = statistics.mean(gaps)
            entry["gap_closed_sd"] = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
            gap_text = (
                f"{100 * entry['gap_closed_mean']:.0f} % ± {100 * entry['gap_closed_sd']:.0f}"
            )
        summary[name] = entry
        print(
            f"{name:<24} {100 * entry['accuracy_mean']:>15.2f} ± {100 * entry['accuracy_sd']:.2f} % "
            f"{entry['params']:>8} {entry['tflite_bytes']:>10} {gap_text:>18}"
        )
    target = summary["distilled_soft"]["gap_closed_mean"]
    print(
        f"\nsoft distillation closes {100 * target:.0f} % of the gap (target >= 50 %): "
        f"{'MET' if target >= 0.5 else 'NOT MET'}"
    )

    timings = []
    if not args.skip_timing:
        print("\nteacher caching (median epoch time, one warm-up epoch):")
        timing_teachers = [teacher_model(0), big_teacher(0)]
        timing_teachers[0].compile(keras.optimizers.Adam(1e-3), xent())
        timing_teachers[0].fit(*splits.train, epochs=3, batch_size=32, verbose=0)
        for t in timing_teachers:
            r = epoch_times(t, splits.train, epochs=args.timing_epochs, seed=0)
            timings.append(r)
            print(
                f"  {r['teacher']:<12} {r['teacher_params']:>9,} params: live {r['live_epoch_s']:.3f} s, "
                f"cached {r['cached_epoch_s']:.3f} s per epoch -> {r['epoch_speedup']:.2f}x per epoch; "
                f"cache built in {r['cache_build_s']:.2f} s, {r['speedup_over_run']:.2f}x over "
                f"{r['epochs']} epochs"
            )

    if args.json:
        out = {
            "config": vars(args),
            "selection": selection.to_dict() | {
                "validation_size": len(splits.validation[1]),
                "train_size": len(splits.train[1]),
                "test_size": splits.test_size,
            },
            "headline": {
                "gap_closed_mean": summary["distilled_soft"]["gap_closed_mean"],
                "gap_closed_sd": summary["distilled_soft"]["gap_closed_sd"],
                "distilled_accuracy_mean": summary["distilled_soft"]["accuracy_mean"],
                "student_alone_accuracy_mean": summary["student_alone"]["accuracy_mean"],
                "teacher_accuracy_mean": summary["teacher"]["accuracy_mean"],
                "chosen_alpha": alpha,
                "chosen_epochs": epochs,
                "chosen_on": "validation",
                "seeds": args.seeds,
            },
            "per_seed": {str(s): v for s, v in per_seed.items()},
            "summary": summary,
            "cache_timings": timings,
        }
        write_json(args.json, out)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
