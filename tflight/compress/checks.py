"""Checks on training data and on trained weights, before and after training.

In-memory arrays are checked against the model before the first epoch
(shape, dtype, finiteness, label range), and a fine-tune that diverged
(non-finite loss or weights) is reported as such, not as a later failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tflight.errors import CompressionError

__all__ = [
    "check_classifier_data",
    "check_data",
    "check_finite",
    "n_samples",
    "per_stage",
    "rows",
    "split_rows",
]

def check_finite(model: Any, history: dict[str, list[float]] | None = None, *, stage: str) -> None:
    """Raises when training produced a non-finite loss or non-finite weights.

    Args:
      model: the trained (wrapped) model.
      history: `History.history` of the fit, if any.
      stage: the name of the stage, for the message.

    Raises:
      CompressionError: NaN or inf in the loss or in a weight.
    """
    bad_loss = [
        key
        for key, values in (history or {}).items()
        if values and not np.all(np.isfinite(np.asarray(values, dtype=np.float64)))
    ]
    bad_weights = [
        w.name
        for w in model.weights
        if not np.all(np.isfinite(np.asarray(w.numpy(), dtype=np.float64)))
    ]
    if bad_loss or bad_weights:
        found = []
        if bad_loss:
            found.append(f"non-finite {', '.join(bad_loss)}")
        if bad_weights:
            found.append(f"NaN/inf in {len(bad_weights)} weight(s) (first: {bad_weights[0]})")
        raise CompressionError(
            f"Training diverged in {stage}: {'; '.join(found)}. Check the training data for NaN "
            "or inf values (np.isfinite(x).all()), scale the inputs, or lower the learning rate."
        )


def check_data(model: Any, x: Any, y: Any, compile: dict[str, Any]) -> None:
    """Checks in-memory training arrays against the model before any training.

    Datasets and generators are left to Keras; arrays (or lists/dicts of
    arrays) are checked for shape, dtype, finiteness and, with a sparse
    categorical loss on a single output, the label range.
    """
    if x is None or _is_stream(x):
        return
    arrays = _flat_arrays(x, model, "x")
    if arrays is None:
        return
    if len(arrays) != len(model.inputs):
        raise CompressionError(
            f"`x` holds {len(arrays)} array(s) but model {model.name!r} has "
            f"{len(model.inputs)} input(s) ({', '.join(str(tuple(t.shape)) for t in model.inputs)})."
        )
    n = None
    for (name, arr), ref in zip(arrays, model.inputs, strict=True):
        _check_array(arr, name)
        want = tuple(ref.shape)[1:]
        got = tuple(arr.shape)[1:]
        if len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=False)
        ):
            raise CompressionError(
                f"`{name}` has samples of shape {got} but model {model.name!r} expects "
                f"{tuple(d if d is not None else 'None' for d in want)}; reshape the data or "
                "rebuild the model's Input."
            )
        n = len(arr) if n is None else n
    if y is None:
        return
    outputs = _flat_arrays(y, model, "y", outputs=True)
    if outputs is None:
        return
    for name, arr in outputs:
        _check_array(arr, name)
        if n is not None and len(arr) != n:
            raise CompressionError(f"`{name}` has {len(arr)} samples but `x` has {n}.")
    loss = compile.get("loss")
    loss_name = (loss if isinstance(loss, str) else type(loss).__name__).lower()
    if "sparse" in loss_name and len(outputs) == 1 and len(model.outputs) == 1:
        name, labels = outputs[0]
        classes = model.outputs[0].shape[-1]
        if classes is not None and labels.size:
            low, high = labels.min(), labels.max()
            if low < 0 or high >= classes or not np.all(np.equal(np.mod(labels, 1), 0)):
                raise CompressionError(
                    f"`{name}` holds labels from {low} to {high}, but the sparse categorical "
                    f"loss needs integer class ids in [0, {classes - 1}] for the model's "
                    f"{classes} outputs. Map the labels to 0..{classes - 1}."
                )


def _is_stream(x: Any) -> bool:
    import tensorflow as tf

    return (
        isinstance(x, tf.data.Dataset) or hasattr(x, "__next__") or type(x).__name__ == "PyDataset"
    )


def _flat_arrays(
    value: Any, model: Any, arg: str, *, outputs: bool = False
) -> list[tuple[str, np.ndarray]] | None:
    if isinstance(value, dict):
        names = model.output_names if outputs else model.input_names
        order = [k for k in names if k in value] or list(value)
        return [(f"{arg}[{k!r}]", np.asarray(value[k])) for k in order]
    if isinstance(value, list | tuple):
        return [(f"{arg}[{i}]", np.asarray(v)) for i, v in enumerate(value)]
    try:
        return [(arg, np.asarray(value))]
    except Exception:  # noqa: BLE001 - not array-like: leave it to Keras
        return None


def _check_array(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise CompressionError(
            f"`{name}` must hold numbers, got dtype {arr.dtype}; convert it with "
            "np.asarray(..., dtype=np.float32) (token ids: int32)."
        )
    if arr.ndim == 0:
        raise CompressionError(f"`{name}` must be a batch of samples, got a scalar.")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise CompressionError(
            f"`{name}` contains {bad} NaN or inf value(s); training on them makes every weight "
            "NaN. Clean or impute the data first (np.isfinite(x).all() must hold)."
        )


def per_stage(epochs: int | Iterable[int], n: int) -> list[int]:
    values = [epochs] * n if isinstance(epochs, int) else list(epochs)
    if len(values) != n or not all(isinstance(e, int) and e >= 1 for e in values):
        raise CompressionError(
            f"`epochs` must be a positive int or {n} positive ints (one per technique), "
            f"got {epochs!r}."
        )
    return values


# --------------------------------------------------------------------------
# A one-output classifier and its arrays (what `compress_to_tflite` takes).


def n_samples(x: Any) -> int:
    """Examples in `x`: one array, or a list of arrays (one per model input)."""
    return len(x[0]) if isinstance(x, list) else len(x)


def rows(x: Any, index: Any) -> Any:
    """The same rows of one array or of each array of a list."""
    return [a[index] for a in x] if isinstance(x, list) else x[index]


def split_rows(x: Any, y: Any, holdout: float, *, seed: int = 0) -> tuple[Any, Any, Any, Any]:
    """A random hold-out split of one array or of a list of input arrays (same rows in each).

    Returns:
      `(x_train, y_train, x_held, y_held)`; the held-out part has
      `round(holdout * n)` examples, at least one.
    """
    from tflight import _io

    if not isinstance(holdout, int | float) or not 0 < holdout < 1:
        raise CompressionError(
            f"`holdout` must be a fraction in (0, 1), got {holdout!r}.",
            option="holdout",
            kind="bad_argument",
        )
    index = np.arange(n_samples(x))
    (train, y_train), (held, y_held) = _io.split_holdout(index, np.asarray(y), holdout, seed=seed)
    return rows(x, train), y_train, rows(x, held), y_held


def check_classifier_data(model: Any, x: Any, source: str) -> None:
    """Raises unless `model` has one output and `x` fits its inputs.

    Single-input models take an array; a model with k inputs takes a list of k
    arrays (`x0` ... `x{k-1}` in an `.npz`).

    Args:
      model: the classifier.
      x: an array or a list of arrays.
      source: where `x` came from, for the messages (a file path, or `x`).
    """
    from tflight import _io

    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) > 1:
        names = ", ".join(repr(n) for n in (getattr(model, "output_names", None) or []))
        raise CompressionError(
            f"The model {model.name!r} has {len(outputs)} outputs ({names}); compress trains "
            "classifiers with one output and one label per example. Compress a multi-output "
            "model from Python with tflight.Pipeline (it takes a loss per output), or save "
            "one head on its own.",
            kind="multi_output",
        )
    if not isinstance(x, list):
        _io.check_input_shape(model, x, source, error=CompressionError)
        return
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != len(x):
        raise CompressionError(
            f"{source!r} holds {len(x)} input array(s) (x0 ... x{len(x) - 1}) but model "
            f"{model.name!r} has {len(inputs)} input(s); save one array per input, in the "
            "model's input order.",
            kind="bad_data",
        )
    for i, (tensor, a) in enumerate(zip(inputs, x, strict=True)):
        expected, got = tuple(tensor.shape[1:]), tuple(a.shape[1:])
        if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got, strict=True)
        ):
            raise CompressionError(
                f"`x{i}` in {source!r} has examples of shape {got}, but input {i} of model "
                f"{model.name!r} takes {expected} (None = any); pass data of shape "
                f"(n, *{expected}).",
                kind="bad_data",
            )
