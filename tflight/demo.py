"""The end-to-end demo: train on bundled digits, convert, verify, measure.

`run()` trains a small Keras 3 CNN on scikit-learn's bundled digits, converts it
to fp32, fp16, dynamic-range and full-int8 `.tflite` files (each verified
against the Keras model by `converters`), and measures the held-out accuracy of
every file through LiteRT. `tflight demo` renders the result as a table.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DemoRow", "DemoResult", "digits_cnn", "run"]

_MODES = ("fp32", "fp16", "dynamic", "int8")


@dataclasses.dataclass(frozen=True)
class DemoRow:
    """One `.tflite` variant of the demo model."""

    name: str
    path: str
    size: int
    gzip_size: int
    accuracy: float
    validation: str


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """What `run()` measured."""

    keras_accuracy: float
    rows: tuple[DemoRow, ...]
    train_seconds: float
    num_test: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints one table: size, ratio vs fp32, and test accuracy through LiteRT."""
        base = self.rows[0].size
        print_fn(
            f"Keras model: test accuracy {self.keras_accuracy:.2%} on {self.num_test} held-out "
            f"digits (trained in {self.train_seconds:.1f} s)"
        )
        header = f"{'variant':<24}{'size':>10}{'ratio':>8}{'gzip':>10}{'accuracy':>10}  validation"
        print_fn(header)
        print_fn("-" * len(header))
        for row in self.rows:
            print_fn(
                f"{row.name:<24}{_kib(row.size):>10}{base / row.size:>7.2f}x"
                f"{_kib(row.gzip_size):>10}{row.accuracy:>10.2%}  {row.validation}"
            )


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def digits_cnn(*, seed: int = 0, width: int = 16):
    """A small Keras 3 CNN for 8x8x1 digits with logits output."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(width, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def run(
    output_dir: str,
    *,
    epochs: int = 15,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Trains, converts, verifies and measures the demo model.

    Args:
      output_dir: directory for the `.tflite` files (created if needed).
      epochs: training epochs of the float model.
      seed: seed of the split and of the weights.
      progress: called with a short line at each stage.

    Returns:
      A `DemoResult`.
    """
    import time

    import keras

    import converters
    from tflight.datasets import load_digits

    say = progress or (lambda _msg: None)
    os.makedirs(output_dir, exist_ok=True)
    data = load_digits(seed=seed)

    say(f"Training a small CNN on {len(data.x_train)} digits ...")
    model = digits_cnn(seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    train_seconds = time.perf_counter() - start
    keras_acc = _accuracy(model.predict(data.x_test, verbose=0), data.y_test)

    say("Converting to " + ", ".join(_MODES) + " and verifying each in LiteRT ...")
    results = converters.convert_many(
        model, _MODES, representative_data=data.x_train[:200], sample_data=data.x_test[:64]
    )
    rows = []
    for mode in _MODES:
        result = results[mode]
        path = os.path.join(output_dir, f"digits_{mode}.tflite")
        result.save(path)
        acc = _accuracy(converters.TFLiteModel(result.flatbuffer).predict(data.x_test), data.y_test)
        rows.append(
            DemoRow(
                name=mode,
                path=path,
                size=result.size,
                gzip_size=result.gzip_size,
                accuracy=acc,
                validation=_validation_text(result),
            )
        )
    return DemoResult(
        keras_accuracy=keras_acc,
        rows=tuple(rows),
        train_seconds=train_seconds,
        num_test=len(data.x_test),
    )


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _validation_text(result: Any) -> str:
    report = getattr(result, "validation", None)
    if report is None:
        return "not run"
    summary = getattr(report, "short", None)
    return summary() if callable(summary) else str(report)
