"""Tests of the knowledge-distillation trainer (real TensorFlow, TF-MOT and LiteRT)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import numpy as np
import pytest

import tflight
from tflight._keras import keras, tf, tf_keras, tfmot
from tflight.distillation import losses as dl
from tflight.distillation.distiller import Distiller
from tflight.distillation.models import load_model
from tflight.distillation.saving import load_distiller
from tflight.errors import DistillationError

N = 256  # training examples: enough to move a tiny model, cheap to fit


def _student(k, *, width: int = 2, classes: int = 10, seed: int = 1, name: str = "student"):
    """A CNN smaller than the shared fixtures' (350 parameters vs 1,370)."""
    k.utils.set_random_seed(seed)
    return k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
            k.layers.MaxPooling2D(2, name="pool"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(classes, name="logits"),
        ],
        name=name,
    )


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_train[:N], digits.y_train[:N]


_EXPORTED = {
    "Distiller",
    "DistillationResult",
    "TeacherCache",
    "distill",
    "load_distiller",
    "DistillationLoss",
    "SoftTargetLoss",
    "HardTargetLoss",
    "GroundTruthLoss",
    "FeatureLoss",
    "LossInputs",
}


def test_module_names():
    # tflight's own exported set is pinned in tests/test_public_api.py.
    from tflight.distillation import distiller as distillation
    from tflight.distillation import losses as distillation_losses

    public = set(distillation.__all__) | set(distillation_losses.__all__)
    assert public - _EXPORTED == {"load_model", "loss_from_config"}


# --------------------------------------------------------------------------- loss math


def _np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


T_LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]], np.float32)
S_LOGITS = np.array([[1.0, 1.5, 0.2], [0.0, 1.0, 1.0]], np.float32)


def _inputs(y=None, features=None):
    return dl.LossInputs(
        y=None if y is None else tf.constant(y),
        teacher_logits=tf.constant(T_LOGITS),
        student_logits=tf.constant(S_LOGITS),
        features=features or {},
    )


def test_soft_target_loss_matches_hand_computation():
    t = 2.0
    p = _np_softmax(T_LOGITS / t)
    q = _np_softmax(S_LOGITS / t)
    expected = (p * np.log(p / q)).sum(axis=-1) * t * t
    got = dl.SoftTargetLoss(t).per_example(_inputs()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Same logits: no divergence.
    same = dl.LossInputs(None, tf.constant(T_LOGITS), tf.constant(T_LOGITS))
    np.testing.assert_allclose(dl.SoftTargetLoss(3.0).per_example(same).numpy(), 0, atol=1e-6)


def test_hard_target_loss_uses_teacher_argmax():
    labels = T_LOGITS.argmax(-1)  # [0, 1]
    expected = -np.log(_np_softmax(S_LOGITS)[np.arange(2), labels])
    got = dl.HardTargetLoss().per_example(_inputs()).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "y", [np.array([2, 0]), np.array([[2], [0]]), np.eye(3, dtype=np.float32)[[2, 0]]]
)
def test_ground_truth_loss_sparse_and_one_hot(y):
    expected = -np.log(_np_softmax(S_LOGITS)[np.arange(2), [2, 0]])
    got = dl.GroundTruthLoss().per_example(_inputs(y=y)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_feature_loss_is_per_example_mse():
    t = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    s = t + np.array([1.0, 2.0], np.float32)[:, None, None]
    loss = dl.FeatureLoss("a", "b")
    got = loss.per_example(_inputs(features={("a", "b"): (tf.constant(t), tf.constant(s))}))
    np.testing.assert_allclose(got.numpy(), [1.0, 4.0], rtol=1e-6)
    assert loss.feature_pairs == (("a", "b"),)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: dl.SoftTargetLoss(0.0), "temperature"),
        (lambda: dl.SoftTargetLoss(-2.0), "temperature"),
        (lambda: dl.SoftTargetLoss(float("nan")), "temperature"),
        (lambda: dl.SoftTargetLoss("4"), "temperature"),
        (lambda: dl.SoftTargetLoss(weight=-0.1), "weight"),
        (lambda: dl.HardTargetLoss(weight=float("inf")), "weight"),
        (lambda: dl.GroundTruthLoss(weight=True), "weight"),
        (lambda: dl.FeatureLoss("", "conv"), "teacher_layer"),
        (lambda: dl.FeatureLoss("conv", None), "student_layer"),
    ],
)
def test_loss_arguments_are_checked(build, match):
    with pytest.raises(DistillationError, match=match):
        build()


def test_loss_config_round_trip():
    for loss in (dl.SoftTargetLoss(3.0, weight=0.5), dl.FeatureLoss("a", "b", weight=2.0)):
        assert dl.loss_from_config(json.loads(json.dumps(loss.get_config()))) == loss
    with pytest.raises(DistillationError, match="Unknown distillation loss"):
        dl.loss_from_config({"class_name": "NoSuchLoss", "config": {}})


# --------------------------------------------------------------------------- argument checks


def test_bad_arguments(keras3_cnn):
    s = _student(keras)
    cases = [
        (dict(alpha=1.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(temperature=0), "temperature"),
        (dict(losses=[dl.SoftTargetLoss()], temperature=2.0), "not both"),
        (dict(losses=[]), "empty"),
        (dict(losses=["soft"]), "DistillationLoss"),
        (dict(losses=[dl.SoftTargetLoss(weight=0.0)]), "weights are 0"),
        (dict(feature_layers=[("conv",)]), "pairs"),
        (dict(feature_layers=[("nope", "conv")]), "no layer named 'nope'"),
        (dict(feature_layers=[("flatten", "conv")]), "last \\(channel\\) axis"),
        (dict(feature_weight=-1.0, feature_layers=[("conv", "conv")]), "weight"),
    ]
    for kwargs, match in cases:
        with pytest.raises(DistillationError, match=match):
            Distiller(keras3_cnn, s, **kwargs)
    with pytest.raises(DistillationError, match="student"):
        Distiller(keras3_cnn, "not a model")
    with pytest.raises(DistillationError, match="teacher"):
        Distiller(object(), s)
    with pytest.raises(DistillationError, match="same model"):
        Distiller(s, s)


def test_output_and_input_shapes_must_match(keras3_cnn):
    with pytest.raises(DistillationError, match="output shape"):
        Distiller(keras3_cnn, _student(keras, classes=5))
    keras.utils.set_random_seed(0)
    other_input = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(4), keras.layers.Dense(10)], name="s16"
    )
    with pytest.raises(DistillationError, match="input shape"):
        Distiller(keras3_cnn, other_input)


def test_roles_cannot_be_swapped_silently(keras3_cnn):
    small = _student(keras)
    big = keras.models.clone_model(keras3_cnn)
    with pytest.raises(DistillationError, match="swapped"):
        Distiller(small, big)  # arguments in the wrong order
    # Deliberate small-teacher set-ups are allowed, explicitly.
    d = Distiller(small, big, allow_smaller_teacher=True)
    assert d.student is big


def test_compile_refuses_loss_and_metrics(keras3_cnn):
    d = Distiller(keras3_cnn, _student(keras))
    with pytest.raises(DistillationError, match="loss"):
        d.compile(optimizer="adam", loss="mse")
    with pytest.raises(DistillationError, match="metrics"):
        d.compile(optimizer="adam", metrics=["accuracy"])


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
def test_fit_trains_student_and_leaves_teacher_untouched(generation, request, data):
    k = keras if generation == "keras3" else tf_keras()
    teacher = request.getfixturevalue("keras3_cnn" if generation == "keras3" else "tf_keras_cnn")
    student = _student(k)
    t_before, s_before = _weights(teacher), _weights(student)
    t_trainable = teacher.trainable

    d = tflight.Distiller(teacher, student)
    assert isinstance(d, tflight.Distiller)
    assert isinstance(d, k.Model)
    # Only the student is trained; the teacher is frozen without being modified.
    assert {id(w) for w in d.trainable_weights} == {id(w) for w in student.trainable_weights}
    d.compile(optimizer=k.optimizers.Adam(1e-2))
    history = d.fit(*data, batch_size=64, epochs=2, verbose=0).history

    assert _same(t_before, _weights(teacher))
    assert teacher.trainable == t_trainable
    assert not _same(s_before, _weights(student))
    assert {"loss", "soft", "ground_truth", "accuracy"} <= set(history)
    assert history["loss"][-1] < history["loss"][0]
    # `call` is the student's forward pass.
    x = data[0][:4]
    np.testing.assert_allclose(d(x, training=False), student(x, training=False), rtol=1e-6)


def test_keras3_student_exports_alone_to_tflite(keras3_cnn, data):
    import converters

    student = _student(keras)
    d = Distiller(keras3_cnn, student)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    d.fit(*data, batch_size=64, epochs=1, verbose=0)
    result = converters.convert(student, "fp32")
    out = converters.TFLiteModel(result.flatbuffer).predict(data[0][:16])
    np.testing.assert_allclose(out, student.predict(data[0][:16], verbose=0), atol=1e-4)


def test_feature_distillation_with_projection(keras3_cnn, data):
    student = _student(keras)
    d = Distiller(keras3_cnn, student, feature_layers=[("conv", "conv")], alpha=0.0)
    # Teacher conv has 8 channels, student 2: a learned 2->8 projection.
    assert len(d.projections) == 1
    assert tuple(d.projections[0].kernel.shape) == (2, 8)
    proj_before = d.projections[0].kernel.numpy()
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = d.fit(*data, batch_size=64, epochs=3, verbose=0).history
    assert history["feature"][-1] < history["feature"][0]
    assert not np.array_equal(proj_before, d.projections[0].kernel.numpy())
    assert "ground_truth" not in history
    # The projection belongs to the distiller, not to the exported student.
    assert len(student.layers) == 4


def test_feature_distillation_same_width_needs_no_projection(keras3_cnn):
    d = Distiller(keras3_cnn, _student(keras, width=8), feature_layers=[("pool", "pool")])
    assert d.projections == []


def test_custom_loss(keras3_cnn, data):
    @dataclasses.dataclass(frozen=True)
    class LogitMSE(dl.DistillationLoss):
        name: ClassVar[str] = "logit_mse"

        def per_example(self, inputs):
            return tf.reduce_mean(tf.square(inputs.teacher_logits - inputs.student_logits), -1)

    d = Distiller(keras3_cnn, _student(keras), losses=[LogitMSE(weight=0.5), dl.HardTargetLoss()])
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = d.fit(data[0], batch_size=64, epochs=2, verbose=0).history  # no labels needed
    assert history["logit_mse"][-1] < history["logit_mse"][0]
    assert "accuracy" in history
    assert dl.loss_from_config(LogitMSE(weight=0.5).get_config()) == LogitMSE(weight=0.5)


def test_ground_truth_loss_without_labels_is_an_error(keras3_cnn, data):
    d = Distiller(keras3_cnn, _student(keras), alpha=0.5)
    d.compile(optimizer="adam")
    with pytest.raises(DistillationError, match="needs labels"):
        d.fit(data[0], batch_size=64, epochs=1, verbose=0)


def test_softmax_teacher_gives_same_soft_loss_as_logit_teacher(keras3_cnn, data):
    probs = keras.Sequential(
        [keras3_cnn, keras.layers.Softmax(name="softmax")], name="teacher_probs"
    )
    student = _student(keras)
    a = Distiller(keras3_cnn, student, alpha=0.0)
    b = Distiller(probs, student, alpha=0.0)
    a.compile(optimizer="sgd")
    b.compile(optimizer="sgd")
    la = a.evaluate(data[0], batch_size=64, verbose=0, return_dict=True)["soft"]
    lb = b.evaluate(data[0], batch_size=64, verbose=0, return_dict=True)["soft"]
    assert la == pytest.approx(lb, rel=1e-3)


# --------------------------------------------------------------------------- TF-MOT students


def _pruned(seed=1):
    mot = tfmot()
    schedule = mot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    return mot.sparsity.keras.prune_low_magnitude(_student(tf_keras(), seed=seed), schedule)


@pytest.mark.slow
def test_pruned_student_gets_its_callback_and_reaches_sparsity(keras3_cnn, data):
    student = _pruned()
    d = Distiller(keras3_cnn, student, feature_layers=[("conv", "conv")])  # Keras 3 teacher
    d.compile(optimizer=tf_keras().optimizers.Adam(1e-2))
    history = d.fit(*data, batch_size=32, epochs=3, verbose=0).history  # no callback passed
    assert history["loss"][-1] < history["loss"][0]
    stripped = tfmot().sparsity.keras.strip_pruning(student)
    kernel = stripped.get_layer("logits").kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.01)


@pytest.mark.slow
def test_qat_student_distils_and_converts_to_int8(tf_keras_cnn, data):
    import converters

    student = tfmot().quantization.keras.quantize_model(_student(tf_keras()))
    d = Distiller(tf_keras_cnn, student, feature_layers=[("conv", "conv")])
    d.compile(optimizer=tf_keras().optimizers.Adam(1e-2))
    history = d.fit(*data, batch_size=64, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    result = converters.convert(student, "int8", representative_data=data[0][:64])
    pred = converters.TFLiteModel(result.flatbuffer).predict(data[0])
    keras_pred = student.predict(data[0], verbose=0)
    assert (pred.argmax(-1) == keras_pred.argmax(-1)).mean() > 0.9


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
def test_cached_teacher_outputs_give_the_same_losses(generation, request, data):
    k = keras if generation == "keras3" else tf_keras()
    teacher = request.getfixturevalue("keras3_cnn" if generation == "keras3" else "tf_keras_cnn")
    d = Distiller(teacher, _student(k), feature_layers=[("conv", "conv")])
    d.compile(optimizer="sgd")
    cache = d.cache_teacher(*data, batch_size=100)
    assert cache.teacher_logits.shape == (N, 10)
    assert cache.teacher_features["conv"].shape == (N, 8, 8, 8)
    np.testing.assert_allclose(
        cache.teacher_logits, teacher.predict(data[0], verbose=0), rtol=1e-5, atol=1e-5
    )
    live = d.evaluate(*data, batch_size=64, verbose=0, return_dict=True)
    cached = d.evaluate(cache.dataset(64, shuffle=False), verbose=0, return_dict=True)
    for key in ("loss", "soft", "ground_truth", "feature", "accuracy"):
        assert cached[key] == pytest.approx(live[key], rel=1e-4, abs=1e-6)
    history = d.fit(cache.dataset(64, seed=0), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_cache_from_another_distiller_lacks_features(keras3_cnn, data):
    plain = Distiller(keras3_cnn, _student(keras))
    cache = plain.cache_teacher(*data)
    d = Distiller(keras3_cnn, _student(keras), feature_layers=[("conv", "conv")])
    d.compile(optimizer="sgd")
    with pytest.raises(DistillationError, match="no features"):
        d.fit(cache.dataset(64), epochs=1, verbose=0)
    with pytest.raises(DistillationError, match="NumPy"):
        d.cache_teacher(list(data[0]))
    with pytest.raises(DistillationError, match="must match"):
        d.cache_teacher(data[0], data[1][:10])


# --------------------------------------------------------------------------- serialization


@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
def test_save_load_round_trip(generation, request, data, tmp_path):
    k = keras if generation == "keras3" else tf_keras()
    teacher = request.getfixturevalue("keras3_cnn" if generation == "keras3" else "tf_keras_cnn")
    d = Distiller(
        teacher, _student(k), temperature=3.0, alpha=0.2, feature_layers=[("conv", "conv")]
    )
    d.compile(optimizer=k.optimizers.Adam(1e-2))
    d.fit(*data, batch_size=64, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    d.save(path)

    loaded = load_distiller(path)
    assert isinstance(loaded, Distiller) and isinstance(loaded, k.Model)
    assert loaded.losses_config == d.losses_config
    assert loaded.get_config()["losses"] == d.get_config()["losses"]
    assert _same(_weights(loaded.student), _weights(d.student))
    assert _same(_weights(loaded.teacher), _weights(teacher))
    np.testing.assert_array_equal(loaded.projections[0].kernel, d.projections[0].kernel)
    x = data[0][:8]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0), atol=1e-6)
    # It trains on from where it was.
    loaded.fit(*data, batch_size=64, epochs=1, verbose=0)


def test_pruned_student_distiller_round_trip(tf_keras_cnn, data, tmp_path):
    d = Distiller(tf_keras_cnn, _pruned())
    d.compile(optimizer="adam")
    d.fit(*data, batch_size=64, epochs=1, verbose=0)
    d.save(tmp_path / "pruned.keras")
    loaded = load_distiller(tmp_path / "pruned.keras")
    assert _same(_weights(loaded.student), _weights(d.student))


def test_cross_generation_distiller_refuses_to_serialize(keras3_cnn):
    d = Distiller(keras3_cnn, _student(tf_keras()))
    with pytest.raises(DistillationError, match="same Keras generation"):
        d.get_config()


def test_load_errors(tmp_path):
    with pytest.raises(DistillationError, match="does not exist"):
        load_distiller(tmp_path / "missing.keras")
    with pytest.raises(DistillationError, match=".keras"):
        load_distiller(tmp_path / "x.h5")
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DistillationError, match="not a readable"):
        load_distiller(bad)
    with pytest.raises(DistillationError, match=".keras or .h5"):
        load_model(tmp_path / "x.onnx")


def test_plain_model_file_is_not_a_distiller(keras3_cnn, tmp_path):
    path = tmp_path / "plain.keras"
    keras3_cnn.save(path)
    with pytest.raises(DistillationError, match="not a Distiller"):
        load_distiller(path)


# --------------------------------------------------------------------------- one call


def test_distill_function_and_summary(keras3_cnn, data):
    student = _student(keras)
    result = tflight.distill(keras3_cnn, student, *data, epochs=2, batch_size=64, seed=0)
    assert result.student is student and result.cached and result.cache_seconds > 0
    assert len(result.history["loss"]) == 2
    lines = []
    result.summary(print_fn=lines.append)
    assert lines[0].startswith("Distilled 'student' for 2 epoch(s)")
    with pytest.raises(DistillationError, match="epochs"):
        tflight.distill(keras3_cnn, student, *data, epochs=0)


# --------------------------------------------------------------------------- tf.distribute

_MIRRORED = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tflight._keras import keras, tf_keras
    from tflight.distillation.distiller import Distiller
    k = keras if sys.argv[1] == "keras3" else tf_keras()
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 64)

    def model(width, name, seed):
        k.utils.set_random_seed(seed)
        return k.Sequential([k.Input((8, 8, 1)),
                             k.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
                             k.layers.Flatten(), k.layers.Dense(10)], name=name)

    def run(strategy):
        with strategy.scope():
            d = Distiller(model(8, "teacher", 1), model(4, "student", 2),
                          feature_layers=[("conv", "conv")], alpha=0.3)
            d.compile(optimizer=k.optimizers.SGD(0.5))
        h = d.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        return [np.array(w) for w in d.student.weights], h.history["loss"]

    single, loss1 = run(tf.distribute.get_strategy())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, loss2 = run(strategy)
    start = [np.array(w) for w in model(4, "s", 2).weights]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "diff": max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored)),
        "moved": max(float(np.abs(a - b).max()) for a, b in zip(single, start)),
        "loss1": loss1, "loss2": loss2,
    }))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
def test_mirrored_strategy_matches_single_device(generation):
    # Logical devices must be configured before TensorFlow starts: a fresh process.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", _MIRRORED, generation],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["moved"] > 1e-3  # training happened
    assert report["diff"] < 1e-5  # two replicas == one device on the same global batch
    np.testing.assert_allclose(report["loss1"], report["loss2"], rtol=1e-5)


def test_qat_student_distiller_weights_round_trip(tf_keras_cnn, data, tmp_path):
    # TF-MOT's QuantizeLayer cannot reload from .keras; weights files work.
    def build():
        qat = tfmot().quantization.keras.quantize_model(_student(tf_keras()))
        return Distiller(tf_keras_cnn, qat, feature_layers=[("conv", "conv")])

    d = build()
    d.compile(optimizer="adam")
    d.fit(*data, batch_size=64, epochs=1, verbose=0)
    d.save_weights(tmp_path / "qat.weights.h5")
    fresh = build()
    assert not _same(_weights(fresh.student), _weights(d.student))
    fresh.load_weights(tmp_path / "qat.weights.h5")
    assert _same(_weights(fresh.student), _weights(d.student))
    assert _same(_weights(fresh.projections[0]), _weights(d.projections[0]))
