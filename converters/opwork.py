"""The work of every operator of a `.tflite` graph, for cost models.

`analysis.analyze_flatbuffer` counts operators; this module sizes them: for
each operator, in execution order, its kind of work (k x k convolution,
pointwise convolution, depthwise convolution, dense, elementwise, pooling,
resize, data movement, control flow), the arithmetic it runs in (fp32, fp16
weights, int8, int16x8, hybrid), its multiply-accumulates and the bytes it
reads and writes. Control-flow operators (WHILE, IF, CALL_ONCE) carry the
work of the subgraphs they run, so nothing the interpreter executes is left
out.

Pure Python over the flatbuffer schema that ships with LiteRT; only call it on
bytes that were produced by the converter or passed `verify_tflite`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["OpRecord", "GraphWork", "op_work"]

# Operator families. The names are the cost model's words.
CONV = "conv"  # k x k convolution (k > 1), transposed and 3-D convolution
POINTWISE = "pointwise"  # 1 x 1 convolution
DEPTHWISE = "depthwise"
DENSE = "dense"  # fully connected, batch matmul, fused recurrent cells
ELEMENTWISE = "elementwise"  # arithmetic and activations, per output element
POOL = "pool"  # pooling and reductions, per input element
RESIZE = "resize"
MOVEMENT = "movement"  # concatenation, padding, transposes, slices, gathers
RESHAPE = "reshape"  # metadata only: no data moves
CONTROL = "control"  # WHILE / IF / CALL_ONCE: the cost is in their subgraphs
CONSTANT = "constant"  # work folded away before the first inference

OP_CLASSES = (
    CONV, POINTWISE, DEPTHWISE, DENSE, ELEMENTWISE, POOL, RESIZE, MOVEMENT, RESHAPE,
    CONTROL, CONSTANT,
)

_POOL_OPS = {
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "MEAN", "SUM", "REDUCE_MAX",
    "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "ARG_MAX", "ARG_MIN",
}
_RESIZE_OPS = {"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"}
_RESHAPE_OPS = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "RANK"}
_MOVEMENT_OPS = {
    "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE", "SLICE", "STRIDED_SLICE",
    "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "TILE", "BROADCAST_TO",
    "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",
    "REVERSE_V2", "SCATTER_ND", "FILL", "ZEROS_LIKE", "ONES_LIKE", "SELECT", "SELECT_V2",
    "EMBEDDING_LOOKUP", "CAST",
}
_DENSE_OPS = {"FULLY_CONNECTED", "BATCH_MATMUL"}
_RECURRENT_OPS = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "LSTM",
    "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_RNN", "RNN",
}
_CONTROL_OPS = {"WHILE", "IF", "CALL_ONCE"}

_DTYPE_BYTES = {
    "FLOAT32": 4, "INT32": 4, "UINT32": 4, "FLOAT16": 2, "INT16": 2, "UINT16": 2,
    "INT64": 8, "UINT64": 8, "FLOAT64": 8, "COMPLEX64": 8, "INT8": 1, "UINT8": 1,
    "BOOL": 1, "INT4": 1,
}


@dataclasses.dataclass(frozen=True)
class OpRecord:
    """The work of one operator.

    Attributes:
      subgraph: index of the subgraph the operator belongs to.
      index: its position in that subgraph's execution order.
      op_name: builtin operator name (`"CONV_2D"`), or `"CUSTOM:<code>"`.
      op_class: family of work, one of `OP_CLASSES`.
      arith: the arithmetic it runs in: `"fp32"`, `"fp16"` (float16 weights
        dequantized for it), `"int8"` (also uint8), `"int16x8"`, `"hybrid"`
        (float activations on int8 constant weights), or `"int"` (index and
        shape arithmetic in int32/int64/bool).
      macs: multiply-accumulates (0 for operators that do none).
      elements: elements it produces (pooling and reductions: elements it reads).
      bytes: bytes of its non-constant inputs and its outputs.
      weight_bytes: bytes of its constant inputs.
      dynamic: True if a tensor it touches has an unknown (-1) dimension.
      trips: how many times each of `children` runs per run of this operator
        (the trip count of a WHILE loop, 1 otherwise).
      trips_known: False if the trip count of a WHILE could not be read from
        the graph (then `trips` is 1 and the cost is a lower bound).
      children: for control flow, the work of the subgraphs it runs: for
        WHILE the condition and body, for IF both branches, for CALL_ONCE the
        initialisation subgraph.
      child_roles: what each child is (`"cond"`, `"body"`, `"then"`, `"else"`,
        `"init"`).
    """

    subgraph: int
    index: int
    op_name: str
    op_class: str
    arith: str
    macs: int
    elements: int
    bytes: int
    weight_bytes: int
    dynamic: bool = False
    trips: int = 1
    trips_known: bool = True
    children: tuple[tuple[OpRecord, ...], ...] = ()
    child_roles: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = {
            k: getattr(self, k)
            for k in ("subgraph", "index", "op_name", "op_class", "arith", "macs", "elements",
                      "bytes", "weight_bytes", "dynamic")
        }
        if self.children:
            out["trips"] = self.trips
            out["trips_known"] = self.trips_known
            out["children"] = {
                role: [o.to_dict() for o in ops]
                for role, ops in zip(self.child_roles, self.children, strict=True)
            }
        return out


@dataclasses.dataclass(frozen=True)
class GraphWork:
    """The per-operator work of a model's main subgraph (control flow nested).

    Attributes:
      ops: the main subgraph's operators in execution order; WHILE/IF/CALL_ONCE
        records hold their subgraphs' operators.
      subgraphs: number of subgraphs in the file.
      input_dtypes: dtypes of the main subgraph's inputs (`"float32"`, ...).
      output_dtypes: dtypes of its outputs.
    """

    ops: tuple[OpRecord, ...]
    subgraphs: int
    input_dtypes: tuple[str, ...]
    output_dtypes: tuple[str, ...]

    def walk(self) -> list[tuple[OpRecord, int]]:
        """Every operator that runs, with how many times it runs per inference.

        IF branches are both listed with multiplicity 1; a cost model decides
        how to combine them.
        """
        out: list[tuple[OpRecord, int]] = []

        def visit(ops: Sequence[OpRecord], mult: int) -> None:
            for o in ops:
                out.append((o, mult))
                for child in o.children:
                    visit(child, mult * o.trips)

        visit(self.ops, 1)
        return out


def _scalar_constant(model: Any, sg: Any, idx: int) -> int | None:
    """The value of an integer scalar constant tensor, or None."""
    if idx < 0:
        return None
    t = sg.tensors[idx]
    buffers = model.buffers or []
    if not 0 <= t.buffer < len(buffers) or buffers[t.buffer] is None:
        return None
    data = buffers[t.buffer].data
    if data is None or len(data) == 0:
        return None
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    dt = {2: np.int32, 4: np.int64}.get(int(t.type))  # TensorType INT32 = 2, INT64 = 4
    if dt is None or len(raw) != np.dtype(dt).itemsize:
        return None
    return int(np.frombuffer(raw, dtype=dt)[0])


def op_work(content: bytes) -> GraphWork:
    """Sizes every operator of a `.tflite` flatbuffer.

    Args:
      content: the bytes of a `.tflite` file.

    Returns:
      A `GraphWork` for the main subgraph; control-flow operators carry the
      work of the subgraphs they run. The trip count of a WHILE loop is read
      from its condition when the condition compares the loop counter with a
      constant (as converted Keras RNNs do); otherwise it is 1 and the record
      says `trips_known=False`.

    Raises:
      ValueError: if the flatbuffer cannot be parsed.
    """
    from converters import flatbuffer

    s = flatbuffer.schema()
    try:
        model = flatbuffer.parse(bytearray(content))
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise ValueError(f"cannot parse the .tflite flatbuffer: {type(e).__name__}: {e}") from e
    op_names = flatbuffer.enum_names(s.BuiltinOperator)
    type_names = flatbuffer.enum_names(s.TensorType)
    subgraphs = model.subgraphs or []
    codes = model.operatorCodes or []
    buffers = model.buffers or []

    def name_of(op: Any) -> str:
        return flatbuffer.op_name(codes[op.opcodeIndex], op_names)

    def is_const(t: Any) -> bool:
        if not 0 <= t.buffer < len(buffers) or buffers[t.buffer] is None:
            return False
        b = buffers[t.buffer]
        return (b.data is not None and len(b.data) > 0) or int(getattr(b, "size", 0) or 0) > 0

    def trip_count(cond_index: int, while_op: Any, parent: Any) -> int | None:
        cond = subgraphs[cond_index]
        cands: list[int] = []
        cond_inputs = [int(i) for i in (cond.inputs if cond.inputs is not None else [])]
        parent_inputs = [int(i) for i in (while_op.inputs if while_op.inputs is not None else [])]
        for op in cond.operators or []:
            if name_of(op) not in ("LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL"):
                continue
            for i in op.inputs if op.inputs is not None else []:
                v = _scalar_constant(model, cond, int(i))
                if v is None and int(i) in cond_inputs:
                    # The limit is a loop variable: read the value it enters with.
                    pos = cond_inputs.index(int(i))
                    if pos < len(parent_inputs):
                        v = _scalar_constant(model, parent, parent_inputs[pos])
                if v is not None and v > 0:
                    cands.append(v)
        return min(cands) if cands else None

    def sized(sg_index: int, stack: tuple[int, ...]) -> tuple[OpRecord, ...]:
        sg = subgraphs[sg_index]
        tensors = sg.tensors or []
        # Outputs of DEQUANTIZE ops on constants: weights dequantized once at
        # load; float16 ones mark the consumer as an fp16-weight op.
        folded: dict[int, str] = {}
        for op in sg.operators or []:
            if name_of(op) == "DEQUANTIZE":
                ins = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
                if ins and is_const(tensors[ins[0]]):
                    src = type_names.get(tensors[ins[0]].type, "")
                    for o in op.outputs if op.outputs is not None else []:
                        folded[int(o)] = src

        def shape(i: int) -> list[int]:
            sh = tensors[i].shape
            return [max(int(d), 1) for d in (sh if sh is not None else [])]

        def elems(i: int) -> int:
            return int(np.prod(shape(i), dtype=np.int64)) if i >= 0 else 0

        def nbytes(i: int) -> int:
            return elems(i) * _DTYPE_BYTES.get(type_names.get(tensors[i].type, ""), 4)

        def dynamic(i: int) -> bool:
            sig = tensors[i].shapeSignature
            return sig is not None and any(int(d) < 0 for d in sig)

        records: list[OpRecord] = []
        for idx, op in enumerate(sg.operators or []):
            name = name_of(op)
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            present = [i for i in ins if i >= 0]
            const = [i for i in present if is_const(tensors[i]) or i in folded]
            acts = [i for i in present if i not in const]
            out_el = sum(elems(o) for o in outs)
            in_el = sum(elems(i) for i in acts)
            macs = 0
            w = shape(ins[1]) if len(ins) > 1 and ins[1] >= 0 else []
            op_class = ELEMENTWISE
            if name == "CONV_2D" and len(w) == 4:
                macs = elems(outs[0]) * w[1] * w[2] * w[3]
                op_class = POINTWISE if w[1] == 1 and w[2] == 1 else CONV
            elif name == "DEPTHWISE_CONV_2D" and len(w) == 4:
                macs = elems(outs[0]) * w[1] * w[2]
                op_class = DEPTHWISE
            elif name == "CONV_3D" and len(w) == 5:
                macs = elems(outs[0]) * w[0] * w[1] * w[2] * w[3]
                op_class = CONV
            elif name == "TRANSPOSE_CONV" and len(w) == 4 and len(ins) > 2:
                macs = elems(ins[2]) * w[1] * w[2] * w[0]
                op_class = CONV
            elif name in _DENSE_OPS and present:
                k = shape(ins[0])[-1] if shape(ins[0]) else 1
                macs = elems(outs[0]) * k if outs else 0
                op_class = DENSE
            elif name in _RECURRENT_OPS and present:
                # Gate matmuls of every step: input and recurrent weights.
                macs = sum(
                    elems(i) for i in ins[1:9] if i >= 0
                ) * (shape(ins[0])[-2] if len(shape(ins[0])) >= 3 else 1)
                op_class = DENSE
            elif name in _POOL_OPS:
                op_class = POOL
            elif name in _RESIZE_OPS:
                op_class = RESIZE
            elif name in _RESHAPE_OPS:
                op_class = RESHAPE
            elif name in _MOVEMENT_OPS:
                op_class = MOVEMENT
            elif name in _CONTROL_OPS:
                op_class = CONTROL
            if name == "DEQUANTIZE" and not acts:
                op_class = CONSTANT  # weights dequantized once, before the first run

            # Arithmetic: from the first activation input (the output if none).
            def tname(i: int) -> str:
                return type_names.get(tensors[i].type, "FLOAT32")

            first = acts[0] if acts else (outs[0] if outs else -1)
            act = tname(first) if first >= 0 else "FLOAT32"
            weights_int8 = any(tname(i) in ("INT8", "UINT8") and is_const(tensors[i]) for i in const)
            weights_fp16 = any(folded.get(i) == "FLOAT16" for i in const)
            if act == "INT16":
                arith = "int16x8"
            elif act in ("INT8", "UINT8"):
                arith = "int8"
            elif act in ("FLOAT32", "FLOAT16"):
                if weights_int8 and op_class in (CONV, POINTWISE, DEPTHWISE, DENSE):
                    arith = "hybrid"
                elif weights_fp16:
                    arith = "fp16"
                else:
                    arith = "fp32"
            else:
                arith = "int"
            if name == "QUANTIZE" and act in ("FLOAT32", "FLOAT16") and outs:
                # float -> int8/int16 conversion runs at the quantized side's rate.
                arith = "int16x8" if tname(outs[0]) == "INT16" else "int8"

            children: list[tuple[OpRecord, ...]] = []
            roles: list[str] = []
            trips, trips_known = 1, True
            opts = op.builtinOptions
            if name == "WHILE" and opts is not None:
                cond_i, body_i = int(opts.condSubgraphIndex), int(opts.bodySubgraphIndex)
                for role, si in (("cond", cond_i), ("body", body_i)):
                    if si not in stack:
                        children.append(sized(si, stack + (si,)))
                        roles.append(role)
                n = trip_count(cond_i, op, sg)
                trips, trips_known = (n, True) if n is not None else (1, False)
            elif name == "IF" and opts is not None:
                for role, si in (("then", int(opts.thenSubgraphIndex)),
                                 ("else", int(opts.elseSubgraphIndex))):
                    if si not in stack:
                        children.append(sized(si, stack + (si,)))
                        roles.append(role)
            elif name == "CALL_ONCE" and opts is not None:
                si = int(opts.initSubgraphIndex)
                if si not in stack:
                    children.append(sized(si, stack + (si,)))
                    roles.append("init")
            if op_class == POOL:
                work_el = in_el
            else:
                work_el = out_el
            touched = present + outs
            records.append(
                OpRecord(
                    subgraph=sg_index,
                    index=idx,
                    op_name=name,
                    op_class=op_class,
                    arith=arith,
                    macs=int(macs),
                    elements=int(work_el),
                    bytes=int(sum(nbytes(i) for i in acts) + sum(nbytes(o) for o in outs)),
                    weight_bytes=int(sum(nbytes(i) for i in const if is_const(tensors[i]))),
                    dynamic=any(dynamic(i) for i in touched),
                    trips=trips,
                    trips_known=trips_known,
                    children=tuple(children),
                    child_roles=tuple(roles),
                )
            )
        return tuple(records)

    if not subgraphs:
        raise ValueError("the .tflite flatbuffer has no subgraph")
    main = subgraphs[0]
    mt = main.tensors or []

    def dtypes(idx: Any) -> tuple[str, ...]:
        return tuple(
            type_names.get(mt[int(i)].type, "?").lower() for i in (idx if idx is not None else [])
        )

    return GraphWork(
        ops=sized(0, (0,)),
        subgraphs=len(subgraphs),
        input_dtypes=dtypes(main.inputs),
        output_dtypes=dtypes(main.outputs),
    )
