"""Reading a `.tflite` flatbuffer: ops by type and dtype, tensors, sizes.

Pure Python over the flatbuffer schema that ships with LiteRT; only call it on
bytes that were produced by the converter or passed `verify_tflite`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from typing import Any

from converters import flatbuffer

__all__ = ["TensorInfo", "ModelStats", "analyze_flatbuffer", "float_ops", "float_ops_note",
           "op_sequence", "prefix_models"]


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """An input or output tensor of a `.tflite` model.

    Attributes:
      name: tensor name (the signature name when the model has a signature).
      shape: static shape.
      shape_signature: shape with -1 for free dimensions.
      dtype: numpy-style dtype name (`"float32"`, `"int8"`, ...).
      scales: quantization scales (empty if not quantized).
      zero_points: quantization zero points.
      quantized_dimension: axis of per-channel quantization.
    """

    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def quantized(self) -> bool:
        return bool(self.scales)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """What a `.tflite` flatbuffer holds.

    Attributes:
      ops: operator counts by type (`{"CONV_2D": 3, ...}`), all subgraphs.
      op_dtypes: per operator type, counts by the dtype it computes in: the
        dtype of its first output, or `"hybrid"` for float ops on int8 weights.
      quantized_tensors: names of tensors that carry quantization parameters.
      tensor_count: number of tensors.
      inputs: the model inputs.
      outputs: the model outputs.
      size: bytes of the flatbuffer.
      weights_bytes: bytes of constant data (weights, biases, tables).
      graph_bytes: everything else (graph structure, names, quantization params).
      signatures: signature keys.
    """

    ops: dict[str, int]
    op_dtypes: dict[str, dict[str, int]]
    quantized_tensors: tuple[str, ...]
    tensor_count: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    size: int
    weights_bytes: int
    graph_bytes: int
    signatures: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": dict(self.ops),
            "op_dtypes": {k: dict(v) for k, v in self.op_dtypes.items()},
            "quantized_tensors": len(self.quantized_tensors),
            "tensors": self.tensor_count,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "size": self.size,
            "weights_bytes": self.weights_bytes,
            "graph_bytes": self.graph_bytes,
            "signatures": list(self.signatures),
        }


_decode = flatbuffer.text


def analyze_flatbuffer(content: bytes) -> ModelStats:
    """Counts ops, finds quantized tensors and splits the size of a flatbuffer."""
    s = flatbuffer.schema()
    op_names = flatbuffer.enum_names(s.BuiltinOperator)
    type_names = {k: v.lower() for k, v in flatbuffer.enum_names(s.TensorType).items()}
    model = flatbuffer.parse(content)
    buffers = model.buffers or []

    def buffer_bytes(i: int) -> int:
        if not 0 <= i < len(buffers) or buffers[i] is None:
            return 0
        b = buffers[i]
        if b.data is not None:
            return len(b.data)
        return int(getattr(b, "size", 0) or 0)

    ops: Counter[str] = Counter()
    op_dtypes: dict[str, Counter[str]] = defaultdict(Counter)
    quantized: list[str] = []
    tensor_count = 0
    codes = model.operatorCodes or []
    for sg in model.subgraphs or []:
        tensors = sg.tensors or []
        tensor_count += len(tensors)
        for t in tensors:
            q = t.quantization
            if q is not None and q.scale is not None and len(q.scale):
                quantized.append(_decode(t.name))
        for op in sg.operators or []:
            name = flatbuffer.op_name(codes[op.opcodeIndex], op_names)
            ops[name] += 1
            outs = [i for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            dtype = type_names.get(tensors[outs[0]].type, "?") if outs else "none"
            ins = [tensors[i] for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            if dtype in ("float32", "float16") and any(
                t.type == s.TensorType.INT8 and buffer_bytes(t.buffer) > 0 for t in ins
            ):
                dtype = "hybrid"
            op_dtypes[name][dtype] += 1

    def info(sg: Any, idx: int) -> TensorInfo:
        t = sg.tensors[idx]
        q = t.quantization
        scales = tuple(float(x) for x in (q.scale if q is not None and q.scale is not None else []))
        zps = tuple(int(x) for x in (q.zeroPoint if q is not None and q.zeroPoint is not None else []))
        shape = tuple(int(d) for d in (t.shape if t.shape is not None else []))
        sig = t.shapeSignature
        return TensorInfo(
            name=_decode(t.name),
            shape=shape,
            shape_signature=tuple(int(d) for d in sig) if sig is not None and len(sig) else shape,
            dtype=type_names.get(t.type, str(t.type)),
            scales=scales,
            zero_points=zps,
            quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
        )

    main = (model.subgraphs or [None])[0]
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    signatures: list[str] = []
    if main is not None:
        names_in: dict[int, str] = {}
        names_out: dict[int, str] = {}
        for sd in model.signatureDefs or []:
            signatures.append(_decode(sd.signatureKey))
            if sd.subgraphIndex == 0:
                for tm in sd.inputs or []:
                    names_in[tm.tensorIndex] = _decode(tm.name)
                for tm in sd.outputs or []:
                    names_out[tm.tensorIndex] = _decode(tm.name)
        ins = [int(i) for i in (main.inputs if main.inputs is not None else [])]
        outs = [int(i) for i in (main.outputs if main.outputs is not None else [])]
        inputs = tuple(
            dataclasses.replace(info(main, i), name=names_in.get(i, info(main, i).name))
            for i in ins
        )
        outputs = tuple(
            dataclasses.replace(info(main, i), name=names_out.get(i, info(main, i).name))
            for i in outs
        )
    weights = sum(buffer_bytes(i) for i in range(len(buffers)))
    return ModelStats(
        ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        op_dtypes={k: dict(v) for k, v in sorted(op_dtypes.items())},
        quantized_tensors=tuple(quantized),
        tensor_count=tensor_count,
        inputs=inputs,
        outputs=outputs,
        size=len(content),
        weights_bytes=weights,
        graph_bytes=max(len(content) - weights, 0),
        signatures=tuple(signatures),
    )


# Ops that convert between float and integer at a float model's edges.
_CASTS = frozenset({"QUANTIZE", "DEQUANTIZE", "CAST"})


def float_ops(stats: ModelStats) -> dict[str, int]:
    """Ops (besides quantize/dequantize) computing in float, by type, with their counts."""
    return {
        op: n
        for op, dtypes in stats.op_dtypes.items()
        if op not in _CASTS
        for n in [sum(c for d, c in dtypes.items() if d.startswith("float"))]
        if n
    }


def float_ops_note(stats: ModelStats, mode: str) -> str | None:
    """The sentence saying which ops of an integer-mode model stay float, or None."""
    found = float_ops(stats)
    if not found:
        return None
    listed = ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
    return (
        f"{sum(found.values())} op(s) compute in float in this {mode} model (the converter "
        f"kept them float: no integer kernel, or not quantizable): {listed}"
    )


def op_sequence(content: bytes) -> list[str]:
    """The op names of the main subgraph, in execution order."""
    op_names = flatbuffer.enum_names(flatbuffer.schema().BuiltinOperator)
    model = flatbuffer.parse(content)
    codes = model.operatorCodes or []
    main = (model.subgraphs or [None])[0]
    if main is None:
        return []
    return [flatbuffer.op_name(codes[op.opcodeIndex], op_names) for op in main.operators or []]


def prefix_models(content: bytes) -> list[bytes]:
    """Models made of the first k ops of the main subgraph, k = 1..n.

    Prefix k ends at op k-1's outputs; constant buffers no prefix uses are
    emptied and signatures dropped, so each prefix is a valid model on its
    own. Timing each and differencing consecutive medians estimates what each
    op adds (see `tflight.benchmark`).
    """
    s = flatbuffer.schema()
    m = flatbuffer.parse(bytearray(content))
    sg = m.subgraphs[0]
    ops = list(sg.operators or [])
    buffers = list(m.buffers or [])
    m.signatureDefs = None
    out = []
    for k in range(1, len(ops) + 1):
        sg.operators = ops[:k]
        sg.outputs = [int(t) for t in ops[k - 1].outputs if int(t) >= 0]
        used = {int(t) for op in ops[:k] for t in op.inputs if int(t) >= 0}
        used |= {int(t) for t in sg.inputs}
        keep = {sg.tensors[t].buffer for t in used}
        m.buffers = [b if i in keep or i == 0 else s.BufferT() for i, b in enumerate(buffers)]
        out.append(flatbuffer.build(m))
    return out
