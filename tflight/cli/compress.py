"""`tflight compress`: prune / QAT / cluster (or a combination), fine-tune, convert.

The command parses its flags, loads the files, makes one library call
(`tflight.compress.compress_to_tflite`) and renders the result; library errors
are mapped to the command's flags through their fields (`e.kind`, `e.option`).
"""

from __future__ import annotations

import os

import click

from tflight.cli._common import (
    custom_objects_option,
    progress_option,
    progress_printer,
    stage_callback,
)
from tflight.compress.gate import DEFAULT_MAX_DROP
from tflight.compress.recipe import Recipe

__all__ = ["compress", "Recipe"]

# The library's arguments, as this command's flags.
_FLAGS = {
    "epochs": "--epochs",
    "learning_rate": "--lr",
    "schedule": "--schedule ramp",
    "sparsity": "--sparsity",
    "clusters": "--clusters",
    "distillation": "distilling first (tflight distill)",
}
_WORDS = {
    "epochs": "more {}",
    "learning_rate": "another {}",
    "schedule": "the ramped {}",
    "sparsity": "a lower {}",
    "clusters": "more {}",
    "distillation": "{}",
}


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


def _render(out, held: str, sparsity: float) -> None:
    """Prints what the run did and the figures measured on the held-out data."""
    out.pipeline.summary(print_fn=click.echo)
    if out.sparsity is not None:
        _echo_sparsity(out.sparsity, sparsity, out.skipped)
    agreement = out.agreement
    click.echo(
        f"measured on {held}: top-1 agreement Keras vs LiteRT {agreement.agreement:.2%}; "
        f"accuracy Keras {agreement.keras_accuracy:.2%}, LiteRT {agreement.tflite_accuracy:.2%}"
    )
    check = out.accuracy
    click.echo(f"original model: accuracy {check.original:.2%} on the same {held}")
    budget = "" if check.max_drop is None else f" (--max-drop {check.max_drop:g})"
    click.echo(f"accuracy drop, LiteRT vs original: {check.drop:+.1f} pt{budget}")
    if check.max_drop is not None and check.resolution > check.max_drop:
        click.echo(
            f"note: one of the {check.samples} held-out samples is {check.resolution:.1f} pt, "
            f"coarser than --max-drop {check.max_drop:g}: more held-out data makes the check finer."
        )


def _unsupported(e, skip_unsupported: bool, keep_unsupported_float: bool):
    """The library's unsupported-layer error, with this command's flags as the fix."""
    from tflight.errors import UnsupportedLayerError

    technique = e.details.get("technique")
    if technique is None or "reason" not in e.details:
        # Not a technique's refusal (e.g. the bridge cannot rebuild a custom
        # layer): its own message names the layer and the fix.
        return e
    if technique == "prune" and not skip_unsupported:
        fix = " Leave them dense with --skip-unsupported, or r"
    elif technique == "qat" and not keep_unsupported_float:
        fix = " Leave them in float with --keep-unsupported-float, or r"
    else:
        fix = " R"
    return UnsupportedLayerError(
        f"{e.details.get('reason', 'A layer is not supported')}.{fix}eplace them with "
        "supported layers (Conv2D, DepthwiseConv2D, Dense, ...), or choose another --technique.",
        option="technique",
        layer=e.layer,
        kind=e.kind,
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
@click.option(
    "--schedule",
    type=click.Choice(["ramp", "constant"]),
    default="ramp",
    show_default=True,
    help="Pruning schedule: ramp (polynomial decay from 0 to --sparsity over the first three "
    "quarters of the pruning stage) or constant (--sparsity from the first step).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs per stage [default: scaled to the data, about 600 steps per stage, 2 to 20].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate.")
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
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_MAX_DROP,
    show_default=True,
    help="Accuracy points the .tflite may lose against the original model on the held-out "
    "data; past it nothing is written and the exit code is 2.",
)
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Write the .tflite even when it misses --max-drop or --min-agreement (the exit "
    "code is still 2).",
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
    schedule: str,
    epochs: int | None,
    batch_size: int,
    lr: float,
    mode: str | None,
    min_agreement: float,
    keep_unsupported_float: bool,
    skip_unsupported: bool,
    max_drop: float,
    keep_failed: bool,
    custom_objects_path: str | None,
    progress: bool | None,
    out_path: str,
) -> None:
    """Compress MODEL with a technique, fine-tune on --data, and write a .tflite.

    The accuracy and Keras-vs-LiteRT agreement figures are measured on data
    that training did not see: --validation, or a random --holdout share of
    --data. A .tflite that loses more than --max-drop accuracy points against
    the original model on that data is not written (exit code 2) unless
    --keep-failed asks for it.
    """
    from converters.files import check_output
    from tflight import _io
    from tflight._keras import tf_keras
    from tflight.compress.checks import check_classifier_data
    from tflight.compress.recipe import compress_to_tflite
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
    recipe = Recipe(technique)

    x, y = _io.load_xy(data_path, labels=True, error=CompressionError, multi_input=True)
    validation = None
    if validation_path is not None:
        validation = _io.load_xy(
            validation_path, labels=True, error=CompressionError, multi_input=True
        )
    custom = _io.load_custom_objects(custom_objects_path, error=CompressionError)
    model = _io.load_model(model_path, custom_objects=custom, error=CompressionError)
    # The files are checked against the model as they are loaded, before any training.
    check_classifier_data(model, x, data_path)
    y = _io.check_labels(model, y, data_path, error=CompressionError)
    if validation is not None:
        check_classifier_data(model, validation[0], validation_path)
        validation = (
            validation[0],
            _io.check_labels(model, validation[1], validation_path, error=CompressionError),
        )
    callbacks = [stage_callback(tf_keras(), say, list(recipe.stages))] if say else []
    try:
        out = compress_to_tflite(
            model,
            x,
            y,
            recipe=recipe,
            validation_data=validation,
            holdout=holdout,
            sparsity=sparsity,
            schedule=schedule,
            clusters=clusters,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            mode=mode,
            min_agreement=min_agreement,
            skip_unsupported=skip_unsupported,
            keep_unsupported_float=keep_unsupported_float,
            max_drop=max_drop,
            callbacks=callbacks,
            progress=say,
            names=(data_path, validation_path),
        )
    except UnsupportedLayerError as e:
        mapped = _unsupported(e, skip_unsupported, keep_unsupported_float)
        if mapped is e:
            raise
        raise mapped from e
    except CompressionError as e:
        failed = e.details.get("result")
        if e.kind == "target_missed":
            raise CompressionError(
                f"{e.details.get('reason', 'Pruning did not reach its target')}. Train for more "
                "steps: raise --epochs or lower --batch-size.",
                option="epochs",
                kind=e.kind,
            ) from e
        if e.kind not in ("budget_missed", "agreement_low") or failed is None:
            raise
        held = _held(failed, data_path, validation_path, holdout)
        _render(failed, held, sparsity)
        kept = ""
        if keep_failed:
            failed.save(out_path)
            kept = f"; kept {out_path} anyway (--keep-failed)"
        written = kept or "; nothing was written"
        if e.kind == "agreement_low":
            raise CompressionError(
                f"The {failed.mode} .tflite agrees with the QAT Keras model on "
                f"{e.details['agreement']:.2%} of {e.details['samples']} held-out samples, below "
                f"--min-agreement {min_agreement:.2%}{written}. {agreement_advice()}",
                option="min_agreement",
                kind=e.kind,
            ) from e
        check = failed.accuracy
        tries = ", ".join(
            _WORDS[o].format(_FLAGS[o]) for o in e.details.get("advice", ()) if o in _FLAGS
        )
        raise CompressionError(
            f"the {failed.mode} .tflite does not meet the accuracy budget: it loses "
            f"{check.drop:.1f} points on {held} ({check.accuracy:.2%} vs the original model's "
            f"{check.original:.2%}), more than --max-drop {max_drop:g}{written}. Try {tries}; "
            "or allow more with --max-drop.",
            option="max_drop",
            kind=e.kind,
        ) from e
    held = _held(out, data_path, validation_path, holdout)
    _render(out, held, sparsity)
    out.save(out_path)
    result = out.conversion
    click.echo(
        f"wrote {out_path}: {out.mode}, {result.size:,} bytes, gzip {result.gzip_size:,} bytes"
    )


def _held(out, data_path: str, validation_path: str | None, holdout: float) -> str:
    """Names the data the figures were measured on."""
    if out.held_out_from == "validation":
        return f"{out.held_out} samples of {validation_path}"
    return f"{out.held_out} held-out samples ({holdout:.0%} of {data_path}, not used in this fine-tuning)"
