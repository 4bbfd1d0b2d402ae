"""`tflight optimize`: the best verified .tflite for a device within an accuracy budget."""

from __future__ import annotations

import re

import click

from tflight.cli._common import custom_objects_option, progress_option, progress_printer

__all__ = ["optimize", "parse_duration"]

# Exit status when the search ran but no candidate met the budgets.
EXIT_MISSED = 3
_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | None) -> float | None:
    """Seconds from "90", "90s", "30m", "1.5h" (None stays None)."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text.lower())
    if match is None or float(match.group(1)) <= 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 90s, 30m or 1h",
                                 param_hint="--time-budget")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


@click.command("optimize")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Training .npz with inputs `x` and labels `y`.")
@click.option("--validation", "validation_path", type=click.Path(dir_okay=False),
              help="Validation .npz (`x`, `y`) the candidates are chosen on [default: hold "
                   "--holdout of --data out].")
@click.option("--holdout", default=0.2, show_default=True, type=click.FloatRange(0, 1,
              min_open=True, max_open=True), help="Share of --data held out for validation "
              "when --validation is not given.")
@click.option("--test", "test_path", type=click.Path(dir_okay=False),
              help="Test .npz measured once, after selection [default: hold 20% of --data "
                   "back from the start].")
@click.option("--device", default="pixel4", show_default=True,
              help="What the model is for (pixel4, pixel3, cortex-a53, edgetpu, gpu, npu); "
                   "decides the latency profile and the rules.")
@click.option("--max-drop", default=0.5, show_default=True, type=float,
              help="Accuracy budget in points (one-sided 95% bound on the paired drop).")
@click.option("--objective", type=click.Choice(["latency", "size"]), default="latency",
              show_default=True, help="Minimise the device's estimated latency or the raw size.")
@click.option("--size-budget", type=click.IntRange(min=1), help="Bytes the model may not exceed.")
@click.option("--latency-budget", "latency_budget_ms", type=click.FloatRange(min=0,
              min_open=True), help="Estimated ms the model may not exceed.")
@click.option("--time-budget", help="Wall time of the search, e.g. 30m; no candidate starts "
              "after it.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Fine-tuning epochs [default: scaled to the training set].")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Folder for model.tflite, the Pareto front, report.json and report.html.")
@click.option("--seed", default=0, show_default=True, type=int)
@custom_objects_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@progress_option
def optimize(model_path: str, data_path: str, validation_path: str | None, holdout: float,
             test_path: str | None, device: str, max_drop: float, objective: str,
             size_budget: int | None, latency_budget_ms: float | None, time_budget: str | None,
             epochs: int | None, output_dir: str, seed: int, custom_objects_path: str | None,
             as_json: bool, progress: bool | None) -> None:
    """Search every applicable tflight technique for the best MODEL .tflite for --device.

    Candidates are chosen on validation data only; the chosen one is measured
    once on test data. A re-run with the same inputs resumes from the cache in
    --output-dir. Exit status 3 when no candidate meets the budgets (the report
    says the closest and by how much; no model.tflite is written).
    """
    from tflight import _io
    from tflight.optimization import OptimizeError
    from tflight.optimization import optimize as run

    seconds = parse_duration(time_budget)
    custom = _io.load_custom_objects(custom_objects_path, error=OptimizeError)
    say = None if as_json and progress is None else progress_printer(progress)
    result = run(model_path, data_path, validation_path, test_data=test_path, device=device,
                 max_drop=max_drop, objective=objective, size_budget=size_budget,
                 latency_budget_ms=latency_budget_ms, time_budget=seconds,
                 output_dir=output_dir, holdout=holdout, epochs=epochs,
                 custom_objects=custom, progress=say, seed=seed)
    if as_json:
        click.echo(result.to_json())
    else:
        result.summary(print_fn=click.echo)
    if not result.met:
        click.echo(f"Missed: {result.verdict}", err=True)
        raise click.exceptions.Exit(EXIT_MISSED)
