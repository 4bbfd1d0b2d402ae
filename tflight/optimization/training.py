"""Fine-tuning for the training candidates: epochs scaled to the data, an optional strategy.

Plain Keras fine-tuning (after channel pruning or low rank) runs under any
`tf.distribute` strategy: the model and its optimizer are rebuilt inside
`strategy.scope()` so their variables are mirrored, and one training loop
(`strategy.run` per global batch, losses averaged over the global batch) serves
one worker and several alike. The data are shuffled once with the seed and fed
in whole global batches in a fixed order, so every worker count takes the same
steps. (Keras 3's `fit` fails on a multi-worker distributed dataset here:
"Attempt to convert a value (PerReplica ...) to a Tensor".) TF-MOT techniques (QAT, clustering, pruning) are built by
`tflight.compress` through the Keras bridge outside any strategy scope, so
their wrapper variables would not be mirrored: under a strategy they are
refused with `OptimizeError` naming the technique.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight.optimization.inputs import OptimizeError

__all__ = ["default_epochs", "fit", "from_logits", "refuse_under_strategy", "progress_callback"]

# About this many optimizer steps per fine-tune, within [2, 12] epochs: a small
# data set gets more passes, a large one fewer.
_TARGET_STEPS = 300


def default_epochs(n_train: int, batch_size: int = 32) -> int:
    """Fine-tuning epochs scaled to the training set: ~300 steps, 2 to 12 epochs."""
    steps = max(1, math.ceil(n_train / batch_size))
    return int(min(12, max(2, math.ceil(_TARGET_STEPS / steps))))


def from_logits(model: Any) -> bool:
    """False when the model's last layer applies a softmax (probabilities), else True."""
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", "") or type(last).__name__
    return "softmax" not in name.lower()


def refuse_under_strategy(technique: str, strategy: Any) -> None:
    """Raises `OptimizeError` if a TF-MOT technique is asked to train under a strategy."""
    if strategy is None:
        return
    raise OptimizeError(
        f"{technique} cannot train under {type(strategy).__name__}: TF-MOT wraps the model "
        "(through tflight's Keras bridge) outside the strategy's scope, so its wrapper "
        "variables are not mirrored across replicas. Run this technique without a strategy; "
        "the plain fine-tuning candidates (channel pruning, low rank) do take one.",
        option="strategy", kind="strategy_unsupported", technique=technique,
    )


def progress_callback(keras: Any, say: Callable[[str], None] | None, label: str,
                      epochs: int) -> list:
    """A callback reporting each epoch with an ETA through `say` (none when `say` is None)."""
    if say is None:
        return []
    start = {"t": 0.0}

    def begin(logs: Any = None) -> None:
        start["t"] = time.perf_counter()

    def end(epoch: int, logs: Any = None) -> None:
        done = epoch + 1
        spent = time.perf_counter() - start["t"]
        eta = spent / done * (epochs - done)
        loss = (logs or {}).get("loss")
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        say(f"  {label}: epoch {done}/{epochs}{loss_text} (ETA {eta:.0f} s)")

    return [keras.callbacks.LambdaCallback(on_train_begin=begin, on_epoch_end=end)]


def fit(
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    strategy: Any = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    label: str = "fine-tune",
) -> Any:
    """Fine-tunes a copy of a Keras 3 classifier with cross-entropy; returns the copy.

    Args:
      model: the Keras 3 model (not changed).
      x: training inputs.
      y: class ids.
      epochs: passes over `x`.
      batch_size: the global batch size (split across replicas under a strategy).
      learning_rate: Adam's learning rate.
      strategy: a `tf.distribute.Strategy`, or None for the default one.
      seed: seed of the weights' copy order and of the one shuffle of the data.
      progress: called with one line per epoch.
      label: how progress names this run.

    Returns:
      The fine-tuned copy.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order].astype("int64")
    strategy = strategy if strategy is not None else tf.distribute.get_strategy()
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(copy.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits(model),
                                                         reduction=None)
    # Whole global batches in a fixed order: every worker count sees the same steps.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dist = strategy.experimental_distribute_dataset(data.with_options(options))

    def replica_step(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            per_sample = loss_fn(yb, copy(xb, training=True))
            loss = tf.nn.compute_average_loss(per_sample, global_batch_size=batch_size)
        grads = tape.gradient(loss, copy.trainable_variables)
        optimizer.apply_gradients(zip(grads, copy.trainable_variables, strict=True))
        return loss

    @tf.function
    def step(xb: Any, yb: Any) -> Any:
        losses = strategy.run(replica_step, args=(xb, yb))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    start = time.perf_counter()
    for epoch in range(epochs):
        total = count = 0.0
        for xb, yb in dist:
            total += float(step(xb, yb))
            count += 1
        if progress is not None:
            done = epoch + 1
            eta = (time.perf_counter() - start) / done * (epochs - done)
            progress(f"  {label}: epoch {done}/{epochs}, loss {total / max(count, 1):.4f} "
                     f"(ETA {eta:.0f} s)")
    return copy
