"""`tflight distill`: train a student model to imitate a teacher model."""

from __future__ import annotations

import os

import click

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
def distill(
    teacher_path: str,
    student_path: str,
    data_path: str,
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
) -> None:
    """Train STUDENT to imitate TEACHER on DATA and write the trained student to OUTPUT.

    Losses: alpha x cross-entropy on the labels + (1 - alpha) x T^2-scaled KL divergence
    on temperature-softened outputs (Hinton et al. 2015), plus a feature loss for each
    --feature-layer. Progress is printed after every epoch.
    """
    pairs = [_parse_pair(v) for v in feature_layers]
    out_dir = os.path.dirname(os.path.abspath(output))
    ext = os.path.splitext(output)[1].lower()
    if ext not in (".keras", ".h5"):
        raise click.BadParameter(f"must end in .keras or .h5, got {output!r}", param_hint="-o")
    if not os.path.isdir(out_dir):
        raise click.BadParameter(f"directory {out_dir!r} does not exist", param_hint="-o")

    from tflight import _io
    from tflight.distillation import _module_for, _save_atomic, load_model
    from tflight.distillation import distill as run_distill
    from tflight.errors import DistillationError

    for name, value in (("--teacher", teacher_path), ("--student", student_path)):
        if not os.path.isfile(value):
            raise DistillationError(f"{name}: model file {value!r} does not exist.")
    x, y = _io.load_xy(
        data_path,
        labels=alpha > 0,
        hint=f" or pass --alpha 0 (now {alpha})",
        error=DistillationError,
    )
    teacher = load_model(teacher_path)
    student = load_model(student_path)
    _io.check_input_shape(student, x, data_path, role="the student", error=DistillationError)

    from tflight._keras import is_keras3_model

    k = _module_for("keras3" if is_keras3_model(student) else "tf_keras")
    k.utils.set_random_seed(seed)

    def on_epoch_end(epoch: int, logs: dict | None) -> None:
        logs = logs or {}
        parts = " ".join(f"{key}={float(v):.4f}" for key, v in logs.items())
        click.echo(f"epoch {epoch + 1}/{epochs}: {parts}")

    click.echo(
        f"Distilling {teacher.name!r} ({teacher.count_params():,} params) into "
        f"{student.name!r} ({student.count_params():,} params) on {len(x)} examples"
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
        callbacks=[k.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)],
        seed=seed,
    )
    _save_atomic(result.student, output)
    result.summary(print_fn=click.echo)
    click.echo(f"Wrote {output}")
