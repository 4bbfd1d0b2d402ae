"""The end-to-end demo: train a CNN on bundled digits, then `optimize` it for a Pixel 4.

By default it looks for the smallest file within 1.5 points (on an 8x8 input the
model's compute is so small that the pixel4 profile's fixed per-op costs
dominate its latency estimate, so `objective="latency"` has little to find).

`run()` trains a small Keras 3 CNN on scikit-learn's bundled digits (offline,
real data) and runs `optimize` on it end to end: every applicable candidate is
built, verified and measured, the winner chosen on validation data and
measured once on held-back test digits, and the chosen `.tflite`,
`report.json` and `report.html` are written. `tflight demo` renders the
result as a table.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from tflight.optimization.inputs import OptimizeError
from tflight.optimization.result import OptimizeResult

__all__ = ["DEMO_TECHNIQUES", "digits_cnn", "run"]

# One candidate of each kind, so the demo stays within a few minutes on 2 cores:
# PTQ, the mixed-precision search, int4, channel pruning + fine-tuning, and
# clustering + QAT stored as int4 (`techniques=None` tries every candidate).
DEMO_TECHNIQUES = ("int8", "dynamic", "fp16", "mixed", "int4", "channels60-int8",
                   "cqat-int4")


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


def _prepare_output_dir(output_dir: str) -> None:
    """Creates `output_dir` and proves it writable, before any training."""
    import tempfile

    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OptimizeError(f"Output folder {output_dir!r} is a file; give a folder with -o.",
                            option="output_dir")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as e:
        raise OptimizeError(
            f"Cannot write the demo's files to {output_dir!r}: {e.strerror or e}. Choose a "
            "writable folder with -o.", option="output_dir",
        ) from e


def run(
    output_dir: str,
    *,
    epochs: int = 15,
    device: str = "pixel4",
    objective: str = "size",
    max_drop: float = 1.5,
    time_budget: float | None = None,
    techniques: tuple[str, ...] | None = DEMO_TECHNIQUES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[OptimizeResult, float, float]:
    """Trains the demo CNN and optimizes it.

    The 450 digits `load_digits` holds out are the validation split (enough
    samples to resolve the budget: 1.5 points need 199, 1 point 298); a fifth of the
    training digits is held back from the start as the test split.

    Args:
      output_dir: folder for the files (created if needed; checked before training).
      epochs: training epochs of the float model.
      device, objective, max_drop, time_budget, techniques: as for `optimize`.
      seed: seed of the split and of the weights.
      progress: called with a short line at each stage.

    Returns:
      `(result, keras_validation_accuracy, train_seconds)`.
    """
    import keras

    from tflight.datasets import load_digits
    from tflight.optimization.search import optimize

    say = progress or (lambda _m: None)
    _prepare_output_dir(output_dir)
    data = load_digits(seed=seed)
    say(f"Training a small CNN on {len(data.x_train)} digits for {epochs} epochs ...")
    model = digits_cnn(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=32, verbose=0)
    train_seconds = time.perf_counter() - start
    accuracy = float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), -1) == data.y_test))
    say(f"Keras model: validation accuracy {accuracy:.2%}; optimizing for {device} ...")
    result = optimize(model, (data.x_train, data.y_train), (data.x_test, data.y_test),
                      device=device, objective=objective, max_drop=max_drop,
                      time_budget=time_budget, techniques=techniques, output_dir=output_dir,
                      progress=progress, seed=seed)
    return result, accuracy, train_seconds
