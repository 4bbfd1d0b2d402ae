"""Tests of the Keras 3 <-> tf_keras bridge, on real Keras, tf_keras and TF-MOT."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tflight
from tflight import bridge
from tflight._keras import is_keras3_model, is_tf_keras_model, keras, tf_keras, tfmot
from tflight.errors import BridgeError, UnsupportedLayerError

ROOT = Path(__file__).resolve().parents[1]


# -- model builders (Keras 3) ----------------------------------------------


def _multi_io():
    """Two inputs, two outputs, a layer shared by both branches, graph ops."""
    k = keras
    a = k.Input((6,), name="a")
    b = k.Input((6,), name="b")
    shared = k.layers.Dense(4, activation="hard_sigmoid", name="shared")
    x = shared(a) + 3.0
    y = k.ops.multiply(shared(b), 0.5)
    z = k.layers.Concatenate(name="cat")([x, y])
    o1 = k.layers.Dense(2, activation="silu", name="o1")(z)
    o2 = k.layers.BatchNormalization(name="bn")(z)
    return k.Model([a, b], {"logits": o1, "features": o2}, name="multi_io")


def _nested():
    """A Sequential and a Functional model nested in a Functional model, one called twice."""
    k = keras
    seq = k.Sequential(
        [k.Input((8,)), k.layers.Dense(8, name="s_dense"), k.layers.LeakyReLU(0.2, name="s_lrelu")],
        name="inner_seq",
    )
    i = k.Input((8,))
    f = k.Model(i, k.layers.Dense(3, activation="hard_silu", name="f_dense")(i), name="inner_fn")
    x = k.Input((8,), name="x")
    h = seq(seq(x))
    out = f(k.layers.Dropout(0.3, name="drop")(h))
    return k.Model(x, out, name="nested")


def _preprocessing():
    """Rescaling and an adapted Normalization in front of a small CNN."""
    k = keras
    norm = k.layers.Normalization(axis=-1, name="norm")
    norm.adapt(np.random.default_rng(1).uniform(0, 16, size=(64, 8, 8, 1)).astype("float32"))
    x = k.Input((8, 8, 1), name="img")
    h = k.layers.Rescaling(1 / 16.0, offset=-0.5, name="rescale")(x)
    h = norm(h)
    h = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    h = k.layers.ReLU(max_value=6.0, name="relu6")(h)
    h = k.layers.SeparableConv2D(4, 3, name="sep")(h)
    h = k.layers.GlobalAveragePooling2D(name="gap")(h)
    h = k.layers.Lambda(lambda t: t * 2.0 - 1.0, name="lam")(h)
    return k.Model(x, k.layers.Softmax(name="softmax")(h), name="preprocessing")


def _mobilenet_v3_small_backbone():
    """A keras.applications backbone nested in a classifier, as users fine-tune them."""
    backbone = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg"
    )
    backbone.trainable = False  # the usual fine-tuning set-up
    x = keras.Input((32, 32, 3), name="image")
    h = keras.layers.Dropout(0.2, name="head_dropout")(backbone(x))
    return keras.Model(x, keras.layers.Dense(10, name="head")(h), name="classifier")


BUILDERS = {
    "multi_io": _multi_io,
    "nested": _nested,
    "preprocessing": _preprocessing,
    "mobilenet_v3_small_backbone": _mobilenet_v3_small_backbone,
}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def bridged(request):
    """(Keras 3 model, its tf_keras rebuild, the Keras 3 model rebuilt back)."""
    keras.utils.set_random_seed(0)
    source = BUILDERS[request.param]()
    forward = tflight.to_tf_keras(source)
    back = tflight.to_keras3(forward)
    return source, forward, back


def _inputs(model, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(3, *t.shape[1:])).astype("float32") for t in model.inputs]
    return xs[0] if len(xs) == 1 else xs


def _outputs(model, x):
    out = model(x, training=False)
    if isinstance(out, dict):
        return [np.asarray(out[k]) for k in sorted(out)]
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return [np.asarray(out)]


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


# -- happy paths -----------------------------------------------------------


def test_forward_rebuild_is_tf_keras_and_agrees(bridged):
    source, forward, _ = bridged
    assert is_tf_keras_model(forward)
    report = bridge.report_of(forward)
    assert report is not None and report.passed
    assert report.max_abs_diff <= 1e-5
    # Independent check on other inputs than the bridge's own.
    for p, q in zip(
        _outputs(source, _inputs(source, 7)), _outputs(forward, _inputs(source, 7)), strict=True
    ):
        np.testing.assert_allclose(p, q, atol=1e-5, rtol=0)


def test_weights_are_copied_exactly(bridged):
    source, forward, _ = bridged
    assert len(source.trainable_weights) == len(forward.trainable_weights)
    src = [w for w in source.get_weights()]
    dst = [w for w in forward.get_weights()]
    assert len(src) == len(dst)
    for a, b in zip(src, dst, strict=True):
        np.testing.assert_array_equal(a, b)


def test_round_trip_is_exact(bridged):
    source, _, back = bridged
    assert is_keras3_model(back)
    x = _inputs(source, 3)
    for p, q in zip(_outputs(source, x), _outputs(back, x), strict=True):
        np.testing.assert_array_equal(p, q)
    # Same layer classes, names and weights layout.
    assert [(type(a).__name__, a.name) for a in _leaf_layers(source)] == [
        (type(b).__name__, b.name) for b in _leaf_layers(back)
    ]
    assert [w.shape for w in source.get_weights()] == [w.shape for w in back.get_weights()]
    assert len(back.trainable_weights) == len(source.trainable_weights)


def test_source_model_is_not_modified():
    keras.utils.set_random_seed(0)
    source = _multi_io()
    config = json.dumps(source.get_config(), sort_keys=True, default=str)
    weights = source.get_weights()
    nodes = [len(layer._inbound_nodes) for layer in source.operations]
    forward = tflight.to_tf_keras(source)
    assert json.dumps(source.get_config(), sort_keys=True, default=str) == config
    for a, b in zip(weights, source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [len(layer._inbound_nodes) for layer in source.operations] == nodes
    # The reverse leaves the tf_keras model alone too (and the Keras 3 source).
    forward_nodes = [len(layer._inbound_nodes) for layer in forward.layers]
    tflight.to_keras3(forward)
    assert [len(layer._inbound_nodes) for layer in forward.layers] == forward_nodes
    assert [len(layer._inbound_nodes) for layer in source.operations] == nodes


def test_trained_model_keeps_its_accuracy(keras3_cnn, digits):
    forward = tflight.to_tf_keras(keras3_cnn)
    p = np.asarray(keras3_cnn(digits.x_test, training=False))
    q = np.asarray(forward(digits.x_test, training=False))
    np.testing.assert_allclose(p, q, atol=1e-5, rtol=0)
    acc = float(np.mean(q.argmax(-1) == digits.y_test))
    assert acc == float(np.mean(p.argmax(-1) == digits.y_test))
    assert acc > 0.3  # a trained model, well above chance (0.1)
    assert forward.name == keras3_cnn.name
    assert isinstance(forward, tf_keras().Sequential)


def test_same_generation_is_returned_as_is(tf_keras_cnn, keras3_cnn):
    assert tflight.to_tf_keras(tf_keras_cnn) is tf_keras_cnn
    assert tflight.to_keras3(keras3_cnn) is keras3_cnn


def test_shared_layer_stays_shared():
    forward = tflight.to_tf_keras(_multi_io())
    shared = forward.get_layer("shared")
    assert len(shared._inbound_nodes) == 2
    assert set(forward.output) == {"logits", "features"}


def test_bridged_model_goes_through_tfmot_and_back(digits):
    """The purpose of the bridge: TF-MOT pruning on a Keras 3 model, handed back."""
    k = keras
    keras.utils.set_random_seed(0)
    x = k.Input((8, 8, 1))
    h = k.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    h = k.layers.Flatten()(h) * 0.5  # a graph operation, kept through TF-MOT
    model = k.Model(x, k.layers.Dense(10, name="logits")(h), name="for_tfmot")
    mot = tfmot()
    forward = tflight.to_tf_keras(model)
    pruned = mot.sparsity.keras.prune_low_magnitude(
        forward,
        pruning_schedule=mot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1),
    )
    pruned.compile(
        optimizer="adam",
        loss=tf_keras().losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pruned.fit(
        digits.x_train[:128],
        digits.y_train[:128],
        epochs=1,
        batch_size=32,
        verbose=0,
        callbacks=[mot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    back = tflight.to_keras3(stripped)
    kernel = back.get_layer("conv").get_weights()[0]
    assert 0.45 <= float(np.mean(kernel == 0)) <= 0.55
    np.testing.assert_array_equal(
        np.asarray(back(digits.x_test[:16])), np.asarray(stripped(digits.x_test[:16]))
    )


def test_report_summary():
    lines = []
    report = bridge.BridgeReport(
        source="m",
        target="m",
        direction=bridge.Direction.TO_TF_KERAS,
        max_abs_diff=2e-6,
        output_diffs=(1e-6, 2e-6),
        atol=1e-5,
        num_layers=7,
        seconds=0.5,
    )
    report.summary(print_fn=lines.append)
    assert lines == [
        "to_tf_keras: m -> m: PASS",
        "  max abs diff 2e-06 (atol 1e-05)",
        "  per output: 1e-06, 2e-06",
        "  layers translated: 7, 0.50 s",
    ]


# -- the extension hook ----------------------------------------------------


@keras.saving.register_keras_serializable(package="tflight_tests")
class Scale(keras.layers.Layer):
    """A custom Keras 3 layer: x * w, one weight per channel."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * self.w


class SubScale(Scale):
    pass


def _tfk_scale(layer, *, wrong=False):
    tfk = tf_keras()

    class TfkScale(tfk.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w + (1.0 if wrong else 0.0)

    return TfkScale(name=layer.name)


def _scale_model(cls=Scale):
    x = keras.Input((5,))
    layer = cls(name="scale")
    model = keras.Model(x, layer(x), name="custom")
    layer.set_weights([np.arange(1, 6, dtype="float32")])
    return model


@pytest.fixture
def registered():
    added = []

    def add(*args, **kwargs):
        t = bridge.register(*args, **kwargs)
        added.append(t)
        return t

    yield add
    for t in added:
        bridge.unregister(t)


def test_custom_layer_without_translation_is_refused():
    with pytest.raises(UnsupportedLayerError) as e:
        tflight.to_tf_keras(_scale_model())
    msg = str(e.value)
    assert "'scale'" in msg and "Scale" in msg and "tflight.bridge.register" in msg


def test_registered_translation_covers_subclasses(registered):
    registered(Scale, _tfk_scale)
    forward = tflight.to_tf_keras(_scale_model(SubScale))
    np.testing.assert_array_equal(forward.get_layer("scale").get_weights()[0], np.arange(1, 6))
    assert bridge.report_of(forward).max_abs_diff == 0.0


def test_registered_predicate_and_reverse_direction(registered):
    registered(lambda layer: type(layer).__name__ == "Scale", _tfk_scale)
    forward = tflight.to_tf_keras(_scale_model())
    registered(
        lambda layer: type(layer).__name__ == "TfkScale",
        lambda layer: Scale(name=layer.name),
        direction="to_keras3",
    )
    back = tflight.to_keras3(forward)
    assert isinstance(back.get_layer("scale"), Scale)
    x = np.ones((2, 5), "float32")
    np.testing.assert_array_equal(np.asarray(back(x)), np.arange(1, 6)[None].repeat(2, 0))


def test_wrong_translation_fails_verification(registered):
    registered(Scale, lambda layer: _tfk_scale(layer, wrong=True))
    with pytest.raises(BridgeError, match=r"disagrees .* by up to 1"):
        tflight.to_tf_keras(_scale_model())


def test_translation_with_other_weights_is_refused(registered):
    registered(Scale, lambda layer: tf_keras().layers.Dense(5, name=layer.name))
    with pytest.raises(BridgeError, match="has 1 weights but .* has 2"):
        tflight.to_tf_keras(_scale_model())


def test_failing_translation_names_the_layer(registered):
    def boom(layer):
        raise RuntimeError("no luck")

    registered(Scale, boom, name="boom")
    with pytest.raises(BridgeError, match="'boom' failed on layer 'scale'.*no luck"):
        tflight.to_tf_keras(_scale_model())


def test_register_validates_its_arguments():
    with pytest.raises(BridgeError, match="translate must be a callable"):
        bridge.register(Scale, "not callable")
    with pytest.raises(BridgeError, match="direction must be one of"):
        bridge.register(Scale, _tfk_scale, direction="sideways")
    t = bridge.Translation(matches=bool, translate=_tfk_scale)
    with pytest.raises(BridgeError, match="not registered"):
        bridge.unregister(t)


# -- error paths -----------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="sub")
        self.d = keras.layers.Dense(2)

    def call(self, x):
        return self.d(x)


def test_subclassed_model_is_refused():
    m = Subclassed()
    m(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedLayerError, match="'sub' is a subclassed model .*Functional"):
        tflight.to_tf_keras(m)


def test_not_a_model_is_refused():
    with pytest.raises(BridgeError, match="expects a Keras 3 keras.Model, got str"):
        tflight.to_tf_keras("model.keras")
    with pytest.raises(BridgeError, match="expects a tf_keras Model, got ndarray"):
        tflight.to_keras3(np.zeros(3))


def test_unbuilt_sequential_is_refused():
    m = keras.Sequential([keras.layers.Dense(2)], name="unbuilt")
    with pytest.raises(BridgeError, match="'unbuilt' has no defined inputs"):
        tflight.to_tf_keras(m)


def test_option_without_counterpart_is_refused():
    x = keras.Input((4,))
    m = keras.Model(x, keras.layers.Dense(3, lora_rank=2, name="lora")(x))
    with pytest.raises(UnsupportedLayerError, match="'lora' .*lora_rank=2"):
        tflight.to_tf_keras(m)


def test_negative_atol_is_refused(keras3_cnn):
    with pytest.raises(BridgeError, match="atol must be >= 0, got -1"):
        tflight.to_tf_keras(keras3_cnn, atol=-1)


def test_pruning_wrapper_must_be_stripped_first(tf_keras_cnn):
    mot = tfmot()
    clone = tf_keras().models.clone_model(tf_keras_cnn)
    pruned = mot.sparsity.keras.prune_low_magnitude(clone)
    with pytest.raises(UnsupportedLayerError, match="strip the model first"):
        tflight.to_keras3(pruned)


# -- slow: more applications -----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, shape",
    [("EfficientNetB0", (32, 32, 3)), ("ConvNeXtTiny", (32, 32, 3))],
)
def test_more_applications(name, shape):
    keras.utils.set_random_seed(0)
    source = getattr(keras.applications, name)(weights=None, input_shape=shape, classes=10)
    forward = tflight.to_tf_keras(source)
    assert bridge.report_of(forward).passed
    back = tflight.to_keras3(forward)
    x = _inputs(source)
    np.testing.assert_array_equal(_outputs(source, x)[0], _outputs(back, x)[0])


# -- the user's Keras is left alone ------------------------------------------


_PROBE = """
import json, os
import tensorflow as tf
result = {"env": os.environ.get("TF_USE_LEGACY_KERAS")}
if {use_tflight}:
    import tflight
    from tflight._keras import tfmot
    import keras as k3
    inp = k3.Input((3,))
    m = k3.Model(inp, k3.layers.Dense(2)(inp) + 1.0)
    tflight.to_tf_keras(m)
    tfmot()
    result["env_after"] = os.environ.get("TF_USE_LEGACY_KERAS")
import keras
result["keras"] = keras.__version__
result["tf_keras_module"] = tf.keras.__name__
result["tf_keras_version"] = tf.keras.__version__
result["same_dense"] = tf.keras.layers.Dense is keras.layers.Dense
print("RESULT" + json.dumps(result))
"""


def _probe(use_tflight: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE).replace("{use_tflight}", str(use_tflight))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(li for li in proc.stdout.splitlines() if li.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.slow
def test_user_keras_is_unchanged_after_import_and_bridge():
    plain = _probe(False)
    with_tflight = _probe(True)
    assert with_tflight["keras"].startswith("3.")
    assert with_tflight["env"] is None and with_tflight["env_after"] is None
    for key in ("keras", "tf_keras_module", "tf_keras_version", "same_dense"):
        assert with_tflight[key] == plain[key], key
    assert with_tflight["same_dense"] is True


# -- more shapes of models ---------------------------------------------------


def test_dict_inputs_agree_both_ways():
    k = keras
    inputs = {"left": k.Input((4,), name="left"), "right": k.Input((4,), name="right")}
    h = k.layers.Subtract(name="sub")([inputs["left"], inputs["right"]])
    model = k.Model(inputs, k.layers.Dense(2, name="d")(h), name="dict_in")
    forward = tflight.to_tf_keras(model)
    assert bridge.report_of(forward).passed
    back = tflight.to_keras3(forward)
    x = {"left": np.ones((2, 4), "float32"), "right": np.zeros((2, 4), "float32")}
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(back(x)))


def test_native_tf_keras_graph_ops_and_activations_reach_keras3():
    """tf_keras' own TFOpLambda layers and hard_sigmoid (which Keras 3 redefined)."""
    import tensorflow as tf

    tfk = tf_keras()
    tfk.utils.set_random_seed(0)
    x = tfk.Input((5,), name="x")
    h = tfk.layers.Dense(4, activation="hard_sigmoid", name="hs")(x)
    h = tf.nn.relu6(h * 3.0 + 1.0)
    out = tfk.layers.Dense(2, activation=tf.nn.relu6, name="r6")(h)
    model = tfk.Model(x, out, name="native")
    back = tflight.to_keras3(model)
    assert bridge.report_of(back).passed
    data = np.random.default_rng(0).normal(size=(4, 5)).astype("float32") * 4
    np.testing.assert_allclose(np.asarray(back(data)), np.asarray(model(data)), atol=1e-6)


def test_custom_activation_function_is_refused():
    def doubled(t):
        return t * 2.0

    x = keras.Input((3,))
    m = keras.Model(x, keras.layers.Dense(2, activation=doubled, name="odd")(x))
    with pytest.raises(UnsupportedLayerError, match="'odd' \\(Dense\\) uses activation"):
        tflight.to_tf_keras(m)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_bridged_model_saves_and_loads_in_tf_keras(tmp_path, suffix):
    """Graph ops and Keras-3-only activations survive tf_keras save/load and cloning."""
    x = keras.Input((5,))
    h = keras.layers.Dense(4, activation="hard_sigmoid", name="d")(x)
    h = keras.layers.Activation("hard_silu", name="act")(h) + 1.0
    model = keras.Model(x, h, name="saveable")
    forward = tflight.to_tf_keras(model)
    path = tmp_path / f"m{suffix}"
    forward.save(path)
    loaded = tf_keras().models.load_model(path)
    clone = tf_keras().models.clone_model(forward)
    clone.set_weights(forward.get_weights())
    data = np.random.default_rng(0).uniform(-4, 4, size=(8, 5)).astype("float32")
    for other in (loaded, clone):
        np.testing.assert_array_equal(np.asarray(other(data)), np.asarray(model(data)))


# -- layer kinds, table-driven -----------------------------------------------

_L = keras.layers
LAYER_CASES = {
    "embedding_lstm": (((7,), "int32"), lambda: [_L.Embedding(20, 8, mask_zero=True), _L.LSTM(6)]),
    "gru_simple_rnn": (
        ((7, 4), "float32"),
        lambda: [_L.GRU(5, return_sequences=True), _L.SimpleRNN(3)],
    ),
    "bidirectional": (((7, 4), "float32"), lambda: [_L.Bidirectional(_L.LSTM(3))]),
    "time_distributed": (((7, 4), "float32"), lambda: [_L.TimeDistributed(_L.Dense(3))]),
    "conv1d": (((16, 3), "float32"), lambda: [_L.Conv1D(4, 3), _L.GlobalAveragePooling1D()]),
    "conv2d_transpose": (
        ((8, 8, 2), "float32"),
        lambda: [_L.Conv2DTranspose(3, 3, strides=2), _L.UpSampling2D(), _L.Cropping2D(1)],
    ),
    "prelu_elu_gelu": (
        ((6,), "float32"),
        lambda: [_L.Dense(4), _L.PReLU(), _L.ELU(), _L.Dense(2, activation="gelu")],
    ),
    "resizing": (((8, 8, 3), "float32"), lambda: [_L.Resizing(4, 4), _L.CenterCrop(2, 2)]),
    "group_layer_norm": (
        ((4, 4, 4), "float32"),
        lambda: [_L.GroupNormalization(2), _L.LayerNormalization()],
    ),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_kinds_round_trip(case):
    (shape, dtype), make_layers = LAYER_CASES[case]
    keras.utils.set_random_seed(0)
    x = keras.Input(shape, dtype=dtype)
    h = x
    for layer in make_layers():
        h = layer(h)
    source = keras.Model(x, h, name=case)
    forward = tflight.to_tf_keras(source)
    assert bridge.report_of(forward).passed
    back = tflight.to_keras3(forward)
    assert bridge.compare(source, back, atol=0.0).passed  # exact


def test_multi_head_attention_with_two_inputs():
    keras.utils.set_random_seed(0)
    q = keras.Input((5, 8), name="q")
    v = keras.Input((3, 8), name="v")
    source = keras.Model([q, v], _L.MultiHeadAttention(2, 4, name="mha")(q, v), name="attn")
    forward = tflight.to_tf_keras(source)
    assert bridge.report_of(forward).max_abs_diff <= 1e-5
    assert bridge.compare(source, tflight.to_keras3(forward), atol=0.0).passed


class WiderDense(keras.layers.Dense):
    """A user subclass that changes defaults only: computes what Dense computes."""

    def __init__(self, units=16, **kwargs):
        super().__init__(units, **kwargs)


class ShiftedDense(keras.layers.Dense):
    def call(self, x):
        return super().call(x) + 1.0


def test_subclass_of_builtin_without_own_call_is_translated():
    x = keras.Input((4,))
    source = keras.Model(x, WiderDense(name="wide")(x))
    forward = tflight.to_tf_keras(source)
    assert type(forward.get_layer("wide")).__name__ == "Dense"
    assert bridge.report_of(forward).max_abs_diff == 0.0


def test_subclass_with_own_call_needs_a_translation():
    x = keras.Input((4,))
    source = keras.Model(x, ShiftedDense(3, name="shifted")(x))
    with pytest.raises(UnsupportedLayerError, match="'shifted' of class .*ShiftedDense"):
        tflight.to_tf_keras(source)


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_keras_ops_with_kwargs_lists_slices_and_constants(tmp_path):
    from keras import ops

    x = keras.Input((6, 4), name="seq")
    a = ops.mean(x, axis=1)
    b = ops.concatenate([a, x[:, 0, :2]], axis=-1)
    c = ops.transpose(ops.reshape(b, (-1, 3, 2)), (0, 2, 1))
    e = keras.layers.Flatten(name="flat")(c)
    n = keras.layers.Normalization(mean=[1.0] * 6, variance=[2.0] * 6, name="fixed_norm")(e)
    source = keras.Model(x, ops.sigmoid(n) * ops.cast(ops.shape(x)[1], "float32"), name="ops")
    forward = tflight.to_tf_keras(source)
    assert bridge.report_of(forward).max_abs_diff == 0.0
    assert bridge.compare(source, tflight.to_keras3(forward), atol=0.0).passed
    for suffix in (".h5", ".keras"):
        forward.save(tmp_path / f"m{suffix}")
        loaded = tf_keras().models.load_model(tmp_path / f"m{suffix}")
        assert bridge.compare(source, loaded, atol=0.0).passed, suffix
