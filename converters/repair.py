"""Quantization parameters raised to what LiteRT's integer kernels accept.

The converter writes the scales it was given (by calibration, or by the
fake-quant ranges of quantization-aware training) without checking them
against the kernels that will run them. LiteRT's int8 HARD_SWISH kernel needs
its output multiplier below one, i.e. its output scale above 1/128 of its
input scale (`tflite/kernels/activations.cc`, HardSwishPrepare:
`output_multiplier_exponent <= 0`); QAT ranges of MobileNetV3's hard-swish
blocks can break that, and the file then fails at `allocate_tensors`.

`repair` raises such an output scale to the smallest one the kernel accepts.
The output keeps its zero point, so every value the old scale could hold is
held by the new one with a coarser step; ops that pass their input's scale
through unchanged (reshape, pooling, ...) get the same scale, so that the
graph stays consistent. Every change is said in a note.
"""

from __future__ import annotations

from typing import Any

from converters import flatbuffer as fb

__all__ = ["repair"]

# Ops whose int8 output must carry their input's scale (they move or pick
# values without requantizing them).
_SAME_SCALE = frozenset({
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "MAX_POOL_2D", "PAD", "PADV2",
    "GATHER", "SLICE", "STRIDED_SLICE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
    "RESIZE_NEAREST_NEIGHBOR", "SPLIT", "SPLIT_V", "UNPACK", "REDUCE_MAX", "REDUCE_MIN",
})

# HARD_SWISH: output_multiplier = (input_scale / 128) / output_scale must be < 1.
_HARD_SWISH_RATIO = 1.0 / 128.0
_MARGIN = 1.01


def _scale(tensor: Any) -> float | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) != 1:
        return None
    return float(q.scale[0])


def repair(content: bytes) -> tuple[bytes, list[str]]:
    """Raises quantization scales that LiteRT's kernels would refuse at prepare time.

    Args:
      content: a converted `.tflite` flatbuffer.

    Returns:
      (the flatbuffer, the notes): the same bytes and no notes when nothing
      needed a change.
    """
    model = fb.parse(bytearray(content))
    names = fb.enum_names(fb.schema().BuiltinOperator)
    codes = [fb.op_name(c, names) for c in model.operatorCodes or []]
    notes: list[str] = []
    for sg in model.subgraphs or []:
        tensors = sg.tensors or []
        consumers: dict[int, list[Any]] = {}
        for op in sg.operators or []:
            for t in op.inputs if op.inputs is not None else []:
                if t >= 0:
                    consumers.setdefault(int(t), []).append(op)
        for op in sg.operators or []:
            if codes[op.opcodeIndex] != "HARD_SWISH":
                continue
            src, dst = tensors[op.inputs[0]], tensors[op.outputs[0]]
            s_in, s_out = _scale(src), _scale(dst)
            if s_in is None or s_out is None:
                continue
            needed = s_in * _HARD_SWISH_RATIO
            if s_out > needed * 1.0001:
                continue
            new = needed * _MARGIN
            changed = _set_scale(tensors, codes, consumers, int(op.outputs[0]), s_out, new)
            notes.append(
                f"HARD_SWISH output {fb.text(dst.name)!r}: int8 scale raised from {s_out:.3g} "
                f"to {new:.3g}, the smallest LiteRT's kernel accepts (input scale {s_in:.3g} / "
                f"128); {changed} tensor(s) changed"
            )
    if not notes:
        return content, []
    return fb.build(model, size_hint=len(content) + 1024), notes


def _set_scale(
    tensors: list[Any], codes: list[str], consumers: dict[int, list[Any]], index: int,
    old: float, new: float,
) -> int:
    """Sets tensor `index` (and the same-scale ops fed by it) to `new`; returns the count."""
    changed = 0
    stack = [index]
    seen: set[int] = set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        tensors[i].quantization.scale[0] = new
        changed += 1
        for op in consumers.get(i, []):
            if codes[op.opcodeIndex] not in _SAME_SCALE:
                continue
            for o in op.outputs:
                s = _scale(tensors[o])
                if s is not None and abs(s - old) <= 1e-6 * max(abs(old), 1e-30):
                    stack.append(int(o))
    return changed
