"""The Keras-vs-TFLite agreement check of a compressed model.

A QAT model that scores well in Keras can still disagree with its int8
`.tflite` (TF-MOT issue #368: "QAT good, TFLite bad"). `check_agreement` runs
both on the same inputs and raises when their top-1 predictions differ on more
than a set share of them, so the gap never passes silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight.errors import CompressionError

__all__ = ["AgreementReport", "check_agreement"]


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    """How often a Keras model and its `.tflite` pick the same class.

    Attributes:
      agreement: share of samples on which every output agrees: the same
        top-1 class (along the last axis, at every position of sequence
        outputs) for outputs with several units; for single-unit outputs, a
        difference within 5 % of the output's range.
      samples: number of samples compared.
      keras_accuracy: Keras top-1 accuracy (if labels were given; single
        output only).
      tflite_accuracy: TFLite top-1 accuracy (if labels were given).
      max_abs_diff: largest absolute difference over all outputs.
      per_output: `{output name: agreement}` for each output.
    """

    agreement: float
    samples: int
    keras_accuracy: float | None
    tflite_accuracy: float | None
    max_abs_diff: float
    per_output: dict[str, float] = dataclasses.field(default_factory=dict)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints the agreement and, if known, both accuracies."""
        line = f"top-1 agreement Keras vs TFLite: {self.agreement:.2%} on {self.samples} samples"
        if self.keras_accuracy is not None and self.tflite_accuracy is not None:
            line += f"; accuracy Keras {self.keras_accuracy:.2%}, TFLite {self.tflite_accuracy:.2%}"
        print_fn(line)
        if len(self.per_output) > 1:
            print_fn(
                "  per output: " + ", ".join(f"{k} {v:.2%}" for k, v in self.per_output.items())
            )


def check_agreement(
    model: Any,
    tflite: Any,
    x: Any,
    *,
    y: np.ndarray | None = None,
    min_agreement: float = 0.99,
    batch_size: int = 256,
) -> AgreementReport:
    """Compares a (QAT) Keras model with its `.tflite` on the same inputs.

    Multi-input models take a list (in the Keras model's input order) or a
    dict keyed by input name; multi-output models are compared output by
    output, matched by name when the flatbuffer's signature uses the Keras
    names, otherwise by position.

    Args:
      model: the Keras model the flatbuffer was converted from.
      tflite: a `converters.ConversionResult`, `.tflite` bytes, a path or a
        `converters.TFLiteModel`.
      x: inputs, batched: an array, a list of arrays or a dict of arrays.
      y: optional integer labels (single-output models), to report both accuracies.
      min_agreement: the lowest acceptable share of agreeing samples.
      batch_size: Keras prediction batch size.

    Returns:
      An `AgreementReport`.

    Raises:
      CompressionError: agreement below `min_agreement`, bad arguments or
        outputs the two models disagree on in number or shape.

    References:
      tensorflow/model-optimization issue #368 (QAT accuracy lost in TFLite).
    """
    import converters

    if not 0.0 <= min_agreement <= 1.0:
        raise CompressionError(f"`min_agreement` must be in [0, 1], got {min_agreement!r}.")
    if isinstance(tflite, converters.TFLiteModel):
        runner = tflite
    else:
        source = getattr(tflite, "flatbuffer", tflite)
        runner = converters.TFLiteModel(source)
    keras_x, lite_x, n = _agreement_inputs(model, runner, x)
    keras_raw = model.predict(keras_x, batch_size=batch_size, verbose=0)
    keras_outs = _named_outputs(model, keras_raw)
    lite_raw = runner.predict(lite_x)
    lite_list = lite_raw if isinstance(lite_raw, list) else [lite_raw]
    lite_outs = _match_outputs(keras_outs, runner.output_names, lite_list)
    per_output: dict[str, float] = {}
    ok = np.ones(n, dtype=bool)
    max_diff = 0.0
    for (name, k_out), l_out in zip(keras_outs, lite_outs, strict=True):
        k_out = np.asarray(k_out, dtype=np.float32)
        l_out = np.asarray(l_out, dtype=np.float32)
        if k_out.shape != l_out.shape:
            raise CompressionError(
                f"Output {name!r}: the Keras model gives shape {k_out.shape} but the .tflite "
                f"gives {l_out.shape}; compare a model with the flatbuffer converted from it."
            )
        max_diff = max(max_diff, float(np.max(np.abs(k_out - l_out))) if k_out.size else 0.0)
        same = _agrees(k_out, l_out)
        per_output[name] = float(np.mean(same))
        ok &= same
    keras_acc = lite_acc = None
    if y is not None:
        if len(keras_outs) != 1:
            raise CompressionError(
                f"`y` gives labels for one output but the model has {len(keras_outs)} outputs; "
                "leave `y` out for multi-output models."
            )
        from tflight._io import class_ids

        labels = class_ids(y, n, error=CompressionError)
        k_top = np.asarray(keras_outs[0][1]).reshape(n, -1).argmax(axis=1)
        l_top = np.asarray(lite_outs[0]).reshape(n, -1).argmax(axis=1)
        keras_acc = float(np.mean(k_top == labels))
        lite_acc = float(np.mean(l_top == labels))
    report = AgreementReport(
        agreement=float(np.mean(ok)),
        samples=n,
        keras_accuracy=keras_acc,
        tflite_accuracy=lite_acc,
        max_abs_diff=max_diff,
        per_output=per_output,
    )
    if report.agreement < min_agreement:
        raise CompressionError(
            f"The .tflite disagrees with the Keras model: top-1 agreement "
            f"{report.agreement:.2%} on {report.samples} samples, below min_agreement "
            f"{min_agreement:.2%} (max |diff| {report.max_abs_diff:.4g}). Convert the QAT model "
            "itself (tflight.strip_qat) in 'int8' mode with representative data drawn "
            "from the training inputs, and fine-tune QAT for more steps so that its ranges settle."
        )
    return report


def _agreement_inputs(model: Any, runner: Any, x: Any) -> tuple[Any, Any, int]:
    """(inputs for Keras, inputs for LiteRT, samples), with one readable error on bad `x`."""
    names = [t.name.split(":")[0] for t in model.inputs]
    layer_names = list(getattr(model, "input_names", names))
    if isinstance(x, dict):
        arrays = {k: np.asarray(v) for k, v in x.items()}
        items = list(arrays.values())
    elif isinstance(x, list | tuple):
        items = [np.asarray(v) for v in x]
        arrays = None
    else:
        items = [np.asarray(x, dtype=np.float32)]
        arrays = None
    if not items or any(a.ndim < 1 or len(a) == 0 for a in items):
        raise CompressionError(
            "`x` must be a non-empty batch of inputs (an array, a list or a dict of arrays), "
            f"got shapes {[a.shape for a in items]}."
        )
    n = len(items[0])
    if any(len(a) != n for a in items):
        raise CompressionError(
            f"The arrays of `x` hold different numbers of samples: {[len(a) for a in items]}."
        )
    if len(items) != len(model.inputs):
        raise CompressionError(
            f"`x` holds {len(items)} array(s) but the model has {len(model.inputs)} input(s) "
            f"({', '.join(layer_names)})."
        )
    items = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in items]
    if arrays is not None:
        arrays = {
            k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()
        }
        return arrays, arrays, n
    if len(items) == 1:
        return items[0], items[0], n
    lite_names = list(runner.input_names)
    if set(layer_names) == set(lite_names):
        return items, dict(zip(layer_names, items, strict=True)), n
    return items, items, n


def _named_outputs(model: Any, raw: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(raw, dict):
        order = [k for k in getattr(model, "output_names", []) if k in raw] or list(raw)
        return [(k, np.asarray(raw[k])) for k in order]
    outs = raw if isinstance(raw, list | tuple) else [raw]
    names = list(getattr(model, "output_names", []) or [])
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    return [(name, np.asarray(o)) for name, o in zip(names, outs, strict=True)]


def _match_outputs(
    keras_outs: list[tuple[str, np.ndarray]], lite_names: list[str], lite: list[np.ndarray]
) -> list[np.ndarray]:
    if len(lite) != len(keras_outs):
        raise CompressionError(
            f"The Keras model has {len(keras_outs)} output(s) but the .tflite has {len(lite)}; "
            "compare a model with the flatbuffer converted from it."
        )
    by_name = dict(zip(lite_names, lite, strict=False))
    if {name for name, _ in keras_outs} == set(by_name):
        return [by_name[name] for name, _ in keras_outs]
    shapes = [o.shape for _, o in keras_outs]
    if [o.shape for o in lite] == shapes:
        return lite
    # Outputs reordered by the converter: match each by its unique shape.
    matched = []
    for shape in shapes:
        same = [o for o in lite if o.shape == shape]
        if len(same) != 1 or shapes.count(shape) != 1:
            raise CompressionError(
                f"Cannot match the .tflite outputs {[o.shape for o in lite]} ({lite_names}) to the "
                f"Keras outputs {shapes}; name the Keras outputs so the signature keeps them."
            )
        matched.append(same[0])
    return matched


def _agrees(k_out: np.ndarray, l_out: np.ndarray) -> np.ndarray:
    """Per sample: same top-1 class everywhere, or close values for single-unit outputs."""
    n = len(k_out)
    if k_out.ndim >= 2 and k_out.shape[-1] > 1:
        same = k_out.argmax(axis=-1) == l_out.argmax(axis=-1)
        return same.reshape(n, -1).all(axis=1)
    span = float(np.max(k_out) - np.min(k_out)) if k_out.size else 0.0
    tol = 0.05 * max(span, 1e-6)
    return (np.abs(k_out - l_out).reshape(n, -1) <= tol).all(axis=1)
