"""Verification: how closely a model and its rebuild in the other generation agree.

`compare` runs both models in inference mode on the same random inputs and
returns a `BridgeReport` with the largest output difference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight._keras import is_keras3_model, tf
from tflight.bridge.generations import Direction
from tflight.errors import BridgeError

__all__ = ["BridgeReport", "compare", "DEFAULT_ATOL", "DEFAULT_RTOL"]

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4
# Size given to unknown (None) non-batch dimensions when making random inputs.
_FREE_DIM = 32


@dataclasses.dataclass(frozen=True)
class BridgeReport:
    """How closely two models (one per Keras generation) agree.

    Attributes:
        source: Name of the source model.
        target: Name of the rebuilt model.
        direction: Which way the bridge went.
        max_abs_diff: Largest absolute difference over all outputs.
        output_diffs: Largest absolute difference per output, in output order.
        atol: The absolute tolerance the check used.
        rtol: The tolerance relative to the source's largest output magnitude
            (`scale`): float32 rounding grows with the outputs and with depth
            (a trained MobileNetV2 differs by ~1e-5 between the two Keras).
        scale: Largest absolute output of the source model.
        num_layers: Layers translated (nested models counted through).
        seconds: Wall time of the translation and check.
    """

    source: str
    target: str
    direction: Direction
    max_abs_diff: float
    output_diffs: tuple[float, ...]
    atol: float
    num_layers: int = 0
    seconds: float = 0.0
    rtol: float = 0.0
    scale: float = 0.0

    @property
    def tolerance(self) -> float:
        """The largest difference that passes: `atol + rtol * scale`."""
        return self.atol + self.rtol * self.scale

    @property
    def passed(self) -> bool:
        """True if every output agrees within `tolerance`."""
        return bool(self.max_abs_diff <= self.tolerance)

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints a few lines: the verdict, the difference, the layer count."""
        verdict = "PASS" if self.passed else "FAIL"
        print_fn(f"{self.direction.value}: {self.source} -> {self.target}: {verdict}")
        if self.rtol:
            print_fn(
                f"  max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}: atol "
                f"{self.atol:g} + rtol {self.rtol:g} x largest output {self.scale:.3g})"
            )
        else:
            print_fn(f"  max abs diff {self.max_abs_diff:.3g} (atol {self.atol:g})")
        if len(self.output_diffs) > 1:
            print_fn("  per output: " + ", ".join(f"{d:.3g}" for d in self.output_diffs))
        print_fn(f"  layers translated: {self.num_layers}, {self.seconds:.2f} s")


def _random_inputs(model: Any, *, batch_size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for t in model.inputs:
        shape = tuple(t.shape)
        dims = [batch_size] + [_FREE_DIM if d is None else int(d) for d in shape[1:]]
        dtype = np.dtype(tf.as_dtype(t.dtype).as_numpy_dtype)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(dims).astype(dtype))
        elif np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=dims).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=dims).astype(bool))
        else:
            raise BridgeError(
                f"Cannot make random test inputs of dtype {dtype} for input '{t.name}'; "
                "pass verify=False and compare the models on your own data."
            )
    return arrays


def _structured(model: Any, arrays: list[np.ndarray]) -> Any:
    """Arrays in the structure (tensor, list or dict) the model's inputs were built in."""
    if len(arrays) == 1:
        return arrays[0]
    struct = getattr(model, "_inputs_struct", None)  # Keras 3
    if struct is None:
        struct = getattr(model, "_nested_inputs", None)  # tf_keras
    if struct is None:
        return arrays
    return tf.nest.pack_sequence_as(struct, arrays)


def _flat_outputs(outputs: Any) -> list[np.ndarray]:
    return [np.asarray(o) for o in tf.nest.flatten(outputs)]


def compare(
    source: Any,
    target: Any,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = 0.0,
    batch_size: int = 2,
    seed: int = 0,
) -> BridgeReport:
    """Runs two models on the same random inputs and measures their disagreement.

    Both models run in inference mode (`training=False`), so BatchNormalization
    uses its moving statistics and Dropout is off.

    Args:
        source: A Keras 3 or tf_keras model.
        target: A model with the same inputs and outputs, usually the other
            generation's rebuild of `source`.
        atol: Largest absolute difference that still passes (with `rtol`).
        rtol: Added tolerance per unit of the source's largest output magnitude
            (0: `atol` alone; the bridge's own check uses `DEFAULT_RTOL`).
        batch_size: Random samples per input.
        seed: Seed of the random inputs.

    Returns:
        A `BridgeReport`.

    Raises:
        BridgeError: If the models' inputs or outputs do not line up.
    """
    if atol < 0 or rtol < 0:
        raise BridgeError(f"atol and rtol must be >= 0, got {atol} and {rtol}.")
    if batch_size < 1:
        raise BridgeError(f"batch_size must be >= 1, got {batch_size}.")
    if len(source.inputs) != len(target.inputs):
        raise BridgeError(
            f"'{source.name}' has {len(source.inputs)} inputs but '{target.name}' has "
            f"{len(target.inputs)}; compare needs models with the same inputs."
        )
    x = _random_inputs(source, batch_size=batch_size, seed=seed)
    a = _flat_outputs(source(_structured(source, x), training=False))
    b = _flat_outputs(target(_structured(target, x), training=False))
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b, strict=False)):
        raise BridgeError(
            f"'{source.name}' and '{target.name}' give outputs of different shapes: "
            f"{[p.shape for p in a]} vs {[q.shape for q in b]}."
        )
    diffs = tuple(
        float(np.max(np.abs(p.astype(np.float64) - q.astype(np.float64)))) if p.size else 0.0
        for p, q in zip(a, b, strict=True)
    )
    direction = Direction.TO_TF_KERAS if is_keras3_model(source) else Direction.TO_KERAS3
    return BridgeReport(
        source=source.name,
        target=target.name,
        direction=direction,
        max_abs_diff=max(diffs, default=0.0),
        output_diffs=diffs,
        atol=float(atol),
        rtol=float(rtol),
        scale=max((float(np.max(np.abs(p))) for p in a if p.size), default=0.0),
    )
