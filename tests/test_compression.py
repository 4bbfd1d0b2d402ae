"""The compression API, table-driven: apply -> fit -> strip -> convert -> LiteRT -> compare.

Every technique and combination in `TECHNIQUES` goes through the same
properties on the tiny digits CNN (real TensorFlow, TF-MOT and LiteRT), then the
error paths: unsupported layers, bad arguments, missing callbacks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import converters
import tflight
from tflight._keras import tf_keras
from tflight.errors import (
    CompressionError,
    MissingCallbackError,
    UnsupportedLayerError,
)

N_TRAIN = 320  # 5 steps of 64 per epoch: short on purpose (the frequency=100 trap)


def _compile_kwargs():
    k = tf_keras()
    return {
        "optimizer": k.optimizers.Adam(1e-3),
        "loss": k.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    }


def _dense():
    return tf_keras().layers.Dense


def _conv():
    return tf_keras().layers.Conv2D


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: object  # () -> list of techniques (built lazily: classes come from tf_keras)
    mode: str
    sparsity: float = 0.0  # minimum overall sparsity of the pruned kernels after strip
    clusters: int | None = None  # maximum distinct values per clustered kernel
    epochs: int = 1


TECHNIQUES = [
    Case("prune_constant", lambda: [tflight.Prune(sparsity=0.5)], "fp32", sparsity=0.5),
    Case(
        "prune_polynomial",
        lambda: [tflight.Prune(sparsity=tflight.PolynomialDecay(0.6, end_step=4))],
        "fp32",
        sparsity=0.6,
    ),
    Case("prune_2_4", lambda: [tflight.Prune(m_by_n=(2, 4), select=_dense())], "fp32", 0.5),
    Case(
        "prune_block",
        lambda: [tflight.Prune(sparsity=0.5, block_size=(1, 4), select=_dense())],
        "fp32",
        sparsity=0.5,
    ),
    Case("prune_int8", lambda: [tflight.Prune(sparsity=0.5)], "int8", sparsity=0.5),
    Case("qat", lambda: [tflight.QAT()], "int8", epochs=2),
    # Kept-float layers stay float only in a "dynamic" conversion (see the test below).
    Case("qat_selective", lambda: [tflight.QAT(keep_float=["logits"])], "dynamic", epochs=2),
    Case("cluster", lambda: [tflight.Cluster(n_clusters=8)], "fp32", clusters=8),
    Case(
        "cluster_per_channel",
        lambda: [tflight.Cluster(n_clusters=4, init="linear", per_channel=True, select=_conv())],
        "fp32",
    ),
    Case("pqat", lambda: [tflight.Prune(sparsity=0.5), tflight.QAT()], "int8", 0.5, epochs=2),
    Case(
        "cqat", lambda: [tflight.Cluster(n_clusters=8), tflight.QAT()], "int8", clusters=8, epochs=2
    ),
    Case(
        "pcqat",
        lambda: [tflight.Prune(sparsity=0.5), tflight.Cluster(n_clusters=8), tflight.QAT()],
        "int8",
        sparsity=0.5,
        clusters=8,
        epochs=2,
    ),
]


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]


def _weights_equal(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb, strict=True))


def _kernels(model):
    """name -> kernel array, looking through QAT wrappers."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for weight in layer.weights:
            if weight.name.split("/")[-1] == "kernel:0":
                out[inner.name] = weight.numpy()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", TECHNIQUES, ids=[c.name for c in TECHNIQUES])
def test_technique_end_to_end(case, tf_keras_cnn, data, digits, calib):
    before = [w.copy() for w in tf_keras_cnn.get_weights()]
    x, y = data
    techniques = case.make()
    result = tflight.Pipeline(techniques).fit(
        tf_keras_cnn, x, y, compile=_compile_kwargs(), epochs=case.epochs, batch_size=64
    )
    model = result.model
    assert len(result.stages) == len(techniques)

    # The user's model is untouched.
    assert all(
        np.array_equal(a, b) for a, b in zip(before, tf_keras_cnn.get_weights(), strict=True)
    )

    # strip(apply(m)) keeps the layer types and the weights layout.
    if not isinstance(techniques[-1], tflight.QAT):
        assert [type(layer) for layer in model.layers] == [
            type(layer) for layer in tf_keras_cnn.layers
        ]
        assert [w.shape for w in model.get_weights()] == [w.shape for w in before]

    kernels = _kernels(model)
    if case.sparsity:
        report = tflight.sparsity_report(model)
        pruned = [r for r in report.layers if r.sparsity > 0]
        assert pruned, report
        assert min(r.sparsity for r in pruned) >= case.sparsity - 0.02, report
    if case.name == "prune_2_4":
        groups = kernels["logits"].T.reshape(-1, 4)  # 4 consecutive input channels
        assert ((groups == 0).sum(axis=1) >= 2).all()
    if case.name == "prune_block":
        # (1, 4) blocks along the 10 outputs: the first 8 columns form two whole blocks,
        # each all-zero or all-kept.
        zero = kernels["logits"][:, :8].reshape(128, 2, 4) == 0
        assert (zero.all(axis=-1) | ~zero.any(axis=-1)).all()
    if case.clusters:
        for name, kernel in kernels.items():
            assert np.unique(kernel).size <= case.clusters, name
    if case.name == "cluster_per_channel":
        conv = kernels["conv"]
        for c in range(conv.shape[-1]):
            assert np.unique(conv[..., c]).size <= 4

    # Convert, run in LiteRT, compare with Keras.
    conversion = converters.convert(model, case.mode, representative_data=calib, validate=False)
    runner = converters.TFLiteModel(conversion.flatbuffer)
    lite = runner.predict(digits.x_test)
    keras_out = model.predict(digits.x_test, verbose=0)
    assert lite.shape == keras_out.shape
    report = tflight.check_agreement(
        model, runner, digits.x_test, y=digits.y_test, min_agreement=0.95
    )
    assert report.samples == len(digits.x_test)
    if case.mode == "fp32":
        np.testing.assert_allclose(lite, keras_out, atol=1e-3)
    # The .tflite scores what the compressed Keras model scores, and compression
    # with a few steps of fine-tuning loses at most 30 points of the float model's
    # accuracy on held-out digits (the fixture is trained briefly, ~50 %; the
    # measured figures are in benchmarks/compression.py).
    assert abs(report.tflite_accuracy - report.keras_accuracy) <= 0.02, report
    float_acc = float(
        np.mean(tf_keras_cnn.predict(digits.x_test, verbose=0).argmax(axis=1) == digits.y_test)
    )
    assert report.tflite_accuracy >= float_acc - 0.30, (report, float_acc)


@pytest.mark.slow
def test_keras3_model_through_the_bridge(keras3_cnn, data, digits, calib):
    import keras

    before = [w.copy() for w in keras3_cnn.get_weights()]
    x, y = data
    compile_kwargs = {
        "optimizer": "adam",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # translated
    }
    out = tflight.Pipeline([tflight.Prune(sparsity=0.5), tflight.QAT()]).fit(
        keras3_cnn, x, y, compile=compile_kwargs, epochs=2, batch_size=64
    )
    assert all(np.array_equal(a, b) for a, b in zip(before, keras3_cnn.get_weights(), strict=True))
    result = converters.convert(out.model, "int8", representative_data=calib, validate=False)
    report = tflight.check_agreement(out.model, result, digits.x_test, y=digits.y_test)
    assert report.agreement >= 0.99
    assert tflight.sparsity_report(out.model).overall >= 0.48


@pytest.mark.slow
def test_sparse_storage_and_gzip(tf_keras_cnn, data, digits, calib):
    x, y = data
    pruned = tflight.prune(tf_keras_cnn, sparsity=0.8, compile=_compile_kwargs())
    tflight.fit(pruned, x, y, epochs=1, batch_size=64, verbose=0)
    stripped = tflight.strip_pruning(pruned)
    assert tflight.sparsity_report(stripped).overall >= 0.78
    dense = converters.convert(tf_keras_cnn, "fp32", validate=False)
    sparse = converters.convert(stripped, "fp32", sparse=True, validate=False)
    assert sparse.gzip_size < dense.gzip_size
    lite = converters.TFLiteModel(sparse.flatbuffer).predict(digits.x_test)
    np.testing.assert_allclose(lite, stripped.predict(digits.x_test, verbose=0), atol=1e-3)


# ----------------------------------------------------------------------------
# Callbacks: no hidden coupling.


def test_fit_without_pruning_callback_fails_at_start(tf_keras_cnn, data):
    x, y = data
    pruned = tflight.prune(tf_keras_cnn, sparsity=0.5, compile=_compile_kwargs())
    before = [w.copy() for w in pruned.get_weights()]
    with pytest.raises(MissingCallbackError, match=r"tflight\.callbacks\(model\)"):
        pruned.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(MissingCallbackError, match="UpdatePruningStep"):
        pruned.fit(x, y, epochs=1, verbose=0, callbacks=[tf_keras().callbacks.History()])
    assert _weights_equal_list(before, pruned.get_weights())  # no step ran
    pruned.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=tflight.callbacks(pruned))
    assert tflight.sparsity_report(pruned).overall >= 0.48


def _weights_equal_list(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_callbacks_lists_what_each_model_needs(tf_keras_cnn):
    pruned = tflight.prune(tf_keras_cnn, sparsity=0.5)
    assert [type(c).__name__ for c in tflight.callbacks(pruned)] == ["UpdatePruningStep"]
    assert tflight.callbacks(tflight.quantize(tf_keras_cnn)) == []
    assert tflight.callbacks(tflight.cluster(tf_keras_cnn, n_clusters=8)) == []
    assert tflight.callbacks(tf_keras_cnn) == []


def test_fit_helper_refuses_an_uncompiled_model(tf_keras_cnn, data):
    pruned = tflight.prune(tf_keras_cnn, sparsity=0.5)  # TF-MOT dropped the optimizer
    with pytest.raises(CompressionError, match="not compiled"):
        tflight.fit(pruned, *data, epochs=1)


def test_constant_sparsity_reaches_target_in_a_short_fine_tune(tf_keras_cnn, data):
    # TF-MOT's own ConstantSparsity(0.5, begin_step=0, frequency=100) ends these
    # 5 steps at 0 %; tflight's begins at the first batch.
    pruned = tflight.prune(
        tf_keras_cnn,
        sparsity=tflight.ConstantSparsity(0.5, frequency=100),
        compile=_compile_kwargs(),
    )
    tflight.fit(pruned, *data, epochs=1, batch_size=64, verbose=0)
    assert tflight.sparsity_report(tflight.strip_pruning(pruned)).overall >= 0.49


def test_strip_checks_achieved_sparsity(tf_keras_cnn, data):
    x, y = data
    pruned = tflight.prune(
        tf_keras_cnn,
        sparsity=tflight.PolynomialDecay(0.8, end_step=50),  # 5 steps are not enough
        compile=_compile_kwargs(),
    )
    tflight.fit(pruned, x, y, epochs=1, batch_size=64, verbose=0)
    with pytest.raises(CompressionError, match=r"did not reach its target.*end_step"):
        tflight.strip_pruning(pruned)
    assert tflight.strip_pruning(pruned, check=False) is not None


# ----------------------------------------------------------------------------
# Parameter-efficient fine-tuning.


def test_freeze_trains_only_chosen_layers(tf_keras_cnn, data):
    x, y = data
    qat = tflight.quantize(tf_keras_cnn)
    kept = tflight.freeze(qat, train=["logits"])
    assert kept == ["quant_logits"]
    qat.compile(**_compile_kwargs())
    conv_before = _kernels(qat)["conv"].copy()
    logits_before = _kernels(qat)["logits"].copy()
    tflight.fit(qat, x, y, epochs=1, batch_size=64, verbose=0)
    assert np.array_equal(_kernels(qat)["conv"], conv_before)
    assert not np.array_equal(_kernels(qat)["logits"], logits_before)


def test_pipeline_train_option_freezes_other_layers(tf_keras_cnn, data):
    out = tflight.Pipeline([tflight.Cluster(n_clusters=8, select=["logits"])]).fit(
        tf_keras_cnn, *data, compile=_compile_kwargs(), train=["logits"], batch_size=64
    )
    assert np.array_equal(_kernels(out.model)["conv"], _kernels(tf_keras_cnn)["conv"])


# ----------------------------------------------------------------------------
# Layer selection and unsupported layers.


def _model_with(layer_factory):
    k = tf_keras()
    inputs = k.Input((8, 8, 1))
    h = k.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    h = layer_factory(k)(h)
    h = k.layers.Flatten(name="flatten")(h)
    outputs = k.layers.Dense(10, name="logits")(h)
    return k.Model(inputs, outputs, name="with_extra")


def test_qat_names_each_unsupported_layer():
    model = _model_with(lambda k: k.layers.LayerNormalization(name="norm"))
    with pytest.raises(UnsupportedLayerError, match=r"'norm' \(LayerNormalization"):
        tflight.quantize(model)
    qat = tflight.quantize(model, unsupported="keep_float")
    names = {type(layer).__name__ for layer in qat.layers}
    assert "LayerNormalization" in names  # left float, visibly
    assert "QuantizeWrapperV2" in names


def test_prune_selects_subclasses_by_isinstance(data):
    k = tf_keras()

    class MyConv(k.layers.Conv2D):
        pass

    model = k.Sequential(
        [k.Input((8, 8, 1)), MyConv(8, 3, name="myconv"), k.layers.Flatten(), k.layers.Dense(10)]
    )
    with k.utils.custom_object_scope({"MyConv": MyConv}):
        pruned = tflight.prune(
            model, sparsity=0.5, select=k.layers.Conv2D, compile=_compile_kwargs()
        )
        tflight.fit(pruned, *data, epochs=1, batch_size=64, verbose=0)
        stripped = tflight.strip_pruning(pruned)
    rows = {r.layer: r for r in tflight.sparsity_report(stripped).layers}
    assert rows["myconv"].sparsity >= 0.48
    assert rows[model.layers[-1].name].sparsity == 0.0  # Dense was not selected


def test_selection_by_predicate(tf_keras_cnn):
    pruned = tflight.prune(tf_keras_cnn, select=lambda layer: layer.name == "logits")
    wrapped = [layer.name for layer in pruned.layers if hasattr(layer, "pruning_vars")]
    assert wrapped == ["prune_low_magnitude_logits"]


def test_m_by_n_refuses_layers_without_groups(tf_keras_cnn):
    # The conv has 1 input channel: no group of 4 to sparsify.
    with pytest.raises(UnsupportedLayerError, match=r"2:4.*'conv' \(Conv2D\)"):
        tflight.prune(tf_keras_cnn, m_by_n=(2, 4))
    pruned = tflight.prune(tf_keras_cnn, m_by_n=(2, 4), unsupported="skip")
    assert not hasattr(pruned.get_layer("conv"), "pruning_vars")


def test_cluster_refuses_layers_too_small_instead_of_skipping(tf_keras_cnn):
    with pytest.raises(UnsupportedLayerError, match=r"'conv'.*72 weights"):
        tflight.cluster(tf_keras_cnn, n_clusters=128)
    clustered = tflight.cluster(tf_keras_cnn, n_clusters=128, unsupported="skip")
    assert type(clustered.get_layer("conv")).__name__ == "Conv2D"


def test_pipeline_keeps_zeros_of_layers_a_later_stage_does_not_wrap(tf_keras_cnn, data):
    # conv is pruned but not clustered: cluster-preserving QAT alone would refill
    # its zeros; the pipeline puts pruning's pattern back and says what it did.
    pipe = tflight.Pipeline(
        [
            tflight.Prune(sparsity=0.5),
            tflight.Cluster(n_clusters=8, select=["logits"]),
            tflight.QAT(),
        ]
    )
    out = pipe.fit(tf_keras_cnn, *data, compile=_compile_kwargs(), batch_size=64)
    rows = {r.layer: r for r in tflight.sparsity_report(out.model).layers}
    assert rows["conv"].sparsity >= 0.48, rows
    assert ("conv", "not selected") in out.reports[1].skipped


# ----------------------------------------------------------------------------
# The QAT Keras-vs-TFLite agreement check.


@pytest.mark.slow
def test_check_agreement_fails_loudly_on_a_mismatched_tflite(tf_keras_cnn, digits, calib):
    qat = tflight.quantize(tf_keras_cnn)
    k = tf_keras()
    k.utils.set_random_seed(1)
    stranger = k.models.clone_model(tf_keras_cnn)  # same shapes, random weights
    wrong = converters.convert(stranger, "int8", representative_data=calib, validate=False)
    with pytest.raises(CompressionError, match=r"top-1 agreement .* below min_agreement"):
        tflight.check_agreement(qat, wrong, digits.x_test)
    report = tflight.check_agreement(qat, wrong, digits.x_test, min_agreement=0.0)
    lines = []
    report.summary(print_fn=lines.append)
    assert "agreement" in lines[0]


@pytest.mark.slow
def test_selective_qat_converted_full_int8_is_caught(tf_keras_cnn, data, digits, calib):
    # Full-int8 conversion quantizes the kept-float layer post-training, which the
    # QAT model never saw: exactly the Keras-vs-TFLite gap the check exists for.
    out = tflight.Pipeline([tflight.QAT(keep_float=["logits"])]).fit(
        tf_keras_cnn, *data, compile=_compile_kwargs(), epochs=2, batch_size=64
    )
    full = converters.convert(out.model, "int8", representative_data=calib, validate=False)
    with pytest.raises(CompressionError, match="disagrees with the Keras model"):
        tflight.check_agreement(out.model, full, digits.x_test)
    mixed = converters.convert(out.model, "dynamic", validate=False)
    assert tflight.check_agreement(out.model, mixed, digits.x_test).agreement >= 0.99


# ----------------------------------------------------------------------------
# Bad arguments.


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: tflight.Prune(sparsity=1.5),
            r"`sparsity` must be a fraction in \(0, 1\), got 1.5",
        ),
        (lambda: tflight.Prune(sparsity="half"), "`sparsity` must be a fraction"),
        (lambda: tflight.Prune(m_by_n=(4, 2)), r"`m_by_n`.*got \(4, 2\)"),
        (lambda: tflight.Prune(block_size=(0, 4)), "`block_size`"),
        (lambda: tflight.Prune(m_by_n=(2, 4), block_size=(1, 4)), "cannot be combined"),
        (lambda: tflight.Prune(unsupported="ignore"), "'raise' or 'skip'"),
        (lambda: tflight.Prune(select=[1, 2]), "`select` must be"),
        (lambda: tflight.ConstantSparsity(0.5, frequency=0), "`frequency` must be >= 1"),
        (lambda: tflight.PolynomialDecay(0.8, end_step=0), "`end_step` .* must be after"),
        (lambda: tflight.PolynomialDecay(0.8, end_step=10, frequency=3), "must divide"),
        (lambda: tflight.PolynomialDecay(0.5, end_step=10, initial=0.6), "below `final`"),
        (lambda: tflight.Cluster(n_clusters=1), r"`n_clusters` must be an int >= 2, got 1"),
        (lambda: tflight.Cluster(init="kmeans"), r"`init` must be one of .*'kmeans\+\+'"),
        (lambda: tflight.QAT(unsupported="skip"), "'raise' or 'keep_float'"),
        (lambda: tflight.Pipeline([]), "at least one technique"),
        (lambda: tflight.Pipeline([tflight.QAT(), tflight.Prune()]), "QAT must be the last"),
        (lambda: tflight.Pipeline(["prune"]), "must be techniques"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(CompressionError, match=match):
        build()


def test_bad_models_and_names(tf_keras_cnn, data):
    with pytest.raises(CompressionError, match="expects a Keras 3 or tf_keras model"):
        tflight.prune(np.zeros(3))
    with pytest.raises(CompressionError, match=r"not in model .*\['nope'\]"):
        tflight.prune(tf_keras_cnn, select=["nope"])
    with pytest.raises(CompressionError, match="keep_float"):
        tflight.quantize(tf_keras_cnn, keep_float=["nope"])
    with pytest.raises(CompressionError, match="expects a model returned by tflight.prune"):
        tflight.strip_pruning(tf_keras_cnn)
    with pytest.raises(CompressionError, match="expects a model returned by tflight.cluster"):
        tflight.strip_clustering(tf_keras_cnn)
    with pytest.raises(CompressionError, match="expects a model returned by tflight.quantize"):
        tflight.strip_quantization(tf_keras_cnn)
    with pytest.raises(CompressionError, match="compile.*loss"):
        tflight.Pipeline([tflight.QAT()]).fit(tf_keras_cnn, *data, compile={"optimizer": "adam"})
    with pytest.raises(CompressionError, match="`epochs` must be"):
        tflight.Pipeline([tflight.QAT()]).fit(
            tf_keras_cnn, *data, compile=_compile_kwargs(), epochs=[1, 2]
        )

    k = tf_keras()

    class Sub(k.Model):
        def __init__(self):
            super().__init__()
            self.d = k.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(CompressionError, match="Sequential and Functional models only"):
        tflight.quantize(sub)


def test_sparsity_report_summary_snapshot(tf_keras_cnn):
    lines = []
    tflight.sparsity_report(tf_keras_cnn).summary(print_fn=lines.append)
    assert lines[0].split() == ["layer", "weight", "shape", "sparsity", "target"]
    assert lines[1].split()[:2] == ["conv", "kernel"]
    assert lines[-1] == "overall sparsity: 0.0%"


def test_sparsity_report_aligns_long_names_and_shows_targets(data):
    k = tf_keras()
    long = "a_dense_layer_with_a_name_much_longer_than_twenty_characters"
    model = k.Sequential(
        [k.Input((64,)), k.layers.Dense(16, name=long), k.layers.Dense(10, name="logits")]
    )
    pruned = tflight.prune(model, sparsity=0.5, compile=_compile_kwargs())
    x, y = data
    tflight.fit(pruned, x.reshape(len(x), -1), y, epochs=1, batch_size=64, verbose=0)
    stripped = tflight.strip_pruning(pruned)
    lines = []
    tflight.sparsity_report(stripped).summary(print_fn=lines.append)
    # Every column starts at the same offset on every row.
    starts = {line.index("kernel") for line in lines[1:-1]}
    assert len(starts) == 1, lines
    assert lines[0].index("weight") == starts.pop()
    assert all(line.rstrip().endswith("50%") for line in lines[1:-1]), lines  # the target


# ----------------------------------------------------------------------------
# Functional models, nested backbones, the per-layer report.


def _nested_model(frozen: bool):
    """A Keras 3 Functional model with a nested Functional conv backbone and a new head."""
    import keras

    keras.utils.set_random_seed(1)
    b_in = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", name="b_conv")(b_in)
    h = keras.layers.BatchNormalization(name="b_bn")(h)
    h = keras.layers.ReLU(name="b_relu")(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv2")(h)
    backbone = keras.Model(b_in, h, name="backbone")
    backbone.trainable = not frozen
    inp = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inp))
    out = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="transfer")


def _k3_compile():
    import keras

    return {
        "optimizer": "adam",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }


@pytest.mark.slow
def test_prune_and_qat_reach_inside_a_trainable_nested_backbone(data):
    model = _nested_model(frozen=False)
    x, y = data
    out = tflight.Pipeline([tflight.Prune(sparsity=0.5), tflight.QAT()]).fit(
        model, x, y, compile=_k3_compile(), batch_size=64
    )
    prune_rep, qat_rep = out.reports
    assert prune_rep.inlined == ("backbone",)
    assert {"b_conv", "b_conv2", "logits"} <= set(prune_rep.wrapped)
    rows = {r.layer: r.sparsity for r in tflight.sparsity_report(out.model).layers}
    assert rows["b_conv"] >= 0.48 and rows["b_conv2"] >= 0.48, rows
    wrapped = {
        layer.layer.name
        for layer in out.model.layers
        if type(layer).__name__ == "QuantizeWrapperV2"
    }
    assert {"b_conv", "b_conv2", "logits"} <= wrapped
    assert not qat_rep.kept_float  # the InputLayers are not layers to quantize
    lines = []
    out.summary(print_fn=lines.append)
    assert any("nested models inlined: backbone" in line for line in lines)


@pytest.mark.slow
def test_frozen_backbone_stays_frozen_and_is_reported(data):
    model = _nested_model(frozen=True)
    before = {w.path: w.numpy().copy() for w in model.layers[1].weights}
    x, y = data
    pruned = tflight.prune(model, sparsity=0.5, compile=_k3_compile())
    rep = tflight.compression_report(pruned)
    assert rep.wrapped == ("logits",)
    assert ("b_conv", "frozen") in rep.skipped and ("b_conv2", "frozen") in rep.skipped
    qat = tflight.quantize(model, compile=_k3_compile())
    qrep = tflight.compression_report(qat)
    assert {"b_conv", "b_conv2"} <= set(qrep.wrapped)  # int8 needs them quantized
    assert {"b_conv", "b_conv2", "b_bn"} <= set(qrep.frozen)
    frozen_vars = {
        w.name: w.numpy().copy()
        for layer in qat.layers
        if getattr(layer, "layer", layer).name in ("b_conv", "b_conv2", "b_bn")
        for w in getattr(layer, "layer", layer).weights
    }
    tflight.fit(qat, x, y, epochs=1, batch_size=64, verbose=0)
    for layer in qat.layers:
        inner = getattr(layer, "layer", layer)
        for w in inner.weights:
            if w.name in frozen_vars:
                np.testing.assert_array_equal(w.numpy(), frozen_vars[w.name], err_msg=w.name)
    assert qat.get_layer("quant_logits").layer.kernel is not None
    # The user's model is untouched.
    for w in model.layers[1].weights:
        np.testing.assert_array_equal(w.numpy(), before[w.path])


# ----------------------------------------------------------------------------
# Found before training: unsupported layers, bad data; diverged training named.


class _Started:
    def __init__(self):
        self.started = False

    def callback(self):
        k = tf_keras()
        outer = self

        class Mark(k.callbacks.Callback):
            def on_train_begin(self, logs=None):
                outer.started = True

        return Mark()


def test_pipeline_checks_every_stage_before_training(data):
    model = _model_with(lambda k: k.layers.LayerNormalization(name="norm"))
    started = _Started()
    pipe = tflight.Pipeline(
        [tflight.Prune(sparsity=0.5), tflight.Cluster(n_clusters=8), tflight.QAT()]
    )
    with pytest.raises(UnsupportedLayerError, match=r"'norm' \(LayerNormalization"):
        pipe.fit(
            model,
            *data,
            compile=_compile_kwargs(),
            batch_size=64,
            callbacks=[started.callback()],
        )
    assert not started.started


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x), y), "NaN"),
        (lambda x, y: (x, y + 10), r"labels from 10 to 19.*\[0, 9\]"),
        (lambda x, y: (x[:, :4], y), r"samples of shape \(4, 8, 1\)"),
        (lambda x, y: (x, y[:10]), "has 10 samples"),
    ],
    ids=["nan", "labels", "shape", "count"],
)
def test_pipeline_checks_data_before_training(tf_keras_cnn, data, mutate, match):
    x, y = mutate(*data)
    started = _Started()
    with pytest.raises(CompressionError, match=match):
        tflight.Pipeline([tflight.Prune(sparsity=0.5)]).fit(
            tf_keras_cnn, x, y, compile=_compile_kwargs(), callbacks=[started.callback()]
        )
    assert not started.started


def test_diverged_training_is_named_not_blamed_on_pruning(tf_keras_cnn, data):
    x, y = data
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    pruned = tflight.prune(tf_keras_cnn, sparsity=0.5, compile=_compile_kwargs())
    tflight.fit(pruned, bad, y, epochs=1, batch_size=64, verbose=0)
    with pytest.raises(CompressionError, match="Training diverged") as info:
        tflight.strip_pruning(pruned)
    assert "did not reach" not in str(info.value)


@pytest.mark.slow
def test_cqat_trains_without_gradient_warnings(tf_keras_cnn, data, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="tensorflow")
    out = tflight.Pipeline([tflight.Cluster(n_clusters=8), tflight.QAT()]).fit(
        tf_keras_cnn, *data, compile=_compile_kwargs(), batch_size=64
    )
    assert not [r for r in caplog.records if "Gradients do not exist" in r.getMessage()]
    # Training still writes clustered values into the kernels the converter reads.
    kernels = _kernels(out.model)
    assert np.unique(kernels["conv"]).size <= 8
    assert np.unique(kernels["logits"]).size <= 8


def test_qat_message_never_lists_a_kind_as_both_unsupported_and_supported():
    # BatchNormalization after an activated Conv2D is not foldable: TF-MOT cannot
    # quantize it there, so it must not be offered as a replacement either.
    model = _model_with(lambda k: k.layers.BatchNormalization(name="bn"))
    model = tf_keras().models.clone_model(
        model,
        clone_function=lambda layer: (
            type(layer).from_config({**layer.get_config(), "activation": "relu"})
            if layer.name == "conv"
            else type(layer).from_config(layer.get_config())
        ),
    )
    with pytest.raises(UnsupportedLayerError) as info:
        tflight.quantize(model)
    message = str(info.value)
    assert "'bn' (BatchNormalization not directly after" in message
    assert "supported layers (Conv2D, DepthwiseConv2D, Dense, ReLU" in message
    assert message.count("BatchNormalization") == 1
    # A BatchNormalization right after a linear Conv2D is folded and quantized.
    qat = tflight.quantize(_model_with(lambda k: k.layers.BatchNormalization(name="bn")))
    assert not tflight.compression_report(qat).kept_float


def test_prune_wraps_an_lstm_and_converts(digits):
    # TF-MOT prunes the kernels of LSTM/GRU/SimpleRNN cells; tflight used to refuse them.
    import keras

    keras.utils.set_random_seed(0)
    tokens = (digits.x_train[:128].reshape(128, 64) * 15).round().astype("int32")
    model = keras.Sequential([
        keras.Input((64,), dtype="int32"),
        keras.layers.Embedding(17, 8),
        keras.layers.LSTM(8, name="lstm"),
        keras.layers.Dense(10),
    ])
    pruned = tflight.prune(model, sparsity=0.5, compile=_compile_kwargs())
    tflight.fit(pruned, tokens, digits.y_train[:128], epochs=1, batch_size=64, verbose=0)
    stripped = tflight.strip_pruning(pruned)
    rows = [r for r in tflight.sparsity_report(stripped).layers if r.layer == "lstm"]
    assert rows and rows[0].sparsity >= 0.49
    # The converter cannot lower a tf_keras LSTM with a dynamic batch (TensorListReserve
    # needs a static shape): convert the same pruned layers behind a batch-1 input.
    k = tf_keras()
    fixed = k.Sequential([k.Input((64,), batch_size=1, dtype="int32"), *stripped.layers])
    result = converters.convert(fixed, "fp32", sample_data=tokens[:16])
    assert result.size > 0


def test_functional_lstm_is_pruned_inside_a_keras3_model():
    # Keras 3 records training=False on the LSTM's and Dropout's calls; carried over to
    # tf_keras it pinned them to inference mode, so the pruning masks never updated.
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    h = keras.layers.LSTM(16, name="lstm")(keras.layers.Embedding(20, 8)(inp))
    out = keras.layers.Dense(3, name="head")(keras.layers.Dropout(0.1)(h))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).integers(0, 20, (64, 5)).astype("int32")
    y = np.arange(64) % 3
    pruned = tflight.prune(model, sparsity=0.5, compile={
        "optimizer": "adam",
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    tflight.fit(pruned, x, y, epochs=2, verbose=0)
    rows = {r.layer: r for r in tflight.sparsity_report(tflight.strip_pruning(pruned)).layers}
    assert rows["lstm"].sparsity == pytest.approx(0.5, abs=0.02)


# --------------------------------------------------------------------------
# Structured errors, the accuracy gate and the defaults of compress_to_tflite.


def test_unsupported_layer_errors_carry_fields_for_front_ends():
    k = tf_keras()

    class Mix(k.layers.Layer):  # a kernel TF-MOT has no rule for (PReLU has none: nothing to prune)
        def build(self, shape):
            self.kernel = self.add_weight(name="kernel", shape=(shape[-1], shape[-1]))

        def call(self, x):
            return x @ self.kernel

    model = k.Sequential([
        k.Input((8, 8, 1)),
        k.layers.Flatten(),
        k.layers.Dense(16, name="d1"),
        Mix(name="mix"),
        k.layers.Reshape((16, 1)),
        k.layers.Conv1D(4, 3, name="conv1d"),
        k.layers.Flatten(),
        k.layers.Dense(10, name="logits"),
    ])
    with pytest.raises(UnsupportedLayerError) as pruned:
        tflight.prune(model)
    e = pruned.value
    assert (e.kind, e.option, e.layer) == ("unsupported_layer", "unsupported", "mix")
    assert e.details["technique"] == "prune" and e.details["layers"] == ("mix",)
    assert e.fix == "unsupported='skip'" and str(e).startswith(e.details["reason"])
    with pytest.raises(UnsupportedLayerError) as quantized:
        tflight.qat(model)
    e = quantized.value
    assert (e.kind, e.option, e.details["technique"]) == ("unsupported_layer", "unsupported", "qat")
    assert "conv1d" in e.details["layers"] and e.layer in e.details["layers"]
    with pytest.raises(CompressionError) as bad:
        tflight.Prune(sparsity=1.5)
    assert (bad.value.option, bad.value.kind) == ("sparsity", "bad_argument")


def test_the_qat_verbs_are_defined_under_their_names():
    from tflight.compress import quantization

    assert tflight.qat is quantization.qat and tflight.qat.__name__ == "qat"
    assert tflight.strip_qat is quantization.strip_qat
    assert not hasattr(quantization, "quantize")


def test_the_accuracy_gate_passes_within_the_budget_and_raises_past_it():
    from tflight.compress import check_drop

    ok = check_drop(0.80, 0.795, 1000, max_drop=1.0, error=CompressionError)
    assert ok.met and ok.drop == pytest.approx(0.5) and ok.resolution == pytest.approx(0.1)
    assert "budget 1.0 pt" in ok.lines()[0] and len(ok.lines()) == 1
    assert check_drop(0.5, 0.1, 10, max_drop=None).met  # None only measures
    with pytest.raises(CompressionError) as missed:
        check_drop(0.712, 0.517, 450, max_drop=1.0, error=CompressionError,
                   advice=("epochs", "sparsity"), fix="more epochs", payload="the result")
    e = missed.value
    assert (e.kind, e.option) == ("budget_missed", "max_drop")
    assert e.details["original"] == pytest.approx(0.712)
    assert e.details["accuracy"] == pytest.approx(0.517)
    assert e.details["drop"] == pytest.approx(19.5)
    assert e.details["max_drop"] == 1.0 and e.details["samples"] == 450
    assert e.details["advice"] == ("epochs", "sparsity") and e.details["result"] == "the result"
    assert "19.5 accuracy points" in str(e) and "71.20%" in str(e)
    # 64 samples cannot resolve 1 pt: the figures say so.
    coarse = check_drop(0.5, 0.5, 64, max_drop=1.0)
    assert coarse.resolution == pytest.approx(1.5625) and "coarser" in coarse.lines()[1]
    for bad in (-1.0, float("nan"), "1", True):
        with pytest.raises(CompressionError, match="max_drop"):
            check_drop(0.5, 0.5, 10, max_drop=bad, error=CompressionError)


def test_default_epochs_scale_with_the_data_and_the_schedule_ramps():
    from tflight.compress.recipe import auto_epochs, ramped_schedule

    assert auto_epochs(320, 32) == 20  # small data: more epochs (bounded)
    assert auto_epochs(1347, 32) == 14  # about 600 steps
    assert auto_epochs(60_000, 32) == 2  # big data: at least two passes
    assert auto_epochs(1347, 32) * 43 >= 600
    ramp = ramped_schedule(0.5, steps=600)
    assert isinstance(ramp, tflight.PolynomialDecay)
    assert (ramp.initial, ramp.final, ramp.begin_step, ramp.end_step) == (0.0, 0.5, 0, 450)
    import tensorflow as tf

    schedule = ramp._tfmot()

    def at(step):
        return float(schedule(tf.constant(step, tf.int64))[1])

    assert at(ramp.end_step) == pytest.approx(0.5)  # reached at end_step
    assert 0.0 < at(1) < at(ramp.end_step // 2) < 0.5  # ramps from 0, not a jump


def test_compress_to_tflite_checks_its_arguments_before_training(keras3_cnn, digits):
    from tflight.compress import compress_to_tflite

    x, y = digits.x_train[:64], digits.y_train[:64]
    for kwargs, option in (
        ({"recipe": "zip"}, "recipe"),
        ({"schedule": "cubic"}, "schedule"),
        ({"epochs": 0}, "epochs"),
        ({"max_drop": -1.0}, "max_drop"),
        ({"holdout": 1.5}, "holdout"),
        ({"sparsity": 1.5}, "sparsity"),
    ):
        with pytest.raises(CompressionError) as e:
            compress_to_tflite(keras3_cnn, x, y, **kwargs)
        assert e.value.option == option, (kwargs, e.value)
