"""The model zoo: every model shape a Keras user brings, through every technique.

Models (tiny sizes, random weights; the point is coverage, not accuracy) are
crossed with the compression techniques (prune, QAT, cluster, PQAT, PCQAT), the
converter's modes (fp32, fp16, dynamic, int8) and `check_agreement` (fp32
`.tflite` against Keras). Each cell either works and is checked (sparsity
reached inside nested layers, quantize wrappers on nested layers, LiteRT output
agreeing with Keras) or ends in a documented tflight/converters error whose
message is part of the expectation (`EXPECTED_ERRORS`).

This module is the one definition of the matrix: `tests/test_zoo.py` imports it
(a test may import a benchmark; the benchmark never imports tests), so the
test and the printed matrix cannot drift apart.

Usage:
    .venv/bin/python benchmarks/zoo.py [--only MODEL ...] [--techniques T ...] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from converters.files import write_json  # noqa: E402

N_SAMPLES = 32
BATCH = 16
SEED = 0


# --------------------------------------------------------------------------
# Models.


@dataclasses.dataclass(frozen=True)
class Zoo:
    """One model of the zoo: a Keras 3 model and data that fits it."""

    name: str
    model: Any
    x: Any  # array, list or dict
    y: Any  # array, list or dict
    loss: Any  # a loss name or a list/dict of them
    nested: tuple[str, ...] = ()  # names of nested sub-models that must be reached


def _rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


def _images(shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng()
    x = rng.uniform(0, 1, (N_SAMPLES, *shape)).astype(np.float32)
    return x, rng.integers(0, classes, N_SAMPLES)


def seq_cnn() -> Zoo:
    import keras

    m = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="logits"),
        ],
        name="seq_cnn",
    )
    return Zoo("seq_cnn", m, *_images((8, 8, 1), 10), "sparse_categorical_crossentropy")


def func_cnn() -> Zoo:
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out, name="func_cnn")
    return Zoo("func_cnn", m, *_images((8, 8, 1), 10), "sparse_categorical_crossentropy")


def _transfer(frozen: bool) -> Zoo:
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((32, 32, 3))
    backbone = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    backbone.trainable = not frozen
    x = keras.layers.GlobalAveragePooling2D()(backbone(inp, training=False))
    out = keras.layers.Dense(4, activation="softmax", name="head")(x)
    name = "transfer_frozen" if frozen else "transfer_trainable"
    m = keras.Model(inp, out, name=name)
    return Zoo(
        name, m, *_images((32, 32, 3), 4), "sparse_categorical_crossentropy", (backbone.name,)
    )


def transfer_frozen() -> Zoo:
    return _transfer(True)


def transfer_trainable() -> Zoo:
    return _transfer(False)


def mobilenet_v3_small() -> Zoo:
    import keras

    m = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=4, include_preprocessing=False
    )
    return Zoo("mobilenet_v3_small", m, *_images((32, 32, 3), 4), "sparse_categorical_crossentropy")


def efficientnet_v2_b0() -> Zoo:
    import keras

    m = keras.applications.EfficientNetV2B0(
        input_shape=(32, 32, 3), weights=None, classes=4, include_preprocessing=False
    )
    return Zoo("efficientnet_v2_b0", m, *_images((32, 32, 3), 4), "sparse_categorical_crossentropy")


def _tokens(length: int, vocab: int) -> np.ndarray:
    return _rng().integers(1, vocab, (N_SAMPLES, length)).astype(np.int32)


def lstm() -> Zoo:
    import keras

    inp = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(50, 8)(inp)
    x = keras.layers.LSTM(8)(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    m = keras.Model(inp, out, name="lstm")
    y = _rng().integers(0, 3, N_SAMPLES)
    return Zoo("lstm", m, _tokens(12, 50), y, "sparse_categorical_crossentropy")


def bigru() -> Zoo:
    import keras

    inp = keras.Input((12, 6))
    x = keras.layers.Bidirectional(keras.layers.GRU(8))(inp)
    out = keras.layers.Dense(3, activation="softmax")(x)
    m = keras.Model(inp, out, name="bigru")
    x_data, _ = _images((12, 6), 3)
    return Zoo(
        "bigru", m, x_data, _rng().integers(0, 3, N_SAMPLES), "sparse_categorical_crossentropy"
    )


def transformer() -> Zoo:
    import keras

    inp = keras.Input((8, 16))
    a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, name="mha")(inp, inp)
    x = keras.layers.LayerNormalization(name="ln1")(keras.layers.Add()([inp, a]))
    f = keras.layers.Dense(32, activation="relu", name="ffn1")(x)
    f = keras.layers.Dense(16, name="ffn2")(f)
    x = keras.layers.LayerNormalization(name="ln2")(keras.layers.Add()([x, f]))
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(4, activation="softmax", name="head")(x)
    m = keras.Model(inp, out, name="transformer")
    return Zoo("transformer", m, *_images((8, 16), 4), "sparse_categorical_crossentropy")


def multi_input() -> Zoo:
    import keras

    a = keras.Input((8, 8, 1), name="image")
    b = keras.Input((4,), name="meta")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(a))
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, name="meta_dense")(b)])
    out = keras.layers.Dense(5, activation="softmax", name="logits")(x)
    m = keras.Model([a, b], out, name="multi_input")
    xa, y = _images((8, 8, 1), 5)
    xb = _rng().uniform(0, 1, (N_SAMPLES, 4)).astype(np.float32)
    return Zoo("multi_input", m, [xa, xb], y, "sparse_categorical_crossentropy")


def _two_heads() -> tuple[Any, Any, Any]:
    import keras

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inp))
    x = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    cls = keras.layers.Dense(5, activation="softmax", name="cls")(x)
    reg = keras.layers.Dense(1, name="reg")(x)
    return inp, cls, reg


def multi_output_list() -> Zoo:
    import keras

    inp, cls, reg = _two_heads()
    m = keras.Model(inp, [cls, reg], name="multi_output_list")
    x, y = _images((8, 8, 1), 5)
    r = _rng().uniform(0, 1, (N_SAMPLES, 1)).astype(np.float32)
    return Zoo("multi_output_list", m, x, [y, r], ["sparse_categorical_crossentropy", "mse"])


def multi_output_dict() -> Zoo:
    import keras

    inp, cls, reg = _two_heads()
    m = keras.Model(inp, {"cls": cls, "reg": reg}, name="multi_output_dict")
    x, y = _images((8, 8, 1), 5)
    r = _rng().uniform(0, 1, (N_SAMPLES, 1)).astype(np.float32)
    return Zoo(
        "multi_output_dict",
        m,
        x,
        {"cls": y, "reg": r},
        {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
    )


def custom_layer() -> Zoo:
    """A user's own layer, made known to the bridge with `tflight.bridge.register`."""
    import keras

    @keras.saving.register_keras_serializable(package="zoo")
    class Scale(keras.layers.Layer):
        def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x: Any) -> Any:
            return x * self.factor

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "factor": self.factor}

    from tflight._keras import tf_keras

    tfk = tf_keras()

    @tfk.saving.register_keras_serializable(package="zoo")
    class TfkScale(tfk.layers.Layer):
        def __init__(self, factor: float = 2.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x: Any) -> Any:
            return x * self.factor

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "factor": self.factor}

    from tflight import bridge

    # The documented path: a translation from the Keras 3 layer to its tf_keras twin.
    bridge.register(Scale, lambda layer: TfkScale(**layer.get_config()))
    inp = keras.Input((8, 8, 1))
    x = Scale(0.5, name="scale")(inp)
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x))
    out = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    m = keras.Model(inp, out, name="custom_layer")
    return Zoo("custom_layer", m, *_images((8, 8, 1), 10), "sparse_categorical_crossentropy")


def hub_resnet() -> Zoo:
    import keras
    import keras_hub

    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(32, 32, 3),
    )
    inp = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inp))
    out = keras.layers.Dense(4, activation="softmax", name="head")(x)
    m = keras.Model(inp, out, name="hub_resnet")
    return Zoo(
        "hub_resnet",
        m,
        *_images((32, 32, 3), 4),
        "sparse_categorical_crossentropy",
        (backbone.name,),
    )


def hub_bert() -> Zoo:
    import keras
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=12,
        dropout=0.0,
    )
    names = ("token_ids", "segment_ids", "padding_mask")
    inputs = {n: keras.Input((12,), dtype="int32", name=n) for n in names}
    pooled = backbone(inputs)["pooled_output"]
    out = keras.layers.Dense(3, activation="softmax", name="head")(pooled)
    m = keras.Model(inputs, out, name="hub_bert")
    x = {
        "token_ids": _tokens(12, 50),
        "segment_ids": np.zeros((N_SAMPLES, 12), np.int32),
        "padding_mask": np.ones((N_SAMPLES, 12), np.int32),
    }
    y = _rng().integers(0, 3, N_SAMPLES)
    return Zoo("hub_bert", m, x, y, "sparse_categorical_crossentropy", (backbone.name,))


MODELS: dict[str, Callable[[], Zoo]] = {
    f.__name__: f
    for f in (
        seq_cnn,
        func_cnn,
        transfer_frozen,
        transfer_trainable,
        mobilenet_v3_small,
        efficientnet_v2_b0,
        lstm,
        bigru,
        transformer,
        multi_input,
        multi_output_list,
        multi_output_dict,
        custom_layer,
        hub_resnet,
        hub_bert,
    )
}

COMPRESS = ("prune", "qat", "cluster", "pqat", "pcqat")
CONVERT = ("fp32", "fp16", "dynamic", "int8")
TECHNIQUES = (*COMPRESS, *CONVERT, "agreement")


# --------------------------------------------------------------------------
# Expectations.


# (model, technique) -> a substring of the expected tflight/converters error.
# Every other cell must work and pass its checks.
# keras-hub's BERT converts directly (dict inputs) but does not bridge to tf_keras:
# its ReversibleEmbedding owns weights the bridge cannot translate, so TF-MOT's
# techniques cannot reach it; the bridge names the layer and the fix.
_BERT_BRIDGE = "ReversibleEmbedding has no tf_keras counterpart the bridge knows"
EXPECTED_ERRORS: dict[tuple[str, str], str] = {
    **{("hub_bert", t): _BERT_BRIDGE for t in COMPRESS},
}

# Cells that are expected to fail until another part of the project lands;
# the runner reports them as pending instead of failed. Empty: every cell above
# either works or fails with its expected, documented error.
PENDING_OTHER_BRANCHES: frozenset[tuple[str, str]] = frozenset()


# The cells `tests/test_zoo.py` runs in CI; the benchmark runs all of them.
# The cheapest model runs every column; every other model runs the columns that
# exercise what is specific to it (nested layers, its layer types, its inputs
# and outputs), so that every model and every technique is tested within a few
# minutes of CI.
TEST_COLUMNS: dict[str, tuple[str, ...]] = {
    "seq_cnn": TECHNIQUES,
    "func_cnn": ("qat", "pcqat", "int8", "agreement"),
    "transformer": ("qat", "pcqat", "int8", "agreement"),
    "multi_input": ("pqat", "int8", "agreement"),
    "multi_output_list": ("pcqat", "agreement"),
    "multi_output_dict": ("qat", "agreement"),
    "lstm": ("pcqat", "fp32"),
    "bigru": ("prune", "dynamic"),
    "custom_layer": ("qat", "pcqat", "fp32"),
    "transfer_frozen": ("prune",),
    "transfer_trainable": ("prune",),
    "mobilenet_v3_small": ("prune", "fp16"),
    "efficientnet_v2_b0": ("dynamic",),
    "hub_resnet": ("prune", "qat", "fp32"),
    "hub_bert": ("fp32", "agreement"),
}
TEST_CELLS: tuple[tuple[str, str], ...] = tuple(
    (m, t) for m, cols in TEST_COLUMNS.items() for t in cols
)


# --------------------------------------------------------------------------
# Running one cell.


@dataclasses.dataclass(frozen=True)
class Cell:
    """The outcome of one (model, technique) cell."""

    model: str
    technique: str
    ok: bool
    reason: str  # one line: what was checked, or the error
    raw_error: bool  # ended in an exception that is not a tflight/converters error
    pending: bool
    seconds: float


def _project_error(e: BaseException) -> bool:
    import converters.errors
    import tflight.errors

    return isinstance(e, tflight.errors.TflightError | converters.errors.ConversionError)


def _pipeline(technique: str) -> list[Any]:
    import tflight

    prune = tflight.Prune(sparsity=0.5, unsupported="skip")
    cluster = tflight.Cluster(n_clusters=8, unsupported="skip")
    qat = tflight.QAT(unsupported="keep_float")
    return {
        "prune": [prune],
        "qat": [qat],
        "cluster": [cluster],
        "pqat": [prune, qat],
        "pcqat": [prune, cluster, qat],
    }[technique]


def _check_compressed(zoo: Zoo, technique: str, out: Any) -> str:
    """Checks a pipeline's result; returns a one-line description of what held."""
    import tflight

    model = out.model
    reports = {r.technique: r for r in out.reports}
    notes = []
    if zoo.nested:
        for rep in out.reports:
            missing = [n for n in zoo.nested if n not in rep.inlined]
            if missing:
                raise AssertionError(f"{rep.technique} did not reach inside {missing}")
    if "prune" in reports:
        rows = [
            r for r in tflight.sparsity_report(model).layers if r.layer in reports["prune"].wrapped
        ]
        short = [r.layer for r in rows if r.sparsity < 0.45]
        if not rows or short:
            raise AssertionError(f"pruned layers below 45 % sparsity: {short or 'none measured'}")
        notes.append(f"{len(rows)} weights >= 45 % sparse")
    if "cluster" in reports and "qat" not in reports:
        from tflight.compress.clustering import unique_weights

        counts = unique_weights(model)
        over = [n for n in reports["cluster"].wrapped if counts.get(n, 0) > 8]
        if over:
            raise AssertionError(f"clustered kernels with more than 8 values: {over}")
        notes.append(f"{len(reports['cluster'].wrapped)} layers <= 8 values")
    if "qat" in reports:
        rep = reports["qat"]
        wrapped = {
            getattr(layer, "layer", layer).name
            for layer in model.layers
            if type(layer).__name__.startswith("QuantizeWrapper")
        }
        nested_layers = [n for n in rep.wrapped if n not in wrapped and model.get_layer(n).weights]
        if nested_layers and not all(
            type(model.get_layer(n)).__name__ == "BatchNormalization" for n in nested_layers
        ):
            raise AssertionError(f"QAT did not wrap {nested_layers[:5]}")
        notes.append(f"{len(wrapped)} quantize wrappers, {len(rep.kept_float)} kept float")
    if zoo.nested:
        notes.append("nested layers reached")
    return "; ".join(notes)


def _convert(zoo: Zoo, mode: str) -> tuple[Any, str]:
    """Converts and checks; int8 of a random-weight model is compared, not validated.

    The converter's int8 validation asks for 85 % top-1 agreement, which
    random, untrained weights (near-ties everywhere) do not always give; the
    cell checks instead that the int8 `.tflite` runs and agrees with Keras on
    most samples (`check_agreement`, at least 50 %).
    """
    import converters
    import tflight

    int8 = mode == "int8"
    result = converters.convert(
        zoo.model,
        mode,
        representative_data=zoo.x if int8 else None,
        sample_data=zoo.x,
        validate=not int8,
    )
    size = f"{len(result.flatbuffer) / 1024:.0f} KiB"
    if not int8:
        return result, f"{size}, validated"
    report = tflight.check_agreement(zoo.model, result, zoo.x, min_agreement=0.0)
    # Near-uniform outputs of a random network make top-1 a coin toss: then the
    # outputs themselves must be close.
    if report.agreement < 0.5 and report.max_abs_diff > 0.01:
        raise AssertionError(
            f"int8 agreement {report.agreement:.0%}, max |diff| {report.max_abs_diff:.3g}"
        )
    return result, (
        f"{size}, agreement with Keras {report.agreement:.0%}, max |diff| {report.max_abs_diff:.1e}"
    )


def run_cell(zoo: Zoo, technique: str) -> Cell:
    """Runs one cell and checks its outcome against `EXPECTED_ERRORS`."""
    import tflight

    key = (zoo.name, technique)
    expected = EXPECTED_ERRORS.get(key)
    pending = key in PENDING_OTHER_BRANCHES
    start = time.perf_counter()
    try:
        if technique in COMPRESS:
            out = tflight.Pipeline(_pipeline(technique)).fit(
                zoo.model,
                zoo.x,
                zoo.y,
                compile={"optimizer": "adam", "loss": zoo.loss},
                epochs=1,
                batch_size=BATCH,
                verbose=0,
            )
            what = _check_compressed(zoo, technique, out)
        elif technique in CONVERT:
            _, what = _convert(zoo, technique)
        else:
            result, _ = _convert(zoo, "fp32")
            report = tflight.check_agreement(zoo.model, result, zoo.x, min_agreement=0.99)
            what = f"agreement {report.agreement:.0%}, max |diff| {report.max_abs_diff:.1e}"
    except Exception as e:  # noqa: BLE001 - every failure is a cell outcome
        message = " ".join(str(e).split())
        project = _project_error(e)
        if expected is not None and project and expected in message:
            return Cell(
                zoo.name,
                technique,
                True,
                f"expected error: {message[:160]}",
                False,
                pending,
                time.perf_counter() - start,
            )
        if isinstance(e, AssertionError):
            reason = f"check failed: {message[:200]}"
        else:
            reason = f"{type(e).__name__}: {message[:200]}"
        if not project and not isinstance(e, AssertionError) and os.environ.get("ZOO_TRACE"):
            traceback.print_exc()
        return Cell(
            zoo.name,
            technique,
            False,
            reason,
            not project and not isinstance(e, AssertionError),
            pending,
            time.perf_counter() - start,
        )
    seconds = time.perf_counter() - start
    if expected is not None:
        return Cell(
            zoo.name,
            technique,
            False,
            f"worked, but expected an error: {expected}",
            False,
            pending,
            seconds,
        )
    return Cell(zoo.name, technique, True, what, False, pending, seconds)


# --------------------------------------------------------------------------
# The benchmark.


def _headline(cells: list[Cell]) -> dict[str, int]:
    # `cells_ok` counts the cells that behaved as the matrix says: they work and pass
    # their checks, or end in their documented error (`cells_expected_errors` of them).
    return {
        "cells_ok": sum(c.ok for c in cells),
        "cells_expected_errors": sum(
            c.ok and c.reason.startswith("expected error") for c in cells
        ),
        "cells_total": len(cells),
        "raw_errors": sum(c.raw_error for c in cells),
        "pending_other_branches": sum(c.pending and not c.ok for c in cells),
    }


def _write(path: Path, cells: list[Cell]) -> None:
    payload = {"headline": _headline(cells), "cells": [dataclasses.asdict(c) for c in cells]}
    write_json(path, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(MODELS), help="models to run")
    parser.add_argument("--techniques", nargs="*", choices=TECHNIQUES, help="columns to run")
    parser.add_argument("--json", type=Path, help="write the matrix and headline here")
    args = parser.parse_args(argv)
    cells: list[Cell] = []
    for name in args.only or list(MODELS):
        try:
            zoo = MODELS[name]()
        except Exception as e:  # noqa: BLE001 - a model that cannot be built is a row of errors
            message = " ".join(str(e).split())[:200]
            for t in args.techniques or TECHNIQUES:
                cells.append(
                    Cell(
                        name,
                        t,
                        False,
                        f"build failed: {type(e).__name__}: {message}",
                        True,
                        (name, t) in PENDING_OTHER_BRANCHES,
                        0.0,
                    )
                )
            continue
        for technique in args.techniques or TECHNIQUES:
            cell = run_cell(zoo, technique)
            cells.append(cell)
            mark = "✔" if cell.ok else ("… pending" if cell.pending else "✘")
            print(
                f"{name:<20} {technique:<9} {mark} {cell.reason}  ({cell.seconds:.1f} s)",
                flush=True,
            )
            if args.json:  # written after every cell: a long run can be read as it goes
                _write(args.json, cells)
    print()
    columns = args.techniques or TECHNIQUES
    print(f"{'model':<20} " + " ".join(f"{t:>9}" for t in columns))
    for name in args.only or list(MODELS):
        row = {c.technique: c for c in cells if c.model == name}
        marks = ["✔" if row[t].ok else ("…" if row[t].pending else "✘") for t in columns]
        print(f"{name:<20} " + " ".join(f"{m:>9}" for m in marks))
    headline = _headline(cells)
    print(f"\n{headline}")
    if args.json:
        _write(args.json, cells)
    return 0 if headline["raw_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
