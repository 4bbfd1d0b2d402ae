"""The end-to-end demo: train on bundled digits, compress, convert, verify, measure.

`run()` trains a small Keras 3 CNN on scikit-learn's bundled digits, converts it
to fp32, fp16, dynamic-range and full-int8 `.tflite` files (each verified
against the Keras model by `converters`), then compresses it with the best
combination the compression benchmark found -- prune to 80 % sparsity, share
16 values per kernel, quantization-aware training (PCQAT) -- and converts that
to int8 with the Keras-vs-LiteRT agreement check. Every file's held-out
accuracy is measured through LiteRT. `tflight demo` renders the result as a
table.
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
        """Prints one table: size and gzip size with ratios vs fp32, accuracy through LiteRT."""
        base, base_gz = self.rows[0].size, self.rows[0].gzip_size
        print_fn(
            f"Keras model: test accuracy {self.keras_accuracy:.2%} on {self.num_test} held-out "
            f"digits (trained in {self.train_seconds:.1f} s)"
        )
        header = (
            f"{'variant':<14}{'size':>11}{'ratio':>8}{'gzip':>11}{'ratio':>8}{'accuracy':>10}"
            "  validation"
        )
        print_fn(header)
        print_fn("-" * len(header))
        for row in self.rows:
            print_fn(
                f"{row.name:<14}{_kib(row.size):>11}{base / row.size:>7.2f}x"
                f"{_kib(row.gzip_size):>11}{base_gz / row.gzip_size:>7.2f}x"
                f"{row.accuracy:>10.2%}  {row.validation}"
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
    compress_epochs: int = 6,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> DemoResult:
    """Trains, converts, verifies and measures the demo model.

    Args:
      output_dir: directory for the `.tflite` files (created if needed).
      epochs: training epochs of the float model.
      compress_epochs: fine-tuning epochs of each compression stage (0 skips
        the compression row).
      seed: seed of the split and of the weights.
      progress: called with a short line at each stage.

    Returns:
      A `DemoResult`.

    Raises:
      TflightError: `output_dir` cannot be created or written to (checked
        before any training).
    """
    import time

    import keras

    import converters
    from tflight.datasets import load_digits

    say = progress or (lambda _msg: None)
    _prepare_output_dir(output_dir)
    data = load_digits(seed=seed)

    say(f"Training a small CNN on {len(data.x_train)} digits ...")
    model = digits_cnn(seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=_epoch_progress(keras, say, epochs) if progress else None,
    )
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
    if compress_epochs > 0:
        rows.append(_pcqat_row(model, data, output_dir, epochs=compress_epochs, say=say))
    return DemoResult(
        keras_accuracy=keras_acc,
        rows=tuple(rows),
        train_seconds=train_seconds,
        num_test=len(data.x_test),
    )


def _prepare_output_dir(output_dir: str) -> None:
    """Creates `output_dir` and proves it writable, before any training."""
    import tempfile

    from tflight.errors import TflightError

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise TflightError(
            f"Output folder {output_dir!r} is a file; give a folder for the .tflite files."
        )
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise TflightError(
            f"Cannot write the demo's files to {output_dir!r}: {e.strerror or e}. Choose a "
            "writable folder with -o."
        ) from e


def _pcqat_row(model: Any, data: Any, output_dir: str, *, epochs: int, say: Callable) -> DemoRow:
    """Prune 80 % -> cluster (16) -> QAT, then int8 with the agreement check."""
    import keras

    import converters
    import tflight
    from tflight._keras import tf_keras

    say("Compressing: prune 80 % -> 16 clusters -> quantization-aware training ...")
    batch = 32
    steps = -(-len(data.x_train) // batch)
    pipeline = tflight.Pipeline(
        [
            tflight.Prune(
                sparsity=tflight.PolynomialDecay(0.8, end_step=max(1, epochs - 2) * steps)
            ),
            tflight.Cluster(n_clusters=16),
            tflight.QAT(),
        ]
    )
    out = pipeline.fit(
        model,
        data.x_train,
        data.y_train,
        compile={
            "optimizer": keras.optimizers.Adam(1e-4),
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
        epochs=epochs,
        batch_size=batch,
        verbose=0,
        callbacks=_epoch_progress(tf_keras(), say, epochs, stages=3),
    )
    result = converters.convert(
        out.model, "int8", representative_data=data.x_train[:300], sample_data=data.x_test[:64]
    )
    # Raises if the int8 file disagrees with the QAT Keras model past the threshold.
    agreement = tflight.check_agreement(out.model, result, data.x_test, y=data.y_test)
    path = os.path.join(output_dir, "digits_pcqat_int8.tflite")
    result.save(path)
    acc = _accuracy(converters.TFLiteModel(result.flatbuffer).predict(data.x_test), data.y_test)
    return DemoRow(
        name="pcqat int8",
        path=path,
        size=result.size,
        gzip_size=result.gzip_size,
        accuracy=acc,
        validation=f"{_validation_text(result)}; Keras agreement {agreement.agreement:.1%}",
    )


def _epoch_progress(k: Any, say: Callable[[str], None], epochs: int, *, stages: int = 1) -> list:
    """One Keras callback (of module `k`'s generation) that reports each epoch through `say`."""
    seen = {"stage": 0}

    def begin(logs: Any = None) -> None:
        seen["stage"] += 1

    def end(epoch: int, logs: Any = None) -> None:
        where = f"stage {seen['stage']}/{stages}, " if stages > 1 else ""
        loss = (logs or {}).get("loss")
        say(f"  {where}epoch {epoch + 1}/{epochs}" + (f": loss {loss:.4f}" if loss else ""))

    return [k.callbacks.LambdaCallback(on_train_begin=begin, on_epoch_end=end)]


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _validation_text(result: Any) -> str:
    report = getattr(result, "validation", None)
    if report is None:
        return "not run"
    summary = getattr(report, "short", None)
    return summary() if callable(summary) else str(report)
