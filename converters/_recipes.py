"""The TFLite converter's settings per mode, and the fix-ups of what it writes.

Run in the conversion child (`converters._worker`): `configure` sets the
post-training recipe of a mode on a `tf.lite.TFLiteConverter`, `run_converter`
runs it with its progress output kept off the caller's stdout, and
`add_signature` / `reorder_io` make every file carry a `serving_default`
signature with the source model's input and output order.
"""

from __future__ import annotations

import contextlib
import io
import struct
from typing import Any

import numpy as np

from converters import flatbuffer as fb
from converters.errors import ConversionError
from converters.modes import Mode

__all__ = ["SIGNATURE_KEY", "configure", "run_converter", "add_signature", "reorder_io"]

SIGNATURE_KEY = "serving_default"


def configure(
    converter: Any,
    mode: Mode,
    *,
    calibration: list[np.ndarray] | None,
    input_names: list[str] | None,
    input_dtype: str,
    output_dtype: str,
    sparse: bool,
) -> None:
    """Sets the converter options of `mode` (the TFLite post-training recipes)."""
    import tensorflow as tf

    optimizations = []
    if mode is not Mode.FP32:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode is Mode.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if not mode.needs_calibration:
        return
    assert calibration is not None
    n = calibration[0].shape[0]

    def representative_dataset():
        for i in range(n):
            sample = [a[i : i + 1] for a in calibration]
            # Models with a signature take samples by name; frozen functions
            # take them in input order.
            yield dict(zip(input_names, sample, strict=True)) if input_names else sample

    converter.representative_dataset = representative_dataset
    if mode is Mode.INT8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    converter.inference_input_type = tf.as_dtype(input_dtype)
    converter.inference_output_type = tf.as_dtype(output_dtype)


def run_converter(converter: Any) -> bytes:
    # The converter and its calibrator print progress to stdout; keep the
    # caller's stdout clean (it may be JSON).
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def add_signature(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """Adds the `serving_default` signature a frozen-graph conversion lacks.

    Runtimes and apps address inputs and outputs through signatures
    (`get_signature_runner`), so every file we write has one, named after the
    source model's inputs and outputs.
    """
    s = fb.schema()
    model = fb.parse(flatbuffer)
    if model.signatureDefs:
        return flatbuffer
    sg = model.subgraphs[0]
    if len(sg.inputs) != len(input_names) or len(sg.outputs) != len(output_names):
        raise ConversionError(
            f"The converted model has {len(sg.inputs)} inputs and {len(sg.outputs)} outputs, "
            f"the source model {len(input_names)} and {len(output_names)}."
        )

    def tensor_map(name: str, index: int) -> Any:
        tm = s.TensorMapT()
        tm.name = name
        tm.tensorIndex = int(index)
        return tm

    sd = s.SignatureDefT()
    sd.signatureKey = SIGNATURE_KEY
    sd.subgraphIndex = 0
    sd.inputs = [tensor_map(n, i) for n, i in zip(input_names, sg.inputs, strict=True)]
    sd.outputs = [tensor_map(n, i) for n, i in zip(output_names, sg.outputs, strict=True)]
    model.signatureDefs = [sd]
    return fb.build(model, size_hint=len(flatbuffer) + 4096)



def reorder_io(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """Puts the main subgraph's inputs and outputs in the source model's order.

    The converter orders a subgraph's inputs and outputs as the graph happens
    to be traversed, so a two-input model can come out with its inputs
    swapped. Signature names are kept, and the index vectors of the main
    subgraph are permuted in place (same bytes, same length) to follow the
    source model, so that positional `predict([a, b])` means what the user
    expects.
    """
    buf, model = fb.table_view(flatbuffer)
    if model.SignatureDefsLength() != 1 or model.SubgraphsLength() < 1:
        return flatbuffer
    sd = model.SignatureDefs(0)
    if sd.SubgraphIndex() != 0:
        return flatbuffer
    sg = model.Subgraphs(0)
    for field, count, items, wanted in (
        (6, sg.InputsLength(), [sd.Inputs(i) for i in range(sd.InputsLength())], input_names),
        (8, sg.OutputsLength(), [sd.Outputs(i) for i in range(sd.OutputsLength())], output_names),
    ):
        index = {tm.Name().decode(): tm.TensorIndex() for tm in items}
        if sorted(index) != sorted(wanted) or count != len(wanted):
            continue
        order = [index[n] for n in wanted]
        o = sg._tab.Offset(field)
        start = sg._tab.Vector(o)
        current = [struct.unpack_from("<i", buf, start + 4 * j)[0] for j in range(count)]
        if sorted(current) != sorted(order):
            continue
        for j, t in enumerate(order):
            struct.pack_into("<i", buf, start + 4 * j, t)
    return bytes(buf)
