"""`converters.flatbuffer`: the one module that reads and rebuilds `.tflite` files."""

from __future__ import annotations

import re
from pathlib import Path

from converters import flatbuffer
from converters.analysis import analyze_flatbuffer, op_sequence, prefix_models
from converters.gpu import _tiny_model

_ROOT = Path(__file__).resolve().parents[1]


def test_only_one_module_opens_the_schema():
    # Every other module that reads a .tflite goes through converters.flatbuffer.
    pattern = re.compile(r"schema_py_generated|^\s*import flatbuffers\b", re.M)
    users = sorted(
        str(p.relative_to(_ROOT))
        for package in ("converters", "tflight")
        for p in (_ROOT / package).rglob("*.py")
        if pattern.search(p.read_text())
    )
    assert users == ["converters/flatbuffer.py"], users


def test_parse_build_round_trip_keeps_the_model():
    content = _tiny_model()
    model = flatbuffer.parse(bytearray(content))
    s = flatbuffer.schema()
    names = flatbuffer.enum_names(s.BuiltinOperator)
    assert [flatbuffer.op_name(model.operatorCodes[op.opcodeIndex], names)
            for op in model.subgraphs[0].operators] == ["ADD"]
    assert flatbuffer.text(model.subgraphs[0].tensors[0].name) == "x"
    rebuilt = flatbuffer.build(model)
    assert rebuilt[4:8] == flatbuffer.FILE_IDENTIFIER
    assert analyze_flatbuffer(rebuilt).to_dict() == analyze_flatbuffer(content).to_dict()
    assert op_sequence(rebuilt) == ["ADD"]
    assert len(prefix_models(rebuilt)) == 1


def test_table_view_edits_a_copy():
    content = _tiny_model()
    buf, model = flatbuffer.table_view(content)
    assert model.SubgraphsLength() == 1 and model.Subgraphs(0).Name() == b"main"
    buf[:4] = b"\0\0\0\0"
    assert content[:4] != b"\0\0\0\0"


def test_op_weights_find_each_ops_weight_and_its_stored_type():
    # A Dense layer converted three ways: its weight is float32 inline, float16 behind a
    # DEQUANTIZE op, then int8 with quantization scales.
    import keras
    import numpy as np

    import converters

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(5, name="dense")])
    s = flatbuffer.schema()
    x = np.random.default_rng(0).random((16, 12), dtype=np.float32)
    stored = {}
    for mode in ("fp32", "fp16", "int8"):
        content = converters.convert(model, mode, representative_data=x if mode == "int8"
                                     else None, validate=False).flatbuffer
        parsed = flatbuffer.parse(content)
        ops = flatbuffer.op_weights(parsed)
        fc = [w for w in ops if w.op == "FULLY_CONNECTED"]
        assert len(fc) == 1, ops
        assert fc[0].weight_elements == 12 * 5, fc
        assert fc[0].outputs and all(fc[0].outputs), fc
        stored[mode] = (fc[0].weight_type, flatbuffer.has_quantized_tensors(parsed))
    assert stored == {
        "fp32": (s.TensorType.FLOAT32, False),
        "fp16": (s.TensorType.FLOAT16, False),
        "int8": (s.TensorType.INT8, True),
    }
    # An op without a constant input has no weight.
    [add] = flatbuffer.op_weights(flatbuffer.parse(_tiny_model()))
    assert (add.op, add.weight_type, add.weight_elements, add.outputs) == ("ADD", -1, 0, ("y",))
