"""Custom layers through the bridge: `register` as documented, then compression.

The docstring example of `tflight.bridge.register` runs here as written; a
twin class defined in a user's file needs nothing more than the `register`
call for TF-MOT to clone it; layers a technique cannot handle are named with
the fix.
"""

from __future__ import annotations

import doctest
import importlib.util
import textwrap

import numpy as np
import pytest

import tflight
from tflight import bridge
from tflight._keras import keras, tf_keras
from tflight.bridge import registry
from tflight.errors import BridgeError, UnsupportedLayerError


def test_register_docstring_example_runs_as_written(tmp_path):
    examples = doctest.DocTestParser().get_examples(bridge.register.__doc__)
    assert len(examples) > 5
    # Run the examples as one script file (TensorFlow's AutoGraph reads the
    # source of `call` methods), collecting the values of the lines with output.
    lines, wanted = [], []
    for ex in examples:
        if ex.want:
            lines.append(f"_results.append(({ex.source.strip()}))")
            wanted.append(ex.want.strip())
        else:
            lines.append(ex.source)
    script = tmp_path / "register_example.py"
    script.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines))
    results: list = []
    registered = list(registry._TRANSLATIONS)
    exec(compile(script.read_text(), str(script), "exec"), {"_results": results})
    assert [repr(r) for r in results] == wanted
    assert registry._TRANSLATIONS == registered  # the example unregisters what it added


MY_LAYERS = '''
import keras
import tf_keras
import tflight.bridge


@keras.saving.register_keras_serializable(package="my_layers")
class Shift(keras.layers.Layer):
    """x + b, one offset per channel, with an option in its config."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def build(self, input_shape):
        self.b = self.add_weight(shape=input_shape[-1:], initializer="zeros", name="b")

    def call(self, x):
        return x * self.scale + self.b

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


class TfKerasShift(tf_keras.layers.Layer):
    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def build(self, input_shape):
        self.b = self.add_weight(shape=input_shape[-1:], initializer="zeros", name="b")

    def call(self, x):
        return x * self.scale + self.b

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


TRANSLATION = tflight.bridge.register(Shift, lambda layer: TfKerasShift(**layer.get_config()))
'''


@pytest.fixture(scope="module")
def my_layers(tmp_path_factory):
    """A user's layers file, imported the way a `--custom-objects` option would."""
    path = tmp_path_factory.mktemp("user") / "my_layers.py"
    path.write_text(textwrap.dedent(MY_LAYERS))
    spec = importlib.util.spec_from_file_location("my_layers_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    bridge.unregister(module.TRANSLATION)


@pytest.fixture(scope="module")
def shift_model(my_layers, tmp_path_factory):
    """A Functional CNN with the custom layer, saved and loaded as a user's file."""
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    h = my_layers.Shift(scale=2.0, name="shift")(h)
    h = keras.layers.Flatten(name="flat")(h)
    model = keras.Model(x, keras.layers.Dense(10, name="logits")(h), name="with_shift")
    model.get_layer("shift").set_weights([np.array([0.5, -1.0, 2.0, 0.0], "float32")])
    path = tmp_path_factory.mktemp("model") / "with_shift.keras"
    model.save(path)
    return keras.saving.load_model(path)


def test_custom_layer_from_a_users_file_bridges_and_keeps_its_options(shift_model):
    forward = tflight.to_tf_keras(shift_model)
    assert bridge.report_of(forward).max_abs_diff == 0.0
    twin = forward.get_layer("shift")
    assert type(twin).__name__ == "TfKerasShift" and twin.scale == 2.0
    assert twin.dtype == "float32"
    np.testing.assert_array_equal(twin.get_weights()[0], [0.5, -1.0, 2.0, 0.0])
    # The source layer's get_config is its own again after the translation.
    assert "get_config" not in vars(shift_model.get_layer("shift"))
    assert isinstance(shift_model.get_layer("shift").get_config()["dtype"], dict)


def test_twin_class_is_cloned_and_saved_by_tf_keras_without_registration(shift_model, tmp_path):
    tfk = tf_keras()
    forward = tflight.to_tf_keras(shift_model)
    clone = tfk.models.clone_model(forward)
    clone.set_weights(forward.get_weights())
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(clone(data)), np.asarray(forward(data)))
    forward.save(tmp_path / "m.keras")
    loaded = tfk.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(np.asarray(loaded(data)), np.asarray(forward(data)))


def test_qat_keeps_the_custom_layer_float_and_quantizes_the_rest(shift_model):
    qat = tflight.quantize(shift_model, unsupported="keep_float")
    kinds = {getattr(layer, "layer", layer).name: type(layer).__name__ for layer in qat.layers}
    assert kinds["shift"] == "TfKerasShift"  # kept float, unwrapped
    assert kinds["conv"] == "QuantizeWrapperV2" and kinds["logits"] == "QuantizeWrapperV2"


def test_qat_refusal_names_the_custom_layer(shift_model):
    with pytest.raises(UnsupportedLayerError, match="'shift'"):
        tflight.quantize(shift_model)


@pytest.mark.parametrize("technique", ["prune", "qat", "cluster"])
def test_unsupported_advice_names_the_layer_its_origin_and_the_fix(shift_model, technique):
    forward = tflight.to_tf_keras(shift_model)
    advice = bridge.unsupported_advice(forward.get_layer("shift"), technique)
    assert advice.startswith(
        "Layer 'shift' (custom layer TfKerasShift, translated from Keras 3 Shift)"
    )
    fix = {
        "prune": "get_prunable_weights()",
        "qat": "unsupported='keep_float'",
        "cluster": "get_clusterable_weights()",
    }[technique]
    assert fix in advice


def test_unsupported_advice_for_graph_operations_and_keras3_activations():
    x = keras.Input((4,), name="x")
    h = keras.layers.Activation("hard_swish", name="hswish")(keras.layers.Dense(3, name="d")(x))
    forward = tflight.to_tf_keras(keras.Model(x, h + 1.0))
    op = next(layer for layer in forward.layers if type(layer).__name__ == "KerasOperation")
    assert "graph operation (Add) with no weights" in bridge.unsupported_advice(op, "prune")
    advice = bridge.unsupported_advice(forward.get_layer("hswish"), "qat")
    assert "Keras 3 activation hard_silu" in advice and "keep_float" in advice
    with pytest.raises(BridgeError, match="technique must be one of"):
        bridge.unsupported_advice(op, "distill")


def test_keras3_activation_prints_by_name_in_tfmot_messages():
    x = keras.Input((4,), name="x")
    h = keras.layers.Activation("hard_swish", name="hswish")(keras.layers.Dense(3, name="d")(x))
    forward = tflight.to_tf_keras(keras.Model(x, h))
    activation = forward.get_layer("hswish").activation
    assert repr(activation) == "hard_silu" and activation.__name__ == "hard_silu"
    assert f"Activation {activation} not supported" == "Activation hard_silu not supported"


# -- blocks made of layers: register(..., inline) ----------------------------


class ResidualBlock(keras.layers.Layer):
    """A user block: conv -> BN -> relu, added to a projection of its input."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", name="conv")
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.proj = keras.layers.Conv2D(filters, 1, name="proj")

    def call(self, x, training=None):
        h = keras.ops.relu(self.bn(self.conv(x), training=training))
        return h + self.proj(x)


@pytest.fixture
def inlined(registered_inline):
    """A two-input, two-output model around a nested Sequential and two user blocks."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    stem = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, padding="same", name="stem_conv")],
        name="stem",
    )
    h = ResidualBlock(6, name="block1")(stem(image))
    h = ResidualBlock(6, name="block2")(h)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    merged = keras.layers.Concatenate(name="cat")([pooled, extra])
    outputs = {
        "digit": keras.layers.Dense(10, name="digit")(merged),
        "box": keras.layers.Dense(4, activation="sigmoid", name="box")(merged),
    }
    model = keras.Model({"image": image, "extra": extra}, outputs, name="two_heads")
    # Non-trivial BatchNormalization statistics.
    for name in ("block1", "block2"):
        bn = model.get_layer(name).bn
        bn.moving_mean.assign(np.linspace(-1, 1, 6).astype("float32"))
        bn.moving_variance.assign(np.linspace(0.5, 2, 6).astype("float32"))
    return model


@pytest.fixture
def registered_inline():
    t = bridge.register(ResidualBlock, bridge.inline)
    yield t
    bridge.unregister(t)


def test_user_block_registered_inline_round_trips_exactly(inlined):
    inner = (inlined.get_layer("block1").bn, inlined.get_layer("block1").conv)
    nodes = [len(layer._inbound_nodes) for layer in inner]
    forward = tflight.to_tf_keras(inlined)
    assert bridge.report_of(forward).max_abs_diff <= 1e-6
    block = forward.get_layer("block1")
    assert sorted(layer.name for layer in block.layers if layer.weights) == ["bn", "conv", "proj"]
    assert [len(layer._inbound_nodes) for layer in inner] == nodes
    back = tflight.to_keras3(forward)
    assert bridge.compare(inlined, back, atol=0.0).passed
    # Training mode reaches the BatchNormalization inside the inlined block.
    x = {"image": np.ones((4, 8, 8, 1), "float32"), "extra": np.zeros((4, 3), "float32")}
    trained = forward(x, training=True)["digit"]
    inferred = forward(x, training=False)["digit"]
    assert not np.allclose(np.asarray(trained), np.asarray(inferred))
    np.testing.assert_allclose(
        np.asarray(trained), np.asarray(inlined(x, training=True)["digit"]), atol=1e-5
    )


def test_inline_in_a_sequential_model_is_refused(registered_inline):
    model = keras.Sequential([keras.Input((8, 8, 1)), ResidualBlock(2, name="block")], name="seq")
    with pytest.raises(UnsupportedLayerError, match="'block' .*registered to be inlined"):
        tflight.to_tf_keras(model)
    with pytest.raises(BridgeError, match="passed to register"):
        bridge.inline(model.layers[0])


def test_custom_layer_comes_back_as_its_keras3_class_without_a_reverse_translation(
    shift_model, my_layers
):
    forward = tflight.to_tf_keras(shift_model)
    back = tflight.to_keras3(forward)
    layer = back.get_layer("shift")
    assert type(layer) is my_layers.Shift and layer.scale == 2.0
    assert bridge.compare(shift_model, back, atol=0.0).passed


def test_pruned_custom_layer_model_comes_back_to_keras3(shift_model, digits):
    """Prune the layers TF-MOT knows, leave the custom one, strip, and go back."""
    from tflight._keras import tfmot

    mot = tfmot()
    forward = tflight.to_tf_keras(shift_model)

    def prune(layer):
        if layer.name in ("conv", "logits"):
            return mot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=mot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1)
            )
        return layer

    pruned = tf_keras().models.clone_model(forward, clone_function=prune)
    pruned.compile(
        optimizer="adam",
        loss=tf_keras().losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruned.fit(
        digits.x_train[:64],
        digits.y_train[:64],
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[mot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    back = tflight.to_keras3(stripped)
    assert type(back.get_layer("shift")).__name__ == "Shift"
    assert float(np.mean(back.get_layer("logits").get_weights()[0] == 0)) >= 0.45
    x = digits.x_test[:8]
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(stripped(x)), atol=1e-5, rtol=0)
