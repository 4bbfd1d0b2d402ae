"""`tflight quantize`: per-layer sensitivity and a mixed-precision search of a float .tflite."""

from __future__ import annotations

import json
import os

import click

__all__ = ["quantize"]

_OBJECTIVES = ["size", "latency"]
_PRECISIONS = ["float", "fp16", "int16x8", "int8", "int4", "int4-block"]


def _plot_sensitivity(report, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.ranking)
    precisions = list(dict.fromkeys(e.precision for e in report.entries))
    fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.5))
    height = 0.8 / max(len(precisions), 1)
    for k, p in enumerate(precisions):
        values = []
        for n in names:
            try:
                e = report.get(n, p)
                values.append(min(e.snr_db, 100.0) if e.supported else 0.0)
            except KeyError:
                values.append(0.0)
        ax.barh([i + k * height for i in range(len(names))], values, height=height, label=p.value)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))])
    ax.set_yticklabels(names)
    ax.invert_yaxis()
    ax.set_xlabel("output SNR vs float (dB), this layer quantized alone; measured in LiteRT")
    ax.set_title("Per-layer sensitivity (most sensitive at the top)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@click.command("quantize")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Validation .npz with `x` and (recommended) labels `y`.")
@click.option("--calibration", "calibration_path", type=click.Path(dir_okay=False),
              help=".npz with calibration inputs `x`, separate from --data "
                   "[default: hold a quarter of --data out].")
@click.option("--max-drop", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Accuracy budget in points.")
@click.option("--objective", type=click.Choice(_OBJECTIVES), default="size", show_default=True,
              help="Minimise raw size, or the device profile's latency estimate.")
@click.option("--profile", default="pixel4", show_default=True,
              help="Device profile for latency estimates (pixel4, cortex-a53, edgetpu).")
@click.option("--choices", default=",".join(_PRECISIONS), show_default=True,
              help="Comma-separated precisions a layer may take.")
@click.option("--sensitivity-only", is_flag=True, help="Only measure and rank the layers.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False),
              help="Where to write the chosen .tflite.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw the sensitivity to this .png (needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize(
    model_path: str,
    data_path: str,
    calibration_path: str | None,
    max_drop: float,
    objective: str,
    profile: str,
    choices: str,
    sensitivity_only: bool,
    out_path: str | None,
    plot: str | None,
    as_json: bool,
) -> None:
    """Rank MODEL's layers by quantization sensitivity and search a mixed precision.

    MODEL is a float .tflite (or a .keras/.h5 model, converted first). The
    search finds the smallest (or fastest, estimated) model whose accuracy drop
    on --data stays within --max-drop, and verifies it in LiteRT on held-out
    samples of --data.
    """
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError("--plot needs matplotlib: pip install 'tflight[plot]'") from None
    words = [c.strip() for c in choices.split(",") if c.strip()]
    bad = [c for c in words if c not in _PRECISIONS]
    if bad or not words:
        raise click.BadParameter(f"unknown precision(s) {bad}; choose from {', '.join(_PRECISIONS)}",
                                 param_hint="--choices")
    if out_path is not None and os.path.abspath(out_path) == os.path.abspath(model_path):
        raise click.BadParameter("would write over the input model; choose another path",
                                 param_hint="--output")
    from tflight import _io
    from tflight import precision as P
    from tflight.errors import PrecisionBudgetError, PrecisionError
    from tflight.precision_search import search

    x, y = _io.load_xy(data_path, labels=False, error=PrecisionError)
    calibration = None
    if calibration_path is not None:
        calibration, _ = _io.load_xy(calibration_path, labels=False, error=PrecisionError)
    if sensitivity_only:
        report = P.sensitivity(model_path, x, y, calibration_data=calibration,
                               precisions=[w for w in words if w != "float"] or ["int8"])
        if plot is not None:
            _plot_sensitivity(report, plot)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            report.summary(print_fn=click.echo)
            if plot is not None:
                click.echo(f"plot written to {plot}")
        return
    try:
        result = search(model_path, x, y, max_drop=max_drop, calibration_data=calibration,
                        objective=objective, profile=profile, choices=words)
    except PrecisionBudgetError as e:
        if as_json and e.best is not None:
            click.echo(json.dumps(e.best.to_dict(), indent=2))
        elif e.best is not None:
            e.best.summary(print_fn=click.echo)
        raise
    if plot is not None:
        _plot_sensitivity(result.sensitivity, plot)
    if out_path is not None:
        result.save(out_path)
    if as_json:
        d = result.to_dict()
        d["output"] = out_path
        click.echo(json.dumps(d, indent=2))
        return
    result.sensitivity.summary(print_fn=click.echo)
    click.echo("")
    result.summary(print_fn=click.echo)
    if out_path is not None:
        click.echo(f"wrote {out_path}: {result.model.size:,} bytes")
    if plot is not None:
        click.echo(f"plot written to {plot}")
