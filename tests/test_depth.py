"""Depth pruning: residual blocks found, dropped exactly, ranked, and searched by `optimize`."""

from __future__ import annotations

import numpy as np
import pytest


def _residual_cnn(keras, blocks: int = 3, shared: bool = False):
    """Conv stem, `blocks` residual blocks (conv-BN-relu-conv + Add), a non-residual Add, head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    reused = keras.layers.Conv2D(8, 1, name="reused")
    for i in range(blocks):
        h = keras.layers.Conv2D(8, 3, padding="same", name=f"b{i}_conv1")(x)
        h = keras.layers.BatchNormalization(name=f"b{i}_bn")(h)
        h = keras.layers.ReLU(name=f"b{i}_relu")(h)
        h = (reused if shared and i == 0 else
             keras.layers.Conv2D(8, 1, name=f"b{i}_conv2"))(h)
        x = keras.layers.Add(name=f"b{i}_add")([x, h])
    # Two branches of the same tensor: neither is computed from the other.
    left = keras.layers.Conv2D(8, 1, name="left")(x)
    right = keras.layers.Conv2D(8, 1, name="right")(x)
    x = keras.layers.Add(name="merge")([left, right])
    if shared:
        x = reused(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, name="head")(x))


def test_residual_blocks_are_the_adds_of_a_tensor_and_a_branch_of_it_alone():
    import keras

    from tflight.shrink import residual_blocks

    blocks = residual_blocks(_residual_cnn(keras))
    assert [b.name for b in blocks] == ["b0_add", "b1_add", "b2_add"]
    assert all(b.skip == 0 for b in blocks)
    assert blocks[0].layers == ("b0_bn", "b0_conv1", "b0_conv2", "b0_relu")
    assert blocks[0].params == 8 * 9 * 8 + 8 + 4 * 8 + 8 * 8 + 8
    # A branch layer used elsewhere too cannot go with its block.
    assert [b.name for b in residual_blocks(_residual_cnn(keras, shared=True))] == [
        "b1_add", "b2_add"]
    assert residual_blocks(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])) == []


def test_dropping_a_block_whose_branch_adds_nothing_changes_nothing():
    """With the branch's last conv zeroed, y = x + 0: the shallower model computes the same."""
    import keras

    from tflight.shrink import drop_blocks

    model = _residual_cnn(keras)
    conv2 = model.get_layer("b1_conv2")
    conv2.set_weights([np.zeros_like(w) for w in conv2.get_weights()])
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    small = drop_blocks(model, ["b1_add"])
    names = {layer.name for layer in small.layers}
    assert not names & {"b1_conv1", "b1_bn", "b1_relu", "b1_conv2", "b1_add"}
    assert {"b0_conv1", "b2_conv2", "merge", "head"} <= names
    np.testing.assert_allclose(small.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    # The original is untouched; the copy has its own weights.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    small.get_layer("head").set_weights(
        [np.zeros_like(w) for w in small.get_layer("head").get_weights()])
    assert np.any(model.get_layer("head").get_weights()[0] != 0)
    assert small.count_params() < model.count_params()


def test_rank_blocks_puts_the_block_that_changes_nothing_first_and_names_are_checked():
    import keras

    from tflight.errors import CompressionError
    from tflight.shrink import drop_blocks, rank_blocks

    model = _residual_cnn(keras)
    conv2 = model.get_layer("b2_conv2")
    conv2.set_weights([np.zeros_like(w) for w in conv2.get_weights()])
    x = np.random.default_rng(1).normal(size=(32, 8, 8, 1)).astype(np.float32)
    ranked = rank_blocks(model, x)
    assert [name for name, _ in ranked][0] == "b2_add" and ranked[0][1] == 1.0
    assert sorted(name for name, _ in ranked) == ["b0_add", "b1_add", "b2_add"]
    with pytest.raises(CompressionError, match="merge"):
        drop_blocks(model, ["merge"])


@pytest.mark.slow
def test_optimize_drops_residual_blocks_for_latency(digits, tmp_path):
    """The depth candidate trains, converts, and has fewer ops than the full model's int8."""
    import keras

    import converters
    from tflight.optimization import optimize

    model = _residual_cnn(keras, blocks=4)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=32, verbose=0)
    result = optimize(model, (digits.x_train, digits.y_train), (digits.x_test, digits.y_test),
                      test_data=(digits.x_train[:100], digits.y_train[:100]),
                      objective="latency", max_drop=50.0, epochs=1, measure_host=False,
                      techniques=("int8", "depth50-distill-int8"), output_dir=tmp_path)
    by = {c.name: c for c in result.candidates}
    depth = by["depth50-distill-int8"]
    assert depth.status == "measured", depth.reason
    assert any(n.startswith("dropped 2 residual block(s)") for n in depth.notes), depth.notes
    assert depth.estimated_ms < by["int8"].estimated_ms
    def ops(name: str) -> int:
        (path,) = sorted((tmp_path / ".cache").glob(f"*/{name}.tflite"))
        return sum(converters.inspect(str(path)).stats.ops.values())

    assert ops("depth50-distill-int8") < ops("int8")
