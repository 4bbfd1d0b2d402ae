"""Language-model `.tflite` files: conversion of a prefill/decode SavedModel, weight quantization.

A causal language model exported for LiteRT has several signatures that share
one set of weights: `prefill_<L>` (a block of prompt tokens) and `decode` (one
token), both reading and writing an explicit key/value cache. This module turns
a SavedModel holding those signatures into a builtin-ops-only `.tflite` file
(fp32 or fp16), quantizes its weights with litert-quantizer recipes (int8 or
int4, per channel or in blocks of 32/64/128) and sizes the result per tensor
group (embedding, matrices, other). On the way it folds the cache's
stack-then-slice copies (`fold_stacked_slices`), turns a constant token table's
GATHER into a quantizable EMBEDDING_LOOKUP in the integer modes
(`gathers_to_lookups`), and drops the graph's debug names and empty tables
(`compact_graph`), in `converters._lm_graph`.

Conversion and quantization run in a child Python process (`python -m
converters.lm REQUEST.json`, the protocol of `converters._child`): the MLIR
converter and the quantizer are native code that can crash the process, and a
crash must never take the caller with it. The caller gets `LMConversionError`
(with the converter's message and, for an op without a builtin kernel, the op's
name and the layer it came from) or `LMConversionCrashed`.

This module never imports `tflight`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from typing import Any

from converters import _child
from converters.errors import ConversionError

__all__ = [
    "CRASH_HOOK",
    "LM_MODES",
    "LMConversionCrashed",
    "LMConversionError",
    "TensorGroups",
    "convert_saved_lm",
    "tensor_groups",
]

# Set to "convert" or "quantize" to make the child abort at that step (tests of
# the isolation use it; nothing else reads it).
CRASH_HOOK = "CONVERTERS_LM_TEST_CRASH"

LM_MODES = ("fp32", "fp16", "int8", "int4")
_BLOCK_SIZES = (32, 64, 128)


class LMConversionError(ConversionError):
    """The converter or the quantizer refused the language model.

    Attributes:
      step: "convert" or "quantize".
      op: the TensorFlow op without a builtin LiteRT kernel, if that was the cause.
      layer: the layer (name path in the traced graph) the op came from, if known.
      detail: the converter's own message (trimmed).
    """

    def __init__(self, message: str, *, step: str, op: str | None = None,
                 layer: str | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.op = op
        self.layer = layer
        self.detail = detail


class LMConversionCrashed(LMConversionError):
    """The child process died (a native crash) while converting or quantizing."""


@dataclasses.dataclass(frozen=True)
class TensorGroups:
    """Bytes of the constant tensors of a `.tflite` file, per group (each buffer once).

    Attributes:
      embedding: tensors read by GATHER / EMBEDDING_LOOKUP (token and position tables).
      matrices: weights of FULLY_CONNECTED / BATCH_MATMUL / CONV (the LM head included).
      other: every other constant (norm scales, biases, masks).
      file_bytes: the whole file.
      by_type: bytes per element type name ("FLOAT32", "INT8", "INT4", ...).
    """

    embedding: int
    matrices: int
    other: int
    file_bytes: int
    by_type: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_MATRIX_OPS = {"FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D"}
_EMBED_OPS = {"GATHER", "EMBEDDING_LOOKUP", "GATHER_ND"}


def _buffer_bytes(buf: Any) -> int:
    """Bytes of a buffer held inline (`data`) or after the flatbuffer (`offset`, `size`)."""
    if buf.data is not None and len(buf.data):
        return len(buf.data)
    return int(buf.size) if buf.offset > 1 else 0


def tensor_groups(model: bytes) -> TensorGroups:
    """Sizes the constant tensors of `model` per group; a buffer shared by signatures counts once.

    Args:
      model: the `.tflite` file's bytes (already verified).

    Returns:
      A `TensorGroups`.
    """
    from converters.flatbuffer import enum_names, parse, schema

    m = parse(model)
    ops = enum_names(schema().BuiltinOperator)
    types = enum_names(schema().TensorType)
    group: dict[int, str] = {}
    kind: dict[int, str] = {}
    for sg in m.subgraphs:
        users: dict[int, set[str]] = {}
        for op in sg.operators or []:
            code = m.operatorCodes[op.opcodeIndex]
            name = ops.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            for i in op.inputs if op.inputs is not None else []:
                if i >= 0:
                    users.setdefault(i, set()).add(name)
        for ti, t in enumerate(sg.tensors or []):
            if _buffer_bytes(m.buffers[t.buffer]) == 0:
                continue
            used = users.get(ti, set())
            g = "embedding" if used & _EMBED_OPS else "matrices" if used & _MATRIX_OPS else "other"
            # A buffer first seen as "other" (e.g. through a DEQUANTIZE) takes the
            # group of a later, more telling reader.
            if group.get(t.buffer) in (None, "other"):
                group[t.buffer] = g
            kind[t.buffer] = types.get(t.type, str(t.type))
    sizes = {"embedding": 0, "matrices": 0, "other": 0}
    by_type: dict[str, int] = {}
    for b, g in group.items():
        n = _buffer_bytes(m.buffers[b])
        sizes[g] += n
        by_type[kind[b]] = by_type.get(kind[b], 0) + n
    # DEQUANTIZE-fed weights (weight-only recipes) are grouped by what reads the
    # dequantized tensor; one level of indirection is enough for LiteRT's graphs.
    return TensorGroups(file_bytes=len(model), by_type=by_type, **sizes)


def convert_saved_lm(
    saved_model_dir: str,
    *,
    signature_keys: list[str],
    mode: str = "fp32",
    block_size: int | None = None,
    timeout: float = 1800.0,
) -> bytes:
    """Converts a prefill/decode SavedModel to a `.tflite` in a child process.

    Args:
      saved_model_dir: a SavedModel whose signatures are `signature_keys`.
      signature_keys: the signatures to keep (all share the weights).
      mode: "fp32", "fp16" (float16 weights), "int8" or "int4" (litert-quantizer
        dynamic-range recipes: integer weights, float activations quantized on
        the fly by the kernels).
      block_size: None for one scale per output channel; 32, 64 or 128 for
        blockwise scales (int4 only).
      timeout: seconds before the child is killed.

    Returns:
      The `.tflite` file's bytes (builtin ops only).

    Raises:
      ValueError: `mode` or `block_size` is not one of the above.
      LMConversionError: the converter or the quantizer refused the model.
      LMConversionCrashed: the child died.
    """
    if mode not in LM_MODES:
        raise ValueError(f"mode must be one of {LM_MODES}, got {mode!r}")
    if block_size is not None and (mode != "int4" or block_size not in _BLOCK_SIZES):
        raise ValueError(f"block_size must be None or one of {_BLOCK_SIZES} with mode='int4', "
                         f"got block_size={block_size!r} with mode={mode!r}")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="converters-lm-") as tmp:
        out = os.path.join(tmp, "model.tflite")
        request = {"saved_model": saved_model_dir, "signature_keys": list(signature_keys),
                   "mode": mode, "block_size": block_size, "output": out}
        try:
            _child.run_child(
                _child.python_command("-m", "converters.lm"),
                request=request,
                env=_child.child_env(project_path=True),
                timeout=timeout,
                name="converters-lm",
            )
        except _child.ChildFailed as e:
            step, op, layer, detail = _parse_failure(e.message)
            raise LMConversionError(e.message, step=step, op=op, layer=layer,
                                    detail=detail) from None
        except _child.ChildCrashed as e:
            raise LMConversionCrashed(
                f"the converter process {e} while converting the language model ({mode})",
                step="convert", detail=e.tail) from None
        except _child.ChildTimeout as e:
            raise LMConversionCrashed(f"the converter process {e}", step="convert") from None
        with open(out, "rb") as f:
            return f.read()


_OP_RE = re.compile(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op")


def _parse_failure(message: str) -> tuple[str, str | None, str | None, str]:
    step = "quantize" if message.startswith("quantize:") else "convert"
    op_match = _OP_RE.search(message)
    op = op_match.group(1) if op_match else None
    layer = None
    if op_match:
        # The converter names the graph node: fused["<name>:", "<name>@<function>"]; a
        # node inside a layer is "<layer path>/<op name>".
        before = message[max(0, op_match.start() - 1500): op_match.start()]
        names = [n for n in re.findall(r'"([^"@]+)@', before) if "/" in n]
        if names:
            layer = names[0].rsplit("/", 1)[0]
    return step, op, layer, message[-600:]


# ----------------------------------------------------------------- child side


def _convert(req: dict[str, Any]) -> bytes:
    if os.environ.get(CRASH_HOOK) == "convert":
        os.abort()
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(req["saved_model"],
                                                    signature_keys=req["signature_keys"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if req["mode"] == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    try:
        return conv.convert()
    except Exception as e:  # noqa: BLE001 - the converter's refusal is the user's model
        text = " ".join(str(e).split())
        match = _OP_RE.search(text)
        if match:  # keep the op's own error line and where it came from, not the whole graph
            text = text[max(0, match.start() - 1500):match.end()]
        raise _child.ChildError("ConversionError", f"convert: {text[-4000:]}") from e


def _quantize(model: bytes, mode: str, block_size: int | None) -> bytes:
    from litert_quantizer import qtyping, quantizer

    if os.environ.get(CRASH_HOOK) == "quantize":
        os.abort()
    q = quantizer.Quantizer(model)
    gran = (qtyping.QuantGranularity.CHANNELWISE if block_size is None
            else qtyping.QuantGranularity[f"BLOCKWISE_{block_size}"])
    q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                         num_bits=8 if mode == "int8" else 4, granularity=gran)
    try:
        return bytes(q.quantize().quantized_model)
    except Exception as e:  # noqa: BLE001 - the recipe's refusal is reported, not hidden
        raise _child.ChildError("ConversionError",
                                f"quantize: {type(e).__name__}: {e}"[:4000]) from e


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    from converters._lm_graph import (
        compact_graph,
        fold_stacked_slices,
        gathers_to_lookups,
        share_buffers,
    )

    model = fold_stacked_slices(_convert(req))
    if req["mode"] in ("int8", "int4"):
        model = gathers_to_lookups(model)
        model = share_buffers(_quantize(model, req["mode"], req.get("block_size")))
    model = compact_graph(model)
    with open(req["output"], "wb") as f:
        f.write(model)
    return {"bytes": len(model)}


if __name__ == "__main__":
    sys.exit(_child.serve(_handle, sys.argv, what="the language-model converter"))
