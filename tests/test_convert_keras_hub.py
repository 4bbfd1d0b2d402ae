"""keras-hub backbones, built from their constructors (no preset download), convert
in every mode with dict inputs and agree with Keras."""

from __future__ import annotations

import numpy as np
import pytest

import converters

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture(scope="module")
def bert():
    import keras

    keras.utils.set_random_seed(0)
    return keras_hub.models.BertBackbone(
        vocabulary_size=100,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
    )


def _bert_inputs(n, seed):
    rng = np.random.default_rng(seed)
    mask = np.ones((n, 16), "int32")
    mask[:, 12:] = 0  # padded tail
    return {
        "token_ids": rng.integers(1, 100, (n, 16)).astype("int32") * mask,
        "segment_ids": (np.arange(16) >= 8).astype("int32")[None].repeat(n, 0),
        "padding_mask": mask,
    }


def test_bert_backbone_converts_with_dict_inputs(bert):
    data = _bert_inputs(48, 0)
    held = _bert_inputs(16, 1)
    results = converters.convert_many(
        bert, ["fp32", "fp16", "dynamic", "int8"], representative_data=data
    )
    for mode, r in results.items():
        assert r.validation.passed, (mode, r.validation.summary())
        assert r.validation.sample_source == "held-out representative_data"
        model = r.load()
        assert sorted(model.input_names) == ["padding_mask", "segment_ids", "token_ids"]
        assert model.output_names == ["sequence_output", "pooled_output"]
        ref = bert(held, training=False)
        seq, pooled = model.predict(held)
        for got, want in ((seq, ref["sequence_output"]), (pooled, ref["pooled_output"])):
            want = np.asarray(want)
            rel = np.abs(got - want).max() / np.abs(want).max()
            assert rel < (1e-4 if mode == "fp32" else 0.25), (mode, rel)
    assert results["int8"].size < results["fp32"].size


def test_resnet_backbone_converts():
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )
    x = np.random.default_rng(0).random((40, 16, 16, 3)).astype("float32")
    results = converters.convert_many(backbone, ["fp32", "int8"], representative_data=x)
    assert all(r.validation.passed for r in results.values())
    assert "CONV_2D" in results["int8"].ops
    assert "int8" in results["int8"].op_dtypes["CONV_2D"]
