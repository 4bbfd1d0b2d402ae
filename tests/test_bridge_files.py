"""Bridged models in saved files: only the bridge's own graph operations load.

A bridged model stores its graph operations by name (a TensorFlow function in
Keras 3 files, a serialized Keras 3 operation in tf_keras files). These tests
craft files that name other functions and check that loading refuses them
before anything runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import tflight
from tflight._keras import keras, tf, tf_keras
from tflight.bridge.ops import TF_OPERATIONS, tf_operation
from tflight.errors import BridgeError, UnsupportedLayerError

pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")


def _rewrite(path, suffix, edit):
    """Applies `edit` to the model config stored in a .keras or .h5 file."""
    if suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            members = {name: z.read(name) for name in z.namelist()}
        members["config.json"] = json.dumps(edit(json.loads(members["config.json"]))).encode()
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
    else:
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            f.attrs["model_config"] = json.dumps(edit(config))


def _layer_configs(config):
    return [layer["config"] for layer in config["config"]["layers"]]


@pytest.fixture(scope="module")
def keras3_with_tf_op():
    """A Keras 3 model made by to_keras3 from a tf_keras graph with a TF function."""
    tfk = tf_keras()
    x = tfk.Input((3,), name="x")
    model = tfk.Model(x, tf.math.multiply(tfk.layers.Dense(2, name="d")(x), 2.0), name="ops")
    return tflight.to_keras3(model)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_file_naming_another_tf_function_is_refused(keras3_with_tf_op, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    keras3_with_tf_op.save(path)
    # The untouched file loads and computes what the model does.
    loaded = keras.saving.load_model(path)
    data = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(np.asarray(loaded(data)), np.asarray(keras3_with_tf_op(data)))

    target = tmp_path / "written_by_the_model_file.txt"

    def craft(config):
        for layer in _layer_configs(config):
            if layer.get("symbol") == "math.multiply":
                layer["symbol"] = "io.write_file"
                layer["template"] = {"args": [str(target), "pwned"], "kwargs": {}}
        return config

    _rewrite(path, suffix, craft)
    # Keras wraps errors raised while deserializing in a TypeError of its own.
    with pytest.raises((BridgeError, TypeError), match=r"Refusing .* tf\.io\.write_file"):
        model = keras.saving.load_model(path)
        model(data)  # what the crafted file would do on first use
    assert not target.exists()


@pytest.fixture(scope="module")
def tf_keras_with_keras_op():
    """A tf_keras model made by to_tf_keras from a Keras 3 graph with `x + 3.0`."""
    x = keras.Input((3,), name="x")
    model = keras.Model(x, keras.layers.Dense(2, name="d")(x) + 3.0, name="ops")
    return tflight.to_tf_keras(model)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tf_keras_file_naming_another_keras_object_is_refused(
    tf_keras_with_keras_op, tmp_path, suffix
):
    path = tmp_path / f"model{suffix}"
    tf_keras_with_keras_op.save(path)
    loaded = tf_keras().models.load_model(path)
    data = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(
        np.asarray(loaded(data)), np.asarray(tf_keras_with_keras_op(data))
    )

    def craft(config):
        for layer in _layer_configs(config):
            if "operation" in layer:
                # A Keras layer that reads a file when built from its config.
                layer["operation"] = {
                    "module": "keras.src.layers.preprocessing.string_lookup",
                    "class_name": "StringLookup",
                    "config": {"vocabulary": str(path)},
                    "registered_name": None,
                }
        return config

    _rewrite(path, suffix, craft)
    with pytest.raises((BridgeError, TypeError), match=r"Refusing .*string_lookup\.StringLookup"):
        tf_keras().models.load_model(path)


def test_every_listed_tf_operation_exists_and_none_touches_files():
    for symbol in sorted(TF_OPERATIONS):
        assert callable(tf_operation(symbol)), symbol
    for bad in (
        "io.write_file",
        "io.read_file",
        "py_function",
        "numpy_function",
        "load_op_library",
        "load_library",
        "print",
        "raw_ops.WriteFile",
        "compat.v1.py_func",
        "debugging.experimental.enable_dump_debug_info",
        "summary.write",
        "while_loop",
        "__import__",
        3,
    ):
        with pytest.raises(BridgeError, match="Refusing"):
            tf_operation(bad)


def test_to_keras3_refuses_a_tf_function_outside_the_list():
    tfk = tf_keras()
    x = tfk.Input((4,), name="x")
    model = tfk.Model(x, tf.strings.as_string(x), name="strings")
    with pytest.raises(UnsupportedLayerError, match=r"calls tf\.strings\.as_string"):
        tflight.to_keras3(model, verify=False)


_LOADER = """
import json, sys
import numpy as np
import keras, tf_keras
import tflight.bridge

objects = tflight.bridge.custom_objects()
x = np.linspace(-4, 4, 6, dtype="float32").reshape(2, 3)
out = {}
for path in sys.argv[1:]:
    if path.endswith("k3.keras"):
        model = keras.saving.load_model(path, custom_objects=objects)
    else:
        model = tf_keras.models.load_model(path, custom_objects=objects)
    out[path] = np.asarray(model(x)).tolist()
print("RESULT" + json.dumps(out))
"""


def test_bridged_files_load_in_a_fresh_process(keras3_with_tf_op, tmp_path):
    """Both directions' files load where only `tflight.bridge.custom_objects()` is known."""
    root = Path(__file__).resolve().parents[1]
    x = keras.Input((3,), name="x")
    # hard_swish: a Keras 3 activation tf_keras lacks; `+ 3.0`: a graph operation.
    source = keras.Model(x, keras.layers.Dense(2, activation="hard_swish", name="d")(x) + 3.0)
    forward = tflight.to_tf_keras(source)
    paths = [tmp_path / "k3.keras", tmp_path / "tfk.keras", tmp_path / "tfk.h5"]
    keras3_with_tf_op.save(paths[0])
    forward.save(paths[1])
    forward.save(paths[2])
    proc = subprocess.run(
        [sys.executable, "-c", _LOADER, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    data = np.linspace(-4, 4, 6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(out[str(paths[0])], np.asarray(keras3_with_tf_op(data)))
    for path in paths[1:]:
        np.testing.assert_array_equal(out[str(path)], np.asarray(source(data)))
