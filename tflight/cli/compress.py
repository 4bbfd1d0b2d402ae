"""`tflight compress`: prune / QAT / cluster (or a combination), fine-tune, convert."""

from __future__ import annotations

import enum
import os

import click

from tflight.cli._common import (
    custom_objects_option,
    progress_option,
    progress_printer,
    stage_callback,
)

__all__ = ["compress", "Recipe"]


class Recipe(enum.StrEnum):
    """Techniques and combinations; the values are the CLI words."""

    PRUNE = "prune"
    QAT = "qat"
    CLUSTER = "cluster"
    PQAT = "pqat"
    CQAT = "cqat"
    PCQAT = "pcqat"


_STAGES = {
    Recipe.PRUNE: ["prune"],
    Recipe.QAT: ["qat"],
    Recipe.CLUSTER: ["cluster"],
    Recipe.PQAT: ["prune", "qat"],
    Recipe.CQAT: ["cluster", "qat"],
    Recipe.PCQAT: ["prune", "cluster", "qat"],
}


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax"


def _n(x) -> int:
    """Examples in `x`: one array, or a list of arrays (one per model input)."""
    return len(x[0]) if isinstance(x, list) else len(x)


def _rows(x, index):
    return [a[index] for a in x] if isinstance(x, list) else x[index]


def _split(x, y, holdout: float):
    """`--holdout` split of one array or of a list of input arrays (same rows in each)."""
    import numpy as np

    from tflight import _io

    if not isinstance(x, list):
        (x, y), (x_val, y_val) = _io.split_holdout(x, y, holdout)
        return x, y, x_val, y_val
    index = np.arange(_n(x))
    (train, y), (held, y_val) = _io.split_holdout(index, y, holdout)
    return _rows(x, train), y, _rows(x, held), y_val


def _check_outputs(model, error) -> None:
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) > 1:
        names = ", ".join(repr(n) for n in (getattr(model, "output_names", None) or []))
        raise error(
            f"The model {model.name!r} has {len(outputs)} outputs ({names}); compress trains "
            "classifiers with one output and one label per example. Compress a multi-output "
            "model from Python with tflight.Pipeline (it takes a loss per output), or save "
            "one head on its own."
        )


def _check_inputs(model, x, path: str, error) -> None:
    """Single-input models take `x`; a model with k inputs takes `x0` ... `x{k-1}`."""
    from tflight import _io

    if not isinstance(x, list):
        _io.check_input_shape(model, x, path, error=error)
        return
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != len(x):
        raise error(
            f"{path!r} holds {len(x)} input array(s) (x0 ... x{len(x) - 1}) but model "
            f"{model.name!r} has {len(inputs)} input(s); save one array per input, in the "
            "model's input order."
        )
    for i, (tensor, a) in enumerate(zip(inputs, x, strict=True)):
        expected, got = tuple(tensor.shape[1:]), tuple(a.shape[1:])
        if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got, strict=True)
        ):
            raise error(
                f"`x{i}` in {path!r} has examples of shape {got}, but input {i} of model "
                f"{model.name!r} takes {expected} (None = any); pass data of shape "
                f"(n, *{expected})."
            )


def _accuracy(model, x, y) -> float:
    """Top-1 accuracy of a Keras model on `x` (array or list of arrays) with class ids `y`."""
    import numpy as np

    pred = np.asarray(model.predict(x, verbose=0))
    return float(np.mean(pred.reshape(len(pred), -1).argmax(-1) == np.asarray(y).reshape(-1)))


def _echo_sparsity(report, target: float, skipped: dict[str, str]) -> None:
    """Prints the reached sparsity, and a note when skipped layers keep it far below target."""
    click.echo(f"sparsity: {report.overall:.1%}")
    if report.overall >= target - 0.1 or not skipped:
        return
    total = sum(row.size for row in report.layers)
    by_reason: dict[str, int] = {}
    for row in report.layers:
        if row.layer in skipped:
            by_reason[skipped[row.layer]] = by_reason.get(skipped[row.layer], 0) + row.size
    if not by_reason:
        return
    left = sum(by_reason.values())
    why = "; ".join(f"{n:,} {reason}" for reason, n in sorted(by_reason.items()))
    click.echo(
        f"note: sparsity {report.overall:.1%} is far below the --sparsity target "
        f"{target:.0%} because {left:,} of {total:,} prunable weights were skipped and left "
        f"dense ({why}). Unfreeze those layers or use a model TF-MOT can prune to reach it."
    )


def agreement_advice() -> str:
    """What to do when a QAT .tflite fails the --min-agreement gate, every option named."""
    return (
        "Options: lower --min-agreement if this agreement is acceptable; keep the layers "
        "TF-MOT cannot quantize in float with --keep-unsupported-float; skip QAT and convert "
        "in --mode dynamic (e.g. --technique prune --mode dynamic); or fine-tune longer "
        "(--epochs), which helps when the quantization ranges have not settled but can lower "
        "agreement further on attention models."
    )


@click.command("compress")
@click.argument("model_path", metavar="MODEL")
@click.option(
    "--data",
    "data_path",
    required=True,
    help="Training data: an .npz with `x` (inputs; `x0`, `x1`, ... for a multi-input model) "
    "and `y` (class ids or one-hot labels).",
)
@click.option(
    "--validation",
    "validation_path",
    default=None,
    help="Held-out data (.npz with `x` and `y`) for the accuracy and agreement figures "
    "[default: hold out --holdout of --data].",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.5, min_open=True),
    default=0.2,
    show_default=True,
    help="Share of --data kept out of training to measure on (ignored with --validation).",
)
@click.option(
    "--technique",
    type=click.Choice([r.value for r in Recipe]),
    default=Recipe.PQAT.value,
    show_default=True,
    help="prune, qat, cluster, or a combination (pqat, cqat, pcqat).",
)
@click.option("--sparsity", type=float, default=0.5, show_default=True, help="Pruning target.")
@click.option("--clusters", type=int, default=16, show_default=True, help="Clusters per kernel.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Epochs per stage.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True, help="Adam learning rate.")
@click.option(
    "--mode",
    type=click.Choice(["fp32", "fp16", "dynamic", "int8"]),
    default=None,
    help="Conversion mode [default: int8 with QAT, else fp32].",
)
@click.option(
    "--min-agreement",
    type=click.FloatRange(0.0, 1.0),
    default=0.99,
    show_default=True,
    help="Fail if a QAT .tflite agrees with the Keras model on fewer top-1 predictions "
    "of the held-out data.",
)
@click.option(
    "--keep-unsupported-float",
    is_flag=True,
    help="With QAT: leave the layers TF-MOT cannot quantize in float instead of failing.",
)
@click.option(
    "--skip-unsupported",
    is_flag=True,
    help="With pruning: leave the layers TF-MOT cannot prune dense instead of failing "
    "(they are reported as skipped).",
)
@custom_objects_option
@progress_option
@click.option(
    "-o",
    "--output",
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the .tflite file.",
)
def compress(
    model_path: str,
    data_path: str,
    validation_path: str | None,
    holdout: float,
    technique: str,
    sparsity: float,
    clusters: int,
    epochs: int,
    batch_size: int,
    lr: float,
    mode: str | None,
    min_agreement: float,
    keep_unsupported_float: bool,
    skip_unsupported: bool,
    custom_objects_path: str | None,
    progress: bool | None,
    out_path: str,
) -> None:
    """Compress MODEL with a technique, fine-tune on --data, and write a .tflite.

    The accuracy and Keras-vs-LiteRT agreement figures are measured on data
    that training did not see: --validation, or a random --holdout share of
    --data.
    """
    from converters.files import check_output
    from tflight import _io
    from tflight.errors import CompressionError, UnsupportedLayerError

    # The output is checked before anything is loaded or trained.
    if os.path.splitext(out_path)[1].lower() != ".tflite":
        raise CompressionError(
            f"-o {out_path!r}: compress writes a .tflite file; give a path ending in .tflite "
            "(a Keras suffix would hide LiteRT bytes under a model name)."
        )
    check_output(
        out_path,
        [model_path, data_path, validation_path, custom_objects_path],
        option="-o",
        error=CompressionError,
    )
    say = progress_printer(progress)
    stages = _STAGES[Recipe(technique)]

    x, y = _io.load_xy(data_path, labels=True, error=CompressionError, multi_input=True)
    if validation_path is not None:
        x_val, y_val = _io.load_xy(
            validation_path, labels=True, error=CompressionError, multi_input=True
        )
    custom = _io.load_custom_objects(custom_objects_path, error=CompressionError)
    model = _io.load_model(model_path, custom_objects=custom, error=CompressionError)
    _check_outputs(model, CompressionError)
    _check_inputs(model, x, data_path, CompressionError)
    y = _io.check_labels(model, y, data_path, error=CompressionError)
    if validation_path is not None:
        _check_inputs(model, x_val, validation_path, CompressionError)
        y_val = _io.check_labels(model, y_val, validation_path, error=CompressionError)
        held = f"{_n(x_val)} samples of {validation_path}"
    else:
        x, y, x_val, y_val = _split(x, y, holdout)
        held = (
            f"{_n(x_val)} held-out samples ({holdout:.0%} of {data_path}, not used for training)"
        )
    if _n(x) < 2:
        raise CompressionError(
            f"{data_path!r} leaves {_n(x)} training example(s) after holding out "
            f"{_n(x_val)}; give more data or pass --validation."
        )

    import converters
    import tflight
    from tflight._keras import tf_keras

    techniques = []
    for stage in stages:
        if stage == "prune":
            techniques.append(tflight.Prune(
                    sparsity=sparsity, unsupported="skip" if skip_unsupported else "raise"
                )
            )
        elif stage == "cluster":
            techniques.append(tflight.Cluster(n_clusters=clusters))
        else:
            techniques.append(
                tflight.QAT(unsupported="keep_float" if keep_unsupported_float else "raise")
            )
    k = tf_keras()
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))
    callbacks = [stage_callback(k, say, stages)] if say else []
    if say:
        say(f"Fine-tuning on {_n(x)} examples of {data_path}; measuring on {held}.")
    try:
        out = tflight.Pipeline(techniques).fit(
            model,
            x,
            y,
            compile={"optimizer": k.optimizers.Adam(lr), "loss": loss, "metrics": ["accuracy"]},
            epochs=epochs,
            batch_size=batch_size,
            verbose=0,
            callbacks=callbacks,
        )
    except UnsupportedLayerError as e:
        # The library's advice names Python arguments; give the command's own.
        reason = str(e).split(". ")[0]
        if "prune" in stages and not skip_unsupported and "cannot prune" in reason:
            fix = " Leave them dense with --skip-unsupported, or"
        elif "qat" in stages and not keep_unsupported_float and "cannot prune" not in reason:
            fix = " Leave them in float with --keep-unsupported-float, or"
        else:
            fix = ""
        raise UnsupportedLayerError(
            f"{reason}.{fix or ''} {'r' if fix else 'R'}eplace them with supported layers "
            "(Conv2D, DepthwiseConv2D, Dense, ...), or choose another --technique."
        ) from e
    except CompressionError as e:
        if "did not reach its target" not in str(e):
            raise
        reason = str(e).split(". ")[0]
        raise CompressionError(
            f"{reason}. Train for more steps: raise --epochs or lower --batch-size."
        ) from e
    out.summary(print_fn=click.echo)
    qat = "qat" in stages
    mode = mode or ("int8" if qat else "fp32")
    if say:
        say(f"Converting to {mode} and verifying in LiteRT ...")
    result = converters.convert(
        out.model, mode, representative_data=_rows(x, slice(0, 200)), sample_data=x_val
    )
    if "prune" in stages:
        skipped = next((dict(r.skipped) for r in out.reports if r.technique == "prune"), {})
        _echo_sparsity(tflight.sparsity_report(out.model), sparsity, skipped)
    original = _accuracy(model, x_val, y_val)
    report = tflight.check_agreement(out.model, result, x_val, y=y_val, min_agreement=0.0)
    click.echo(
        f"measured on {held}: top-1 agreement Keras vs LiteRT {report.agreement:.2%}; "
        f"accuracy Keras {report.keras_accuracy:.2%}, LiteRT {report.tflite_accuracy:.2%}"
    )
    click.echo(f"original model: accuracy {original:.2%} on the same {held}")
    if qat and report.agreement < min_agreement:
        raise CompressionError(
            f"The {mode} .tflite agrees with the QAT Keras model on {report.agreement:.2%} of "
            f"{report.samples} held-out samples, below --min-agreement {min_agreement:.2%}; "
            f"nothing was written. {agreement_advice()}"
        )
    result.save(out_path)
    click.echo(f"wrote {out_path}: {mode}, {result.size:,} bytes, gzip {result.gzip_size:,} bytes")
