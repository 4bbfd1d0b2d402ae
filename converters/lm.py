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
(`compact_graph`).

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


def _parse_inline(model: bytes) -> Any:
    """The parsed model with every buffer held inline (ready to be edited and rebuilt).

    A file may keep its buffers after the flatbuffer (`offset`, `size`); the
    rebuilt file holds them inline (LiteRT reads both forms).
    """
    from converters.flatbuffer import parse

    m = parse(model)
    for buf in m.buffers:
        if (buf.data is None or len(buf.data) == 0) and (buf.offset or 0) > 1:
            buf.data = list(model[buf.offset:buf.offset + buf.size])
            buf.offset, buf.size = 0, 0
    return m


def _const_ints(m: Any, t: Any) -> list[int] | None:
    """The values of a constant INT32/INT64 tensor, or None if it is not one."""
    import numpy as np

    from converters.flatbuffer import schema

    buf = m.buffers[t.buffer]
    if buf.data is None or len(buf.data) == 0:
        return None
    dtype = {schema().TensorType.INT32: np.int32, schema().TensorType.INT64: np.int64}.get(t.type)
    if dtype is None:
        return None
    return [int(v) for v in np.frombuffer(bytes(bytearray(buf.data)), dtype)]


def _slice_of_packed_value(m: Any, sg: Any, slice_op: Any,
                           pack_op: Any) -> tuple[int, bool] | None:
    """The packed value a STRIDED_SLICE of a PACK's output reads, and whether it takes it whole.

    The slice must take one index along the pack axis (shrunk away), with
    constant bounds and no ellipsis or new axes. Returns `(value, True)` when
    it takes that value whole (every other axis whole, unit strides), `(value,
    False)` when it takes part of it (the same slice then applies to the value
    with the pack axis left out), None otherwise.
    """
    t = sg.tensors
    shape = [int(d) for d in t[int(pack_op.outputs[0])].shape]
    rank = len(shape)
    axis = int(pack_op.builtinOptions.axis)
    axis = axis + rank if axis < 0 else axis
    o = slice_op.builtinOptions
    if o is None or o.ellipsisMask or o.newAxisMask or getattr(o, "offset", False):
        return None
    begin, end, strides = (_const_ints(m, t[int(i)]) for i in slice_op.inputs[1:4])
    if begin is None or end is None or strides is None:
        return None
    if not len(begin) == len(end) == len(strides) == rank or not (o.shrinkAxisMask >> axis) & 1:
        return None
    pick = begin[axis] + shape[axis] if begin[axis] < 0 else begin[axis]
    if not 0 <= pick < len(pack_op.inputs):
        return None
    value = int(pack_op.inputs[pick])
    whole = all(
        strides[d] == 1 and not (o.shrinkAxisMask >> d) & 1
        and ((o.beginMask >> d) & 1 or begin[d] == 0)
        and ((o.endMask >> d) & 1 or end[d] >= shape[d])
        for d in range(rank) if d != axis)
    out = t[int(slice_op.outputs[0])]
    if whole and ([int(d) for d in t[value].shape] != [int(d) for d in out.shape]
                  or t[value].type != out.type):
        return None
    return value, whole


def _slice_value_directly(m: Any, sg: Any, slice_op: Any, pack_op: Any, value: int) -> None:
    """Rewrites a STRIDED_SLICE of a PACK's output as the same slice of packed `value`."""
    import numpy as np

    from converters.flatbuffer import schema

    s = schema()
    shape = [int(d) for d in sg.tensors[int(pack_op.outputs[0])].shape]
    axis = int(pack_op.builtinOptions.axis)
    axis = axis + len(shape) if axis < 0 else axis
    bounds = []
    for i in slice_op.inputs[1:4]:
        old = sg.tensors[int(i)]
        vals = _const_ints(m, old) or []
        vals = vals[:axis] + vals[axis + 1:]
        buf = s.BufferT()
        buf.data = np.frombuffer(np.asarray(vals, np.int32).tobytes(), np.uint8)
        m.buffers.append(buf)
        t = s.TensorT()
        t.name, t.type, t.buffer = old.name, s.TensorType.INT32, len(m.buffers) - 1
        t.shape = np.array([len(vals)], np.int32)
        sg.tensors.append(t)
        bounds.append(len(sg.tensors) - 1)
    o = slice_op.builtinOptions

    def drop_bit(mask: int) -> int:
        return (mask & ((1 << axis) - 1)) | ((mask >> (axis + 1)) << axis)

    o.beginMask, o.endMask = drop_bit(o.beginMask), drop_bit(o.endMask)
    o.shrinkAxisMask = drop_bit(o.shrinkAxisMask)
    slice_op.inputs = [value, *bounds]


def fold_stacked_slices(model: bytes) -> bytes:
    """Removes the copies of stacking tensors and slicing them back apart.

    A KV cache handed to a model as one stacked tensor (keras-hub's
    `[batch, layers, 2, ...]`) and returned the same way converts to PACK ops
    followed by STRIDED_SLICE ops that take each packed value back out whole:
    every call copies the whole cache several times over. A slice that takes
    one packed value whole is replaced by that value (a signature output keeps
    its name and its place in the signature); one that takes part of a packed
    value (a stack of stacks) is made to slice that value directly, and folds
    in turn. PACK and STRIDED_SLICE ops nothing reads any more are then
    dropped, with their tensors. The result computes exactly the
    same values; a file with nothing to fold is returned as it is.
    """
    from converters.flatbuffer import build, enum_names, op_name, schema

    m = _parse_inline(model)
    names = enum_names(schema().BuiltinOperator)
    codes = [op_name(c, names) for c in m.operatorCodes]
    changed = False
    for gi, sg in enumerate(m.subgraphs):
        while True:
            ops = list(sg.operators or [])
            producer = {int(o): op for op in ops for o in op.outputs}
            inputs = {int(i) for i in sg.inputs}
            outputs = [int(i) for i in sg.outputs]
            replace: dict[int, int] = {}
            rewritten = False
            for op in ops:
                if codes[op.opcodeIndex] != "STRIDED_SLICE" or len(op.inputs) != 4:
                    continue
                src = producer.get(int(op.inputs[0]))
                if src is None or codes[src.opcodeIndex] != "PACK":
                    continue
                found = _slice_of_packed_value(m, sg, op, src)
                if found is None:
                    continue
                value, whole = found
                out = int(op.outputs[0])
                if not whole:
                    _slice_value_directly(m, sg, op, src, value)
                    rewritten = True
                elif not (out in outputs and (value in inputs or value in outputs
                                              or value in replace.values())):
                    replace[out] = value
            if not replace and not rewritten:
                break
            changed = True
            for op in ops:
                op.inputs = [replace.get(int(i), int(i)) for i in op.inputs]
            for k, out in enumerate(outputs):
                if out in replace:
                    value = replace[out]
                    sg.tensors[value].name = sg.tensors[out].name
                    outputs[k] = value
                    for sd in m.signatureDefs or []:
                        if sd.subgraphIndex == gi:
                            for tm in sd.outputs or []:
                                if tm.tensorIndex == out:
                                    tm.tensorIndex = value
            sg.outputs = outputs
            _drop_dead_ops(sg, codes, {"PACK", "STRIDED_SLICE"})
        if changed:
            _drop_unused_tensors(m, gi)
    return build(m) if changed else model


def _drop_dead_ops(sg: Any, codes: list[str], kinds: set[str]) -> None:
    """Drops ops of `kinds` whose outputs nothing reads, until none is left."""
    while True:
        used = {int(i) for op in sg.operators for i in op.inputs} | {int(i) for i in sg.outputs}
        keep = [op for op in sg.operators
                if codes[op.opcodeIndex] not in kinds or any(int(o) in used for o in op.outputs)]
        if len(keep) == len(sg.operators):
            return
        sg.operators = keep


def _drop_unused_tensors(m: Any, gi: int) -> None:
    """Removes the tensors of subgraph `gi` that no op, input or output refers to.

    Tensors are renumbered everywhere (ops, subgraph inputs and outputs,
    signatures); the constant data of a dropped tensor is dropped with it when
    no other tensor of the model shares its buffer.
    """
    sg = m.subgraphs[gi]
    used = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
    for op in sg.operators:
        used |= {int(i) for i in op.inputs if int(i) >= 0} | {int(i) for i in op.outputs}
        if op.intermediates is not None:
            used |= {int(i) for i in op.intermediates}
    order = [i for i in range(len(sg.tensors)) if i in used]
    if len(order) == len(sg.tensors):
        return
    new = {old: k for k, old in enumerate(order)}
    dropped = [sg.tensors[i] for i in range(len(sg.tensors)) if i not in used]
    sg.tensors = [sg.tensors[i] for i in order]

    def remap(v: Any) -> list[int]:
        return [new[int(i)] if int(i) >= 0 else int(i) for i in v]

    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    for sd in m.signatureDefs or []:
        if sd.subgraphIndex == gi:
            for tm in [*(sd.inputs or []), *(sd.outputs or [])]:
                tm.tensorIndex = new[int(tm.tensorIndex)]
    live = {t.buffer for s in m.subgraphs for t in s.tensors or []}
    live |= {md.buffer for md in m.metadata or []}
    for t in dropped:
        if t.buffer and t.buffer not in live:
            m.buffers[t.buffer].data = None


def gathers_to_lookups(model: bytes) -> bytes:
    """Rewrites each GATHER of a constant float table as EMBEDDING_LOOKUP, so it can be quantized.

    The converter lowers a token embedding to `GATHER(table, ids)`, which
    litert-quantizer has no recipe for; `EMBEDDING_LOOKUP(ids, table)` computes
    the same rows, and the quantizer stores its table as int8/int4 codes with
    per-row (or blockwise) scales that LiteRT's kernel dequantizes row by row.
    The lookup takes 1-D ids, so ids of another rank are flattened by a
    RESHAPE before it and the rows given their shape back by one after it (the
    gather's output tensor, name and consumers unchanged). Only gathers along
    axis 0 with no batch dimensions, int32 ids and a constant FLOAT32 table of
    rank >= 2 are rewritten; a file without one is returned as it is.
    """
    import math

    import numpy as np

    from converters.flatbuffer import build, enum_names, op_name, schema

    s = schema()
    m = _parse_inline(model)
    names = enum_names(s.BuiltinOperator)
    codes = [op_name(c, names) for c in m.operatorCodes]

    def code_index(builtin: int, name: str) -> int:
        if name in codes:
            return codes.index(name)
        code = s.OperatorCodeT()
        code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 1
        m.operatorCodes.append(code)
        codes.append(name)
        return len(codes) - 1

    def has_data(t: Any) -> bool:
        buf = m.buffers[t.buffer]
        return buf.data is not None and len(buf.data) > 0

    changed = False
    for sg in m.subgraphs:
        new_ops = []
        for op in sg.operators or []:
            if codes[op.opcodeIndex] != "GATHER" or len(op.inputs) != 2:
                new_ops.append(op)
                continue
            opts = op.builtinOptions
            table, ids = (sg.tensors[int(i)] for i in op.inputs)
            shape = [] if table.shape is None else [int(d) for d in table.shape]
            id_shape = [] if ids.shape is None else [int(d) for d in ids.shape]
            if (getattr(opts, "axis", 0) != 0 or getattr(opts, "batchDims", 0) != 0
                    or table.type != s.TensorType.FLOAT32 or len(shape) < 2
                    or not has_data(table) or ids.type != s.TensorType.INT32
                    or not id_shape or any(d < 1 for d in id_shape)):
                new_ops.append(op)
                continue
            changed = True
            out = int(op.outputs[0])
            base = (sg.tensors[out].name or b"embedding").decode(errors="replace")
            n = math.prod(id_shape)

            def tensor(name: str, dims: list[int], ttype: int, data: Any = None,
                       sg: Any = sg) -> int:
                t = s.TensorT()
                t.name, t.shape, t.type = name.encode(), np.array(dims, np.int32), ttype
                t.buffer = 0
                if data is not None:
                    buf = s.BufferT()
                    buf.data = np.frombuffer(np.asarray(data, np.int32).tobytes(), np.uint8)
                    m.buffers.append(buf)
                    t.buffer = len(m.buffers) - 1
                sg.tensors.append(t)
                return len(sg.tensors) - 1

            def reshape(src: int, dst: int, dims: list[int], tag: str, base: str = base) -> Any:
                r = s.OperatorT()
                r.opcodeIndex = code_index(s.BuiltinOperator.RESHAPE, "RESHAPE")
                shape_t = tensor(f"{base}/{tag}_shape", [len(dims)], s.TensorType.INT32, dims)
                r.inputs, r.outputs = np.array([src, shape_t], np.int32), np.array([dst], np.int32)
                r.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
                r.builtinOptions = s.ReshapeOptionsT()
                r.builtinOptions.newShape = np.array(dims, np.int32)
                return r

            flat_ids = int(op.inputs[1])
            if len(id_shape) != 1:
                flat_ids = tensor(f"{base}/flat_ids", [n], s.TensorType.INT32)
                new_ops.append(reshape(int(op.inputs[1]), flat_ids, [n], "flat_ids"))
            lookup = s.OperatorT()
            lookup.opcodeIndex = code_index(s.BuiltinOperator.EMBEDDING_LOOKUP,
                                            "EMBEDDING_LOOKUP")
            rows = out if len(id_shape) == 1 else tensor(f"{base}/rows", [n, *shape[1:]],
                                                         s.TensorType.FLOAT32)
            lookup.inputs = np.array([flat_ids, int(op.inputs[0])], np.int32)
            lookup.outputs = np.array([rows], np.int32)
            new_ops.append(lookup)
            if rows != out:
                new_ops.append(reshape(rows, out, [*id_shape, *shape[1:]], "rows"))
        sg.operators = new_ops
    return build(m) if changed else model


def compact_graph(model: bytes) -> bytes:
    """Drops what the runtime never reads from a file's graph: debug names, empty tables.

    The converter names every intermediate tensor after the layer path it came
    from (about 50 bytes each, a thousand tensors per signature set) and gives
    each an empty quantization table. Subgraph inputs and outputs keep their
    names (the signatures refer to them); every other tensor is named by its
    index in its subgraph (names stay unique, which litert-quantizer relies on
    should the file be quantized again), and empty quantization tables are
    removed. Ops, shapes, constants and signatures are untouched.
    """
    from converters.flatbuffer import build

    m = _parse_inline(model)
    for sg in m.subgraphs:
        keep = {int(i) for i in sg.inputs} | {int(i) for i in sg.outputs}
        for i, t in enumerate(sg.tensors or []):
            if i not in keep:
                t.name = str(i).encode()
            q = t.quantization
            if q is not None and q.details is None and not any(
                    getattr(q, a) is not None and len(getattr(q, a))
                    for a in ("scale", "zeroPoint", "min", "max")):
                t.quantization = None
    return build(m)


def share_buffers(model: bytes) -> bytes:
    """Points tensors with byte-identical constant buffers at one of them.

    The converter shares a weight between signatures, but the quantizer writes
    one copy per signature (and keeps the float table of a tied embedding once
    per signature): merging identical buffers restores the sharing.
    """
    import hashlib

    from converters.flatbuffer import build, parse

    m = parse(model)
    first: dict[bytes, int] = {}
    remap: dict[int, int] = {}
    for i, buf in enumerate(m.buffers):
        data = (bytes(buf.data) if buf.data is not None and len(buf.data)
                else model[buf.offset:buf.offset + buf.size] if buf.offset > 1 else b"")
        if len(data) < 64:
            continue
        key = hashlib.sha256(data).digest()
        remap[i] = first.setdefault(key, i)
    if all(i == j for i, j in remap.items()):
        return model
    # The rebuilt file holds every buffer inline (LiteRT reads both forms);
    # buffers stored after the flatbuffer are brought in first.
    for buf in m.buffers:
        if (buf.data is None or len(buf.data) == 0) and buf.offset > 1:
            buf.data = list(model[buf.offset:buf.offset + buf.size])
            buf.offset, buf.size = 0, 0
    for sg in m.subgraphs:
        for t in sg.tensors or []:
            t.buffer = remap.get(t.buffer, t.buffer)
    for i, j in remap.items():
        if i != j:
            m.buffers[i].data = None
    return build(m)


def _handle(req: dict[str, Any]) -> dict[str, Any]:
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
