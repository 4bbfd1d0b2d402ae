"""`tflight demo`: the main job on bundled data: train, optimize for a Pixel 4, report."""

from __future__ import annotations

import json

import click

from tflight.cli._common import progress_option, progress_printer

__all__ = ["demo"]


@click.command()
@click.option("-o", "--output-dir", default="out", show_default=True,
              type=click.Path(file_okay=False),
              help="Where model.tflite, report.json and report.html are written.")
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1),
              help="Training epochs of the float CNN.")
@click.option("--objective", type=click.Choice(["latency", "size"]), default="size",
              show_default=True)
@click.option("--max-drop", default=1.5, show_default=True, type=float,
              help="Accuracy budget in points.")
@click.option("--time-budget", help="Wall time of the search, e.g. 5m.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@progress_option
def demo(output_dir: str, epochs: int, objective: str, max_drop: float,
         time_budget: str | None, seed: int, as_json: bool, progress: bool | None) -> None:
    """Train a CNN on bundled digits and run `tflight optimize` on it for a Pixel 4.

    Stages are shown on a terminal; --json output and piped output stay quiet.
    """
    from tflight.cli.optimize import parse_duration
    from tflight.optimization import demo as _demo

    say = None if as_json and progress is None else progress_printer(progress)
    result, accuracy, seconds = _demo.run(
        output_dir, epochs=epochs, objective=objective, max_drop=max_drop,
        time_budget=parse_duration(time_budget), seed=seed, progress=say)
    if as_json:
        click.echo(json.dumps({"keras_validation_accuracy": accuracy, "train_seconds": seconds,
                               "result": json.loads(result.to_json())}, indent=2))
        return
    click.echo(f"Keras CNN trained on digits in {seconds:.1f} s: validation accuracy "
               f"{accuracy:.2%}")
    result.summary(print_fn=click.echo)

