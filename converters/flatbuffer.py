"""The one place that reads (and rebuilds) the `.tflite` flatbuffer.

Everything in this project that looks inside a `.tflite` file goes through
here: `parse` gives LiteRT's flatbuffer object API (`ModelT`, from
`ai_edge_litert.schema_py_generated`), `build` packs an edited or new `ModelT`
back into a file, `table_view` gives the zero-copy table API over a writable
copy (for edits in place that keep every byte offset), and `enum_names` /
`op_name` / `text` turn the schema's numbers and byte strings into names.
`op_weights` lists each op with its constant weight (type and size), and
`has_quantized_tensors` says whether any tensor carries quantization scales.

Untrusted bytes must pass `converters.verify.verify_tflite` first: the probe
that does so runs in a child process and loads this file by path, so this
module imports only the standard library at import time (`ai_edge_litert` and
`flatbuffers` are imported when called).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

__all__ = ["FILE_IDENTIFIER", "OpWeight", "build", "enum_names", "has_quantized_tensors",
           "op_name", "op_weights", "parse", "schema", "table_view", "text"]

FILE_IDENTIFIER = b"TFL3"


def schema() -> Any:
    """LiteRT's generated schema module (`ModelT`, `TensorType`, `BuiltinOperator`, ...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def parse(content: bytes | bytearray) -> Any:
    """The whole model as LiteRT's object API (`schema().ModelT`).

    Pass a `bytearray` when the model will be edited and rebuilt (the object
    API then holds writable arrays); `bytes` are parsed as they are.
    """
    return schema().ModelT.InitFromPackedBuf(content, 0)


def build(model: Any, *, size_hint: int = 1024) -> bytes:
    """Packs a `ModelT` into `.tflite` bytes (with the `TFL3` file identifier)."""
    import flatbuffers

    builder = flatbuffers.Builder(size_hint)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def table_view(content: bytes) -> tuple[bytearray, Any]:
    """A writable copy of `content` and the zero-copy `Model` table over it."""
    buf = bytearray(content)
    return buf, schema().Model.GetRootAs(buf, 0)


def enum_names(cls: type) -> dict[int, str]:
    """Value -> name of a schema enum class (e.g. `schema().TensorType`)."""
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def text(name: Any) -> str:
    """A schema string (bytes or None) as text."""
    if isinstance(name, bytes):
        return name.decode(errors="replace")
    return "" if name is None else str(name)


def op_name(code: Any, op_names: dict[int, str]) -> str:
    """The name of an `OperatorCodeT`: `CONV_2D`, or `CUSTOM:<name>` for custom ops."""
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    name = op_names.get(builtin, f"BUILTIN_{builtin}")
    return f"CUSTOM:{text(code.customCode)}" if name == "CUSTOM" else name


class OpWeight(NamedTuple):
    """One op of a subgraph with its largest constant input (its weight).

    (A named tuple, not a dataclass: the verification probe loads this file by
    path, outside `sys.modules`, where dataclasses cannot resolve their module.)

    Attributes:
      op: the op's name (`op_name`), e.g. `FULLY_CONNECTED`.
      outputs: the names of its output tensors (empty names and absent
        optional tensors left out).
      inputs: the names of its input tensors, likewise.
      weight_type: the `TensorType` code of the weight as stored, or -1 when the
        op has no constant input.
      weight_elements: elements of the weight (0 when there is none).
    """

    op: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    weight_type: int
    weight_elements: int


def op_weights(model: Any, subgraph_index: int = 0) -> list[OpWeight]:
    """Every op of one subgraph of a parsed model (`parse`), in order, with its weight.

    The weight is the op's largest constant input. When a converter or
    quantizer stores it apart, behind a DEQUANTIZE op (float16 and
    weight-only int8 weights), the constant behind that op is the weight.
    """
    s = schema()
    names = enum_names(s.BuiltinOperator)
    subgraph = model.subgraphs[subgraph_index]
    tensors = subgraph.tensors or []
    buffers = model.buffers or []
    ops = subgraph.operators or []
    opnames = [op_name(model.operatorCodes[op.opcodeIndex], names) for op in ops]
    producer = {o: k for k, op in enumerate(ops) for o in _indices(op.outputs)}

    def constant(i: int) -> tuple[int, int] | None:
        t = tensors[i]
        buf = buffers[t.buffer] if 0 <= t.buffer < len(buffers) else None
        # A buffer holds its bytes inline, or (files over 2 GB) at an offset in the file.
        if buf is not None and ((buf.data is not None and len(buf.data)) or (buf.offset or 0) > 1):
            shape = [] if t.shape is None else list(t.shape)
            return int(t.type), math.prod(int(d) for d in shape) if shape else 1
        k = producer.get(i)
        if k is not None and opnames[k] == "DEQUANTIZE":
            src = _indices(ops[k].inputs)
            if src and src[0] >= 0:
                return constant(src[0])
        return None

    def tensor_names(indices: Any) -> tuple[str, ...]:
        found = (text(tensors[i].name) for i in _indices(indices) if i >= 0)
        return tuple(n for n in found if n)

    out = []
    for op, name in zip(ops, opnames, strict=True):
        weight = (-1, 0)
        for i in _indices(op.inputs):
            if i >= 0 and (c := constant(i)) is not None and c[1] > weight[1]:
                weight = c
        out.append(OpWeight(name, tensor_names(op.outputs), tensor_names(op.inputs), *weight))
    return out


def _indices(a: Any) -> list[int]:
    """A schema index vector (a list, an array or None) as a list of ints."""
    return [] if a is None else [int(v) for v in a]


def has_quantized_tensors(model: Any) -> bool:
    """True when any tensor of a parsed model carries quantization scales (an int model)."""
    return any(
        t.quantization is not None and t.quantization.scale is not None
        for subgraph in model.subgraphs or []
        for t in subgraph.tensors or []
    )
