"""`tflight distill`: train a student model to imitate a teacher model.

The command parses its flags, loads the files, calls `tflight.distillation.distill`,
checks the student against the teacher on held-out data (the accuracy gate of
`tflight.compress.gate`) and renders the figures.
"""

from __future__ import annotations

import os

import click

from tflight.cli._common import (
    custom_objects_option,
    progress_option,
    progress_printer,
)
from tflight.compress.gate import DEFAULT_MAX_DROP

__all__ = ["distill"]

_DATA_HELP = (
    "Training data: an .npz file with `x` (inputs, shape (n, *model input shape)) and `y` "
    "(integer labels (n,) or one-hot (n, classes)); `y` may be left out with --alpha 0."
)


def _parse_pair(value: str) -> tuple[str, str]:
    parts = value.split(":")
    if len(parts) != 2 or not all(parts):
        raise click.BadParameter(
            f"expected TEACHER_LAYER:STUDENT_LAYER, got {value!r}", param_hint="--feature-layer"
        )
    return parts[0], parts[1]


@click.command("distill")
@click.option(
    "--teacher",
    "teacher_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Trained teacher model (.keras or .h5).",
)
@click.option(
    "--student",
    "student_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Student model to train (.keras or .h5; TF-MOT-wrapped .h5 allowed).",
)
@click.option(
    "--data", "data_path", required=True, type=click.Path(dir_okay=False), help=_DATA_HELP
)
@click.option(
    "--validation",
    "validation_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="Held-out data (.npz with `x` and `y`) to measure the student on after each epoch "
    "[default: hold out --holdout of labelled --data].",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.5, max_open=False),
    default=0.2,
    show_default=True,
    help="Share of labelled --data kept out of training to measure on (0: none; ignored "
    "with --validation).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the trained student (.keras, or .h5 for a tf_keras student).",
)
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--temperature",
    default=4.0,
    show_default=True,
    type=float,
    help="Softening temperature of the soft-target loss (> 0).",
)
@click.option(
    "--alpha",
    default=0.1,
    show_default=True,
    type=float,
    help="Weight of the ground-truth loss in [0, 1]; soft targets get 1 - alpha.",
)
@click.option(
    "--feature-layer",
    "feature_layers",
    multiple=True,
    metavar="T:S",
    help="Distil the output of teacher layer T into student layer S (repeatable).",
)
@click.option("--feature-weight", default=1.0, show_default=True, type=float)
@click.option("--learning-rate", default=1e-3, show_default=True, type=float)
@click.option(
    "--cache/--no-cache",
    default=True,
    show_default=True,
    help="Run the teacher once over the data instead of every epoch.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_MAX_DROP,
    show_default=True,
    help="Accuracy points the student may lose against the teacher on the held-out data; "
    "past it nothing is written and the exit code is 2.",
)
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Write the student even when it misses --max-drop (the exit code is still 2).",
)
@custom_objects_option
@progress_option
def distill(
    teacher_path: str,
    student_path: str,
    data_path: str,
    validation_path: str | None,
    holdout: float,
    output: str,
    epochs: int,
    batch_size: int,
    temperature: float,
    alpha: float,
    feature_layers: tuple[str, ...],
    feature_weight: float,
    learning_rate: float,
    cache: bool,
    seed: int,
    max_drop: float,
    keep_failed: bool,
    custom_objects_path: str | None,
    progress: bool | None,
) -> None:
    """Train STUDENT to imitate TEACHER on DATA and write the trained student to OUTPUT.

    Losses: alpha x cross-entropy on the labels + (1 - alpha) x T^2-scaled KL divergence
    on temperature-softened outputs (Hinton et al. 2015), plus a feature loss for each
    --feature-layer. The final figures name the data they were measured on: the
    training data, and held-out data (--validation, or a --holdout share of --data).
    Epochs are shown on a terminal (--progress/--no-progress). A student that
    loses more than --max-drop accuracy points against the teacher on the
    held-out data is not written (exit code 2) unless --keep-failed asks for it.
    """
    pairs = [_parse_pair(v) for v in feature_layers]

    from converters.files import check_output
    from tflight._files import check_model_path
    from tflight.errors import DistillationError

    # The output is checked before anything heavy is imported, loaded or trained.
    check_model_path(output, option="output", error=DistillationError)
    check_output(
        output,
        [teacher_path, student_path, data_path, validation_path, custom_objects_path],
        option="-o",
        error=DistillationError,
    )
    for name, value in (("--teacher", teacher_path), ("--student", student_path)):
        if not os.path.isfile(value):
            raise DistillationError(f"{name}: model file {value!r} does not exist.")

    from tflight import _io
    from tflight._files import save_model
    from tflight._keras import is_keras3_model, keras, tf_keras
    from tflight.compress.gate import compare_models
    from tflight.distillation.run import distill as run_distill

    say = progress_printer(progress)
    x, y = _io.load_xy(
        data_path,
        labels=alpha > 0,
        hint=f" or pass --alpha 0 (now {alpha})",
        error=DistillationError,
    )
    x_val = y_val = None
    if validation_path is not None:
        x_val, y_val = _io.load_xy(validation_path, labels=True, error=DistillationError)
    custom = _io.load_custom_objects(custom_objects_path, error=DistillationError)
    teacher = _io.load_model(teacher_path, custom_objects=custom, error=DistillationError)
    student = _io.load_model(student_path, custom_objects=custom, error=DistillationError)
    check_model_path(output, student, option="output", error=DistillationError)
    _io.check_input_shape(student, x, data_path, role="the student", error=DistillationError)
    if y is not None:
        y = _io.check_labels(student, y, data_path, role="The student", error=DistillationError)
    if x_val is not None:
        _io.check_input_shape(
            student, x_val, validation_path, role="the student", error=DistillationError
        )
        y_val = _io.check_labels(
            student, y_val, validation_path, role="The student", error=DistillationError
        )
        held = f"{len(x_val)} samples of {validation_path}"
    elif y is not None and holdout > 0:
        (x, y), (x_val, y_val) = _io.split_holdout(x, y, holdout, seed=seed)
        held = f"{len(x_val)} held-out samples ({holdout:.0%} of {data_path}, not trained on)"
    else:
        held = None

    k = keras if is_keras3_model(student) else tf_keras()
    k.utils.set_random_seed(seed)
    callbacks = []
    if say:

        def on_epoch_end(epoch: int, logs: dict | None) -> None:
            logs = logs or {}
            parts = " ".join(f"{key}={float(v):.4f}" for key, v in logs.items())
            say(f"epoch {epoch + 1}/{epochs}: {parts}")

        callbacks.append(k.callbacks.LambdaCallback(on_epoch_end=on_epoch_end))

    click.echo(
        f"Distilling {teacher.name!r} ({teacher.count_params():,} params) into "
        f"{student.name!r} ({student.count_params():,} params) on {len(x)} examples of "
        f"{data_path}" + (f"; measuring on {held}" if held else "")
    )
    result = run_distill(
        teacher,
        student,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        temperature=temperature,
        alpha=alpha,
        feature_layers=pairs or None,
        feature_weight=feature_weight if pairs else None,
        learning_rate=learning_rate,
        cache=cache,
        validation_data=None if x_val is None else (x_val, y_val),
        callbacks=callbacks,
        seed=seed,
    )
    result.summary(print_fn=click.echo)
    if not held:
        click.echo("no held-out data (unlabelled --data): every figure is on the training data")
        click.echo("accuracy not checked against --max-drop: it needs labelled held-out data")
        save_model(result.student, output, option="output", error=DistillationError)
        click.echo(f"Wrote {output}")
        return
    try:
        check = compare_models(
            teacher, result.student, x_val, y_val, max_drop=max_drop, error=DistillationError,
            advice=("epochs", "temperature", "alpha", "student"),
            fix="more epochs, another temperature or alpha, or a larger student",
            reference_name="teacher", result_name="student", payload=result,
        )
    except DistillationError as e:
        if e.kind != "budget_missed":
            raise
        check = e.details["check"]
        _echo_check(check, held)
        kept = "nothing was written"
        if keep_failed:
            save_model(result.student, output, option="output", error=DistillationError)
            kept = f"kept {output} anyway (--keep-failed)"
        raise DistillationError(
            f"the student does not meet the accuracy budget: it loses {check.drop:.1f} points on "
            f"{held} ({check.accuracy:.2%} vs the teacher's {check.original:.2%}), more than "
            f"--max-drop {max_drop:g}; {kept}. Try more --epochs, another --temperature or "
            "--alpha, a --feature-layer, or a larger --student; or allow more with --max-drop.",
            option="max_drop",
            kind=e.kind,
        ) from e
    _echo_check(check, held)
    save_model(result.student, output, option="output", error=DistillationError)
    click.echo(f"Wrote {output}")


def _echo_check(check, held: str) -> None:
    """The teacher's and the student's accuracy on the held-out data, and the drop."""
    budget = "" if check.max_drop is None else f" (--max-drop {check.max_drop:g})"
    click.echo(
        f"measured in Keras on {held}: accuracy teacher {check.original:.2%}, student "
        f"{check.accuracy:.2%}; drop {check.drop:+.1f} pt{budget}"
    )
    if check.max_drop is not None and check.resolution > check.max_drop:
        click.echo(
            f"note: one of the {check.samples} held-out samples is {check.resolution:.1f} pt, "
            f"coarser than --max-drop {check.max_drop:g}: more held-out data makes the check finer."
        )
