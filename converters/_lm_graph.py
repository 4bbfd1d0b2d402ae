"""Rewrites of a converted language-model flatbuffer (run in the LM conversion child).

`fold_stacked_slices` removes the cache's stack-then-slice copies,
`gathers_to_lookups` turns a constant token table's GATHER into a quantizable
EMBEDDING_LOOKUP in the integer modes, `share_buffers` restores the weight
sharing the quantizer undoes, and `compact_graph` drops debug names and empty
quantization tables. Each takes and returns `.tflite` bytes
(`converters.lm._handle` chains them).
"""

from __future__ import annotations

from typing import Any

__all__ = ["compact_graph", "fold_stacked_slices", "gathers_to_lookups", "share_buffers"]


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
