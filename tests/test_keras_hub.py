"""keras-hub backbones, built from their constructors, through the bridge.

keras-hub backbones subclass `keras.Model` but are Functional graphs; the CNN
ones call keras-hub blocks (layers made of layers), which the bridge rebuilds
from the layers their `call` uses. Sizes are tiny: no preset is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest

import tflight
from tflight import bridge
from tflight._keras import is_tf_keras_model, keras, tfmot
from tflight.errors import UnsupportedLayerError

keras_hub = pytest.importorskip("keras_hub")


def _resnet():
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 8],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )


def _mobilenet():
    """MobileNetV3-style: hard_swish, squeeze-and-excite, residual blocks."""
    return keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[1], [4, 6]],
        stackwise_num_blocks=[1, 2],
        stackwise_num_filters=[[8], [8, 8]],
        stackwise_kernel_size=[[3], [3, 5]],
        stackwise_num_strides=[[2], [2, 1]],
        stackwise_se_ratio=[[None], [0.25, 0.25]],
        stackwise_activation=[["relu"], ["hard_swish", "hard_swish"]],
        stackwise_padding=[[1], [1, 2]],
        output_num_filters=16,
        depthwise_filters=8,
        depthwise_stride=1,
        depthwise_residual=False,
        last_layer_filter=16,
        squeeze_and_excite=0.5,
        image_shape=(32, 32, 3),
    )


def _efficientnet():
    """A fused-MBConv stage (a keras-hub block) and an MBConv stage with squeeze-excite."""
    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 4],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.25],
        stackwise_strides=[1, 2],
        stackwise_block_types=["fused", "v1"],
        stackwise_force_input_filters=[0, 0],
        stackwise_nores_option=[False, False],
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        input_shape=(32, 32, 3),
        num_features=32,
    )


def _mobilenet_classifier():
    """The transfer-learning shape: a frozen keras-hub backbone and a new head."""
    backbone = _mobilenet()
    backbone.trainable = False
    x = keras.Input((32, 32, 3), name="image")
    h = keras.layers.GlobalAveragePooling2D(name="gap")(backbone(x))
    return keras.Model(x, keras.layers.Dense(5, name="head")(h), name="hub_classifier")


BUILDERS = {
    "efficientnet": _efficientnet,
    "resnet": _resnet,
    "mobilenet": _mobilenet,
    "mobilenet_classifier": _mobilenet_classifier,
}


def _node_counts(model):
    return [
        (layer.name, len(layer._inbound_nodes), len(layer._outbound_nodes))
        for layer in model._flatten_layers(include_self=False, recursive=True)
    ]


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def hub(request):
    """(keras-hub model, node counts before, its tf_keras rebuild, the rebuild back)."""
    keras.utils.set_random_seed(0)
    source = BUILDERS[request.param]()
    counts = _node_counts(source)
    forward = tflight.to_tf_keras(source)
    return source, counts, forward, tflight.to_keras3(forward)


def _images(model, seed=1):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).uniform(0, 1, size=(2, *shape)).astype("float32")


def test_backbone_bridges_to_tf_keras_with_the_same_outputs(hub):
    source, _, forward, _ = hub
    assert is_tf_keras_model(forward)
    # The bridge's own check runs another batch size, where oneDNN may round differently.
    rep = bridge.report_of(forward)
    assert rep.passed and rep.max_abs_diff <= 1e-6 * max(1.0, rep.scale)
    x = _images(source)
    # Keras 3 and tf_keras build different kernels for the same op; oneDNN's rounding follows.
    np.testing.assert_allclose(np.asarray(forward(x)), np.asarray(source(x, training=False)),
                               rtol=1e-5, atol=1e-6)
    assert sum(w.size for w in forward.get_weights()) == source.count_params()


def test_backbone_round_trip_is_exact_and_leaves_the_source_alone(hub):
    source, counts, _, back = hub
    assert bridge.compare(source, back, atol=0.0).passed
    assert _node_counts(source) == counts


@pytest.mark.parametrize("hub", ["mobilenet_classifier"], indirect=True)
def test_frozen_keras_hub_backbone_stays_frozen(hub):
    source, _, forward, _ = hub
    assert [w.name for w in forward.trainable_weights] == ["head/kernel:0", "head/bias:0"]
    assert len(forward.trainable_weights) == len(source.trainable_weights) == 2


@pytest.mark.parametrize("hub", ["efficientnet", "mobilenet"], indirect=True)
def test_keras_hub_blocks_become_sub_models_of_their_own_layers(hub):
    source, _, forward, _ = hub
    blocks = [layer for layer in source.layers if type(layer).__module__.startswith("keras_hub")]
    assert blocks
    for block in blocks:
        sub = forward.get_layer(block.name)
        assert is_tf_keras_model(sub)
        assert sorted(tuple(w.shape) for w in sub.weights) == sorted(
            tuple(w.shape) for w in block.weights
        )


def test_bridged_resnet_backbone_goes_through_tfmot(digits):
    keras.utils.set_random_seed(0)
    forward = tflight.to_tf_keras(_resnet())
    mot = tfmot()
    pruned = mot.sparsity.keras.prune_low_magnitude(
        forward, pruning_schedule=mot.sparsity.keras.ConstantSparsity(0.5, 0, frequency=1)
    )
    pruned.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).uniform(size=(8, 16, 16, 3)).astype("float32")
    y = np.zeros((8, *forward.output.shape[1:]), "float32")
    pruned.fit(
        x, y, epochs=1, batch_size=4, verbose=0, callbacks=[mot.sparsity.keras.UpdatePruningStep()]
    )
    stripped = mot.sparsity.keras.strip_pruning(pruned)
    kernel = stripped.get_layer("conv1_conv").get_weights()[0]
    assert 0.45 <= float(np.mean(kernel == 0)) <= 0.55
    qat = mot.quantization.keras.quantize_model(forward)
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qat.layers)
    back = tflight.to_keras3(stripped)
    # tf_keras and Keras 3 BatchNormalization round differently (~1e-7).
    np.testing.assert_allclose(np.asarray(back(x)), np.asarray(stripped(x)), atol=1e-5, rtol=0)


def test_bert_backbone_is_refused_with_the_layer_and_the_fix():
    keras.utils.set_random_seed(0)
    bert = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        max_sequence_length=8,
    )
    with pytest.raises(UnsupportedLayerError) as e:
        tflight.to_tf_keras(bert)
    msg = str(e.value)
    assert "'token_embedding'" in msg and "ReversibleEmbedding" in msg
    assert "tflight.bridge.register" in msg and "converters.convert" in msg


def test_keras_hub_layer_with_weights_of_its_own_is_refused():
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 4), name="seq")
    h = keras_hub.layers.PositionEmbedding(sequence_length=6, name="pos")(x)
    with pytest.raises(UnsupportedLayerError, match="'pos' .*PositionEmbedding\\) holds weights"):
        tflight.to_tf_keras(keras.Model(x, h + x))
