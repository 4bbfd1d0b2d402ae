"""Structured channel pruning: coupled groups cut exactly, smaller models that convert.

The exactness check: zero (in a copy of the original) every input weight that
reads a channel the cut removes; the copy and the cut model must then compute
the same outputs, which holds only if every coupled layer was sliced at the
same indices.
"""

from __future__ import annotations

import numpy as np
import pytest

import converters
from tflight._keras import keras, tf_keras
from tflight.errors import CompressionError, UnsupportedLayerError
from tflight.shrink.channels import (
    APoZImportance,
    BNScaleImportance,
    MagnitudeImportance,
    TaylorImportance,
    _zero_removed_inputs,
    fine_tune,
    prune_channels,
)
from tflight.shrink.depgraph import DependencyGraph

GENERATIONS = {"keras3": lambda: keras, "tf_keras": tf_keras}


def _randomize_bn(model):
    rng = np.random.default_rng(1)
    for layer in _all_layers(model):
        if "BatchNormalization" in type(layer).__name__:
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


def _all_layers(model):
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


def _weights_snapshot(model):
    return [w.copy() for w in model.get_weights()]


def _check_exact(model, k, result, atol=1e-5):
    twin = k.models.clone_model(model)
    twin.set_weights(model.get_weights())
    graph = DependencyGraph(twin)
    keep = {g.gid: result.kept[g.name] for g in graph.groups() if g.name in result.kept}
    assert len(keep) == len(result.kept) > 0
    _zero_removed_inputs(graph, keep)
    x = np.random.default_rng(0).uniform(0, 1, (3, *model.input_shape[1:])).astype("float32")
    want = np.asarray(twin(x, training=False))
    got = np.asarray(result.model(x, training=False))
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5)
    return x


# ---- coupled patterns, one small model each --------------------------------------------


def _residual(k):
    i = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    y = k.layers.Conv2D(8, 3, padding="same")(x)
    x = k.layers.Add()([x, y])
    x = k.layers.ReLU()(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(i, k.layers.Dense(10)(x), name="residual")


def _concat(k):
    i = k.Input((8, 8, 1))
    a = k.layers.Conv2D(6, 3, padding="same", activation="relu")(i)
    b = k.layers.Conv2D(10, 1, activation="relu")(i)
    x = k.layers.Concatenate()([a, b])
    x = k.layers.Conv2D(8, 3, activation="relu")(x)
    x = k.layers.Flatten()(x)
    return k.Model(i, k.layers.Dense(10)(x), name="concat")


def _squeeze_excite(k):
    i = k.Input((8, 8, 1))
    x = k.layers.Rescaling(1 / 16.0)(i)
    x = k.layers.Conv2D(16, 3, padding="same", activation="swish")(x)
    s = k.layers.GlobalAveragePooling2D()(x)
    s = k.layers.Reshape((1, 1, 16))(s)
    s = k.layers.Conv2D(4, 1, activation="swish")(s)
    s = k.layers.Conv2D(16, 1, activation="sigmoid")(s)
    x = k.layers.Multiply()([x, s])
    x = k.layers.Conv2D(8, 1)(x)
    x = k.layers.GlobalMaxPooling2D()(x)
    return k.Model(i, k.layers.Dense(10)(x), name="squeeze_excite")


def _depthwise_bn(k):
    i = k.Input((8, 8, 1))
    x = k.layers.Conv2D(16, 3, padding="same", use_bias=False)(i)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.ReLU(6.0)(x)
    x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.ReLU(6.0)(x)
    x = k.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = k.layers.SeparableConv2D(12, 3, padding="same", depth_multiplier=2)(x)
    x = k.layers.BatchNormalization()(x)
    x = k.layers.Flatten()(x)
    return k.Model(i, k.layers.Dense(10)(x), name="depthwise_bn")


def _nested(k):
    i = k.Input((8, 8, 1))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = k.layers.Conv2D(12, 3, padding="same", activation="relu")(x)
    backbone = k.Model(i, x, name="backbone")
    j = k.Input((8, 8, 1))
    y = backbone(j)
    y = k.layers.Conv2D(16, 1, activation="relu")(y)
    y = k.layers.GlobalAveragePooling2D()(y)
    y = k.layers.Dropout(0.1)(y)
    y = k.layers.Dense(32, activation="relu")(y)
    return k.Model(j, k.layers.Dense(10)(y), name="nested")


def _sequential(k):
    return k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(8, 3, activation="relu"),
            k.layers.MaxPooling2D(),
            k.layers.Flatten(),
            k.layers.Dense(24, activation="relu"),
            k.layers.Dense(10),
        ],
        name="sequential",
    )


PATTERNS = {
    "residual_add": _residual,
    "concatenate": _concat,
    "squeeze_excite": _squeeze_excite,
    "depthwise_bn": _depthwise_bn,
    "nested_backbone": _nested,
    "sequential": _sequential,
}


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_coupled_pattern_cut_is_exact_and_smaller(pattern, generation):
    k = GENERATIONS[generation]()
    k.utils.set_random_seed(0)
    model = PATTERNS[pattern](k)
    _randomize_bn(model)
    before = _weights_snapshot(model)
    result = prune_channels(model, ratio=0.5)
    assert result.params_after < result.params_before
    assert result.macs_after < result.macs_before
    assert any(g.after < g.before for g in result.groups)
    assert type(result.model).__module__.split(".")[0] == type(model).__module__.split(".")[0]
    _check_exact(model, k, result)
    for a, b in zip(before, model.get_weights(), strict=True):  # the user's model is untouched
        np.testing.assert_array_equal(a, b)


def test_graph_couples_the_right_layers():
    model = _squeeze_excite(keras)
    graph = DependencyGraph(model)
    names = {g.name: g for g in graph.groups()}
    se = names["conv2d"] if "conv2d" in names else next(g for g in graph.groups() if g.size == 16)
    # The gate, the multiplied features and the projection's input are one group.
    assert se.prunable and any("conv2d" in p for p in se.producers) and len(se.producers) == 2
    assert not graph.group_of_layer(model.layers[-1].name).prunable  # the model output


@pytest.mark.parametrize("pattern", ["depthwise_bn", "concatenate", "nested_backbone"])
def test_cut_models_convert_and_run_in_litert(pattern, calib):
    keras.utils.set_random_seed(0)
    model = PATTERNS[pattern](keras)
    result = prune_channels(model, flops_target=0.5)
    assert result.macs_ratio <= 0.5
    out = converters.convert(result.model, "fp32")
    lite = converters.TFLiteModel(out.flatbuffer)
    np.testing.assert_allclose(
        lite.predict(calib[:4]), np.asarray(result.model(calib[:4])), atol=1e-4
    )


@pytest.fixture(scope="module", params=["MobileNetV2", "ResNet50", "EfficientNetB0"])
def application(request):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, request.param)(
        weights=None, input_shape=(32, 32, 3), classes=10
    )
    _randomize_bn(model)
    return model


def test_keras_applications_cut_exactly(application):
    result = prune_channels(application, flops_target=0.5, round_to=8)
    assert 0.45 <= result.macs_ratio <= 0.5
    assert result.params_after < 0.7 * result.params_before
    for g in result.groups:
        assert g.after == g.before or g.after % 8 == 0 or g.before < 8
    _check_exact(application, keras, result)


def test_tf_keras_application_cut_exactly():
    tfk = tf_keras()
    tfk.utils.set_random_seed(0)
    model = tfk.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    _randomize_bn(model)
    result = prune_channels(model, flops_target=0.5, importance="bn")
    assert type(result.model).__module__.startswith("tf_keras")
    _check_exact(model, tfk, result)


def test_mobilenetv2_cut_converts_to_int8():
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35
    )
    result = prune_channels(model, flops_target=0.5, round_to=8)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    out = converters.convert(result.model, "int8", representative_data=x)
    assert out.validation is None or out.validation.passed
    assert converters.TFLiteModel(out.flatbuffer).predict(x[:2]).shape == (2, 10)


@keras.saving.register_keras_serializable(package="tflight_tests")
class WideConv(keras.layers.Conv2D):
    """A user's subclass of Conv2D: still cut like a Conv2D."""


@keras.saving.register_keras_serializable(package="tflight_tests")
class Scale(keras.layers.Layer):
    """A custom layer with per-channel weights: the graph cannot follow it."""

    def build(self, shape):
        self.gain = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.gain


def test_unfamiliar_layers_block_only_their_groups():
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    tokens = keras.Input((6, 12), name="tokens")
    x = WideConv(16, 3, padding="same", activation="relu")(image)
    x = Scale()(x)  # the group of WideConv flows into it: blocked
    x = keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.Reshape((64, 12))(x)
    x = keras.layers.LSTM(8)(x)  # conv_b's group flows into an RNN: blocked
    t = keras.layers.Dense(16, activation="relu", name="token_proj")(tokens)
    t = keras.layers.MultiHeadAttention(2, 8)(t, t)  # token_proj's group: blocked
    t = keras.layers.GlobalAveragePooling1D()(t)
    t = keras.layers.Dense(24, activation="relu", name="token_mlp")(t)  # cuttable
    joined = keras.layers.Concatenate()([x, t])
    h = keras.layers.Dense(32, activation="relu", name="head")(joined)  # cuttable
    model = keras.Model(
        [image, tokens], [keras.layers.Dense(10, name="cls")(h), keras.layers.Dense(1, name="reg")(h)]
    )
    graph = DependencyGraph(model)
    cuttable = sorted(g.name for g in graph.prunable_groups())
    assert cuttable == ["head", "token_mlp"], cuttable
    result = prune_channels(model, ratio=0.5)
    assert {g.name: g.after for g in result.groups} == {"head": 16, "token_mlp": 12}
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    g2 = DependencyGraph(twin)
    _zero_removed_inputs(g2, {g.gid: result.kept[g.name] for g in g2.groups() if g.name in result.kept})
    rng = np.random.default_rng(0)
    xs = [rng.uniform(0, 1, (3, 8, 8, 1)).astype("float32"), rng.normal(size=(3, 6, 12)).astype("float32")]
    for a, b in zip(twin(xs), result.model(xs), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)
    with pytest.raises(UnsupportedLayerError, match="cannot be cut"):
        prune_channels(model, ratio={"token_proj": 0.5})


def test_keras_hub_backbone_with_a_new_head_cuts_exactly():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        use_pre_activation=False,
        image_shape=(32, 32, 3),
    )
    _randomize_bn(backbone)
    i = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(i))
    model = keras.Model(i, keras.layers.Dense(5)(x))
    result = prune_channels(model, flops_target=0.5, round_to=8)
    assert result.macs_ratio <= 0.5
    assert any("stack1_block0_0_conv" in g.name for g in result.groups)  # the residual shortcut
    _check_exact(model, keras, result)


# ---- criteria ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_cnn(digits):
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(10)(x))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(digits.x_train, digits.y_train, epochs=25, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize(
    "importance",
    [MagnitudeImportance(1), MagnitudeImportance(2), BNScaleImportance(), TaylorImportance(), APoZImportance()],
    ids=repr,
)
def test_every_criterion_cuts_exactly(importance, trained_cnn, digits):
    data = (digits.x_train[:64], digits.y_train[:64])
    result = prune_channels(trained_cnn, ratio=0.5, importance=importance, data=data)
    assert result.criterion == repr(importance)
    _check_exact(trained_cnn, keras, result)


def test_criteria_choose_differently(trained_cnn, digits):
    data = (digits.x_train[:64], digits.y_train[:64])
    kept = {
        name: prune_channels(trained_cnn, ratio=0.5, importance=name, data=data).kept
        for name in ("l1", "bn", "taylor")
    }
    assert any(
        not np.array_equal(kept["l1"][g], kept[other][g]) for other in ("bn", "taylor") for g in kept["l1"]
    )


@pytest.mark.parametrize("name", ["taylor", "apoz"])
def test_data_driven_criterion_without_data_says_so(name, trained_cnn):
    with pytest.raises(CompressionError, match="data=\\(x, y\\)"):
        prune_channels(trained_cnn, ratio=0.5, importance=name)


def test_global_ranking_meets_flops_target(trained_cnn):
    result = prune_channels(trained_cnn, flops_target=0.4, global_ranking=True)
    assert result.macs_ratio <= 0.4
    _check_exact(trained_cnn, keras, result)


def test_per_layer_ratio_and_rounding(trained_cnn):
    first = trained_cnn.layers[1].name
    result = prune_channels(trained_cnn, ratio={first: 0.6}, round_to=8)
    cut = {g.name: g for g in result.groups}
    assert cut[first].after == 8
    assert all(g.after == g.before for n, g in cut.items() if n != first)


# ---- bad requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"ratio": 1.0}, CompressionError, "in \\[0, 1\\)"),
        ({"ratio": -0.1}, CompressionError, "in \\[0, 1\\)"),
        ({"flops_target": 1.5}, CompressionError, "in \\(0, 1\\)"),
        ({"ratio": 0.5, "flops_target": 0.5}, CompressionError, "exactly one"),
        ({}, CompressionError, "exactly one"),
        ({"ratio": {"dense": 0.5}}, UnsupportedLayerError, "cannot be cut"),
        ({"ratio": {"no_such_layer": 0.5}}, UnsupportedLayerError, "No layer named"),
        ({"ratio": {"batch_normalization": 0.5}}, UnsupportedLayerError, "no output channels"),
        ({"ratio": 0.95}, CompressionError, "leaves no channel"),
        ({"ratio": 0.5, "round_to": 0}, CompressionError, "round_to"),
        ({"flops_target": 0.01}, CompressionError, "cannot be reached"),
        ({"ratio": 0.5, "importance": "l3"}, CompressionError, "Unknown importance"),
    ],
)
def test_bad_requests_raise_before_anything_changes(kwargs, error, match):
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(i)
    x = keras.layers.BatchNormalization(name="batch_normalization")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(i, keras.layers.Dense(10, name="dense")(x))
    before = _weights_snapshot(model)
    with pytest.raises(error, match=match):
        prune_channels(model, **kwargs)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(UnsupportedLayerError, match="subclassed"):
        prune_channels(net, ratio=0.5)


# ---- recovery and composition -------------------------------------------------------------


def _accuracy(predict, digits):
    return float(np.mean(np.argmax(predict(digits.x_test), -1) == digits.y_test))


def test_fine_tune_recovers_plain_and_distilled(trained_cnn, digits):
    def keras_accuracy(model):
        return _accuracy(lambda x: model.predict(x, verbose=0), digits)

    for teacher in (None, trained_cnn):
        result = prune_channels(trained_cnn, flops_target=0.5)
        cut = keras_accuracy(result.model)
        fine_tune(result.model, digits.x_train, digits.y_train, teacher=teacher, epochs=4)
        recovered = keras_accuracy(result.model)
        assert recovered > cut and recovered > keras_accuracy(trained_cnn) - 0.15


def test_channel_pruning_composes_with_pruning_qat_and_int8(digits):
    import tflight

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    fine_tune(model, digits.x_train, digits.y_train, epochs=15)
    result = prune_channels(model, flops_target=0.5)
    fine_tune(result.model, digits.x_train, digits.y_train, epochs=5)
    compile_args = {
        "optimizer": "adam",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    }
    pruned = tflight.prune(result.model, sparsity=0.3, compile=compile_args)
    tflight.fit(pruned, digits.x_train, digits.y_train, epochs=1, verbose=0)
    qat = tflight.quantize(tflight.strip_pruning(pruned), compile=compile_args)
    qat.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    out = converters.convert(qat, "int8", representative_data=digits.x_train[:64])
    lite = _accuracy(converters.TFLiteModel(out.flatbuffer).predict, digits)
    keras_qat = _accuracy(lambda x: np.asarray(qat(x, training=False)), digits)
    assert lite > 0.5 and abs(lite - keras_qat) < 0.05


# ---- low-rank factorization --------------------------------------------------------------


def _mlp_and_pointwise(k):
    i = k.Input((8, 8, 1))
    x = k.layers.Conv2D(16, 3, padding="same", activation="relu")(i)
    x = k.layers.Conv2D(24, 1, strides=2, activation="relu", name="pointwise")(x)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(64, activation="relu", name="hidden")(x)
    return k.Model(i, k.layers.Dense(10, name="logits")(x), name="mlp")


@pytest.mark.parametrize("generation", sorted(GENERATIONS))
def test_lowrank_at_full_rank_reproduces_outputs(generation):
    from tflight.shrink.lowrank import factorize

    k = GENERATIONS[generation]()
    k.utils.set_random_seed(0)
    model = _mlp_and_pointwise(k)
    before = _weights_snapshot(model)
    result = factorize(model, energy=1.0, only_if_saving=False)
    assert {x.name for x in result.layers if x.factorized} == {"pointwise", "hidden", "logits"}
    x = np.random.default_rng(0).uniform(0, 1, (3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x)), atol=1e-5)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lowrank_halves_macs_and_converts(calib):
    from tflight.shrink.lowrank import factorize

    keras.utils.set_random_seed(0)
    model = _mlp_and_pointwise(keras)
    result = factorize(model, macs_target=0.7)
    assert result.macs_ratio <= 0.7
    for x in result.layers:
        assert not x.factorized or x.macs_after < x.macs_before
    out = converters.convert(result.model, "fp32")
    np.testing.assert_allclose(
        converters.TFLiteModel(out.flatbuffer).predict(calib[:4]),
        np.asarray(result.model(calib[:4])),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"energy": 0.0}, CompressionError, "energy"),
        ({"energy": 0.9, "macs_target": 0.5}, CompressionError, "exactly one"),
        ({"macs_target": 1.0}, CompressionError, "macs_target"),
        ({"ranks": {"conv2d": 2}}, UnsupportedLayerError, "not a Dense or 1x1"),
        ({"ranks": {"hidden": 0}}, UnsupportedLayerError, "Rank for 'hidden'"),
        ({"macs_target": 0.01}, CompressionError, "cannot be reached"),
    ],
)
def test_lowrank_bad_requests(kwargs, error, match):
    from tflight.shrink.lowrank import factorize

    keras.utils.set_random_seed(0)
    with pytest.raises(error, match=match):
        factorize(_mlp_and_pointwise(keras), **kwargs)


# ---- sensitivity analysis ----------------------------------------------------------------


def test_sensitivity_table_plot_and_allocation(trained_cnn, digits, tmp_path):
    from tflight.shrink.sensitivity import analyze_sensitivity

    x_val, y_val = digits.x_test[:200], digits.y_test[:200]
    result = analyze_sensitivity(trained_cnn, x_val, y_val, ratios=(0.25, 0.5, 0.75))
    assert len(result.groups) == 2 and all(len(g.drops) == 3 for g in result.groups)
    # Cutting more of one group never saves less.
    assert all(np.all(np.diff(g.macs_saved) > 0) for g in result.groups)
    lines = []
    result.summary(print_fn=lines.append)
    assert "measured" in lines[0] and len(lines) == 2 + len(result.groups)
    assert result.plot(tmp_path / "sens.png").stat().st_size > 1000
    ratios = result.allocate(flops_target=0.6)
    cut = prune_channels(trained_cnn, ratio=ratios)
    assert cut.macs_ratio <= 0.6
    with pytest.raises(CompressionError, match="cannot reach"):
        result.allocate(flops_target=0.01)
    with pytest.raises(CompressionError, match="in \\(0, 1\\)"):
        analyze_sensitivity(trained_cnn, x_val, y_val, ratios=(0.5, 1.0))


@pytest.fixture(scope="module")
def trained_mobile(digits):
    """A small inverted-residual CNN (depthwise, pointwise, residual add) trained on digits."""
    keras.utils.set_random_seed(1)
    L = keras.layers
    i = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(i)))
    y = L.ReLU()(L.Conv2D(48, 1, name="expand")(x))
    y = L.ReLU()(L.DepthwiseConv2D(3, padding="same", name="dw")(y))
    y = L.Conv2D(16, 1, name="project")(y)
    x = L.Add()([x, y])
    x = L.Conv2D(32, 3, padding="same", activation="relu")(x)
    model = keras.Model(i, L.Dense(10)(L.GlobalAveragePooling2D()(x)))
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(digits.x_train, digits.y_train, epochs=10, batch_size=32, verbose=0)
    return model


def test_allocation_to_an_estimated_latency_target(trained_mobile, digits):
    from tflight.devices.profiles import estimate_latency
    from tflight.shrink.sensitivity import analyze_sensitivity, estimated_latency_ms

    model = trained_mobile
    graph = DependencyGraph(model)

    def est(cut=None, profile="pixel4"):
        keep = {} if cut is None else {
            graph.group_of_layer(name).gid: idx for name, idx in cut.kept.items()
        }
        return estimated_latency_ms(graph, keep, profile=profile, arithmetic="fp32")

    # On a model this small the per-operator cost of pixel4 dominates: aim
    # halfway between the uncut estimate and the deepest measured cut.
    before = est()
    target = (1 + est(prune_channels(model, ratio=0.75)) / before) / 2
    result = analyze_sensitivity(model, digits.x_test[:200], digits.y_test[:200])
    ratios = result.allocate(latency_target=target, profile="pixel4", arithmetic="fp32")
    cut = prune_channels(model, ratio=ratios)
    after = est(cut)
    assert 0 < after <= target * before
    # The graph figure tracks the profile's estimate of the converted files.
    whole = [
        estimate_latency(converters.convert(m, "fp32").flatbuffer, "pixel4").ms
        for m in (model, cut.model)
    ]
    assert whole[1] < whole[0]
    assert abs(whole[1] / whole[0] - after / before) < 0.15, (whole, before, after)
    # Other profiles and int8 give other costs; the Edge TPU is costed too.
    assert est(profile="cortex-a53") != before
    assert estimated_latency_ms(graph, profile="edgetpu") > 0
    a53_before = est(profile="cortex-a53")
    a53_target = (1 + est(prune_channels(model, ratio=0.75), "cortex-a53") / a53_before) / 2
    a53 = result.allocate(latency_target=a53_target, profile="cortex-a53")
    assert est(prune_channels(model, ratio=a53), "cortex-a53") <= a53_target * a53_before
    with pytest.raises(CompressionError, match="unknown device profile 'pixel9'"):
        result.allocate(latency_target=0.6, profile="pixel9")
    with pytest.raises(CompressionError, match="exactly one"):
        result.allocate(latency_target=0.6, flops_target=0.5)
    with pytest.raises(CompressionError, match="arithmetic"):
        estimated_latency_ms(graph, arithmetic="fp16")
