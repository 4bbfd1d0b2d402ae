"""`tflight quantize`: per-layer sensitivity and a mixed-precision search of a float .tflite."""

from __future__ import annotations

import json
import os

import click

from tflight.cli._common import custom_objects_option

__all__ = ["quantize"]


def _load(path: str, error: type) -> tuple[object, object]:
    """Inputs and optional labels `y` from an .npz: `x` (one input) or `x0`, `x1`, ... (several)."""
    import numpy as np

    from tflight._io import load_xy

    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as npz:
                keys = set(npz.files)
                if "x" not in keys and "x0" in keys:
                    xs = []
                    while f"x{len(xs)}" in keys:
                        a = npz[f"x{len(xs)}"]
                        if a.ndim < 1 or not np.issubdtype(a.dtype, np.number):
                            raise error(f"`x{len(xs)}` in {path!r} must be a numeric array of "
                                        f"shape (n, ...), got dtype {a.dtype}.")
                        if not np.all(np.isfinite(a)):
                            raise error(f"`x{len(xs)}` in {path!r} holds NaN or infinite values.")
                        xs.append(a.astype("float32"))
                    y = npz["y"] if "y" in keys else None
                    return xs, y
        except error:
            raise
        except Exception as e:  # noqa: BLE001 - any read failure is a bad data file
            raise error(f"{path!r} is not a readable .npz file: {e}") from e
    return load_xy(path, labels=False, error=error)


# The library's errors name its Python arguments (`e.option`); the command says
# the same in its own options.
_FLAGS = {
    "x": "--data",
    "y": "--data",
    "calibration_data": "--calibration",
    "max_drop": "--max-drop",
    "confidence": "--confidence",
    "guide": "--guide",
    "output": "--metric-output",
    "objective": "--objective",
    "profile": "--profile",
    "choices": "--choices",
    "precisions": "--choices",
}
# The command's advice for the failures whose library advice (`e.fix`) names
# Python arguments, by `e.kind`.
_FIXES = {
    "budget_unresolvable": (
        "Or raise --max-drop, lower --confidence, or pass a separate --calibration file so "
        "that no part of --data is held out for calibration."
    ),
    "calibration_overlap": (
        "Pass separate data, or leave out --calibration to hold part of --data out for it."
    ),
    "too_few_samples": "give more samples in --data, or a separate --calibration file.",
    "budget_missed": (
        "Raise --max-drop, allow more precise --choices (float, fp16), or start from a QAT "
        "model."
    ),
}


def _in_command_terms(e: Exception) -> Exception:
    """`e` said with the command's options: its reason plus the command's fix.

    Errors without a fix of the command's own keep their message, prefixed by
    the option they are about when the command has one for it.
    """
    from tflight.errors import PrecisionBudgetError, PrecisionError

    if not isinstance(e, PrecisionError):
        return e
    flag = _FLAGS.get(e.option or "")
    fix = _FIXES.get(e.kind or "")
    reason = e.details.get("reason")
    if fix is not None and reason is not None:
        message = f"{reason} {fix}"
    elif flag is not None:
        message = f"Invalid value for {flag}: {e}"
    else:
        return e
    fields = dict(e.details, option=flag or e.option, layer=e.layer, fix=fix or e.fix,
                  kind=e.kind)
    if isinstance(e, PrecisionBudgetError):
        return PrecisionBudgetError(message, best=e.best, **fields)
    return type(e)(message, **fields)


_OBJECTIVES = ["size", "latency"]
_PRECISIONS = ["float", "fp16", "int16x8", "int8", "int4", "int4-block"]


def _plot_sensitivity(report, path: str) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report.ranking)
    precisions = list(dict.fromkeys(e.precision for e in report.entries))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 0.4 * len(names) + 1.8), sharey=True)
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
    ax.set_xlabel("output SNR vs float (dB); higher = less sensitive")
    ax.set_title("This layer quantized, all others float")
    ax.legend()
    kept = {e.layer: e.kept_float_snr_db for e in report.entries
            if not math.isnan(e.kept_float_snr_db)}
    gains = [min(kept[n], 100.0) - min(report.quantized_snr_db, 100.0) if n in kept else 0.0
             for n in names]
    ax2.barh([i + 0.4 - height / 2 for i in range(len(names))], gains, height=0.6,
             color="tab:gray")
    ax2.set_xlabel(f"SNR gained over all-{report.reference.value} (dB); higher = keep float")
    ax2.set_title(f"This layer kept float, all others {report.reference.value}")
    fig.suptitle(f"Per-layer sensitivity, measured in LiteRT on {report.samples} samples "
                 "(most sensitive alone at the top)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@click.command("quantize")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Validation .npz with inputs `x` (or `x0`, `x1`, ... for several inputs, "
                   "in the model's input order) and (recommended) labels `y`.")
@click.option("--calibration", "calibration_path", type=click.Path(dir_okay=False),
              help=".npz with calibration inputs (`x` or `x0`, `x1`, ...), separate from "
                   "--data [default: hold a quarter of --data out].")
@click.option("--max-drop", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="Accuracy budget in points, on new data at --confidence.")
@click.option("--confidence", default=0.95, show_default=True,
              type=click.FloatRange(min=0.5, max=0.999),
              help="Confidence of the one-sided bound on the drop the budget is checked on.")
@click.option("--guide", type=click.Choice(["alone", "kept-float"]), default="alone",
              show_default=True,
              help="Sensitivity view ordering the search: a layer kept float in a quantized "
                   "model, or quantized alone in a float model.")
@click.option("--metric-output", default=None,
              help="For multi-output models: the output (name or index) the metrics use "
                   "[default: the first].")
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
@custom_objects_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def quantize(
    model_path: str,
    data_path: str,
    calibration_path: str | None,
    max_drop: float,
    confidence: float,
    guide: str,
    metric_output: str | None,
    objective: str,
    profile: str,
    choices: str,
    sensitivity_only: bool,
    out_path: str | None,
    plot: str | None,
    custom_objects_path: str | None,
    as_json: bool,
) -> None:
    """Rank MODEL's layers by quantization sensitivity and search a mixed precision.

    MODEL is a float .tflite (or a .keras/.h5 model, converted first). The
    search finds the smallest (or fastest, estimated) model whose accuracy drop
    on new data stays within --max-drop at --confidence (a one-sided exact
    binomial bound from the samples of --data it searches on), and re-checks
    it in LiteRT on held-out samples of --data. With too few samples for the
    budget it stops and says how many are needed.
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
    from converters.files import check_output
    from tflight.errors import PrecisionBudgetError, PrecisionError
    from tflight.precision.layer_sensitivity import precision_sensitivity
    from tflight.precision.search import search

    # The output is checked before anything is loaded or measured: a path that
    # is (or links to) an input, or that cannot be written, costs nothing.
    if out_path is not None:
        check_output(out_path, [model_path, data_path, calibration_path, custom_objects_path],
                     option="-o/--output", error=PrecisionError)
    model = model_path
    if not model_path.lower().endswith(".tflite") or custom_objects_path is not None:
        # Keras models are loaded here, so that the user's custom layers resolve.
        from tflight._io import load_custom_objects, load_model

        custom = load_custom_objects(custom_objects_path, error=PrecisionError)
        if model_path.lower().endswith(".tflite"):
            raise PrecisionError(
                f"--custom-objects applies to .keras/.h5 models; {model_path!r} is a .tflite."
            )
        model = load_model(model_path, custom_objects=custom, error=PrecisionError)
    x, y = _load(data_path, PrecisionError)
    calibration = None
    if calibration_path is not None:
        calibration, _ = _load(calibration_path, PrecisionError)
    output = (int(metric_output) if metric_output is not None and metric_output.isdigit()
              else metric_output)
    if sensitivity_only:
        try:
            report = precision_sensitivity(
                model, x, y, calibration_data=calibration, output=output,
                precisions=[w for w in words if w != "float"] or ["int8"])
        except PrecisionError as e:
            raise _in_command_terms(e) from e
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
        result = search(model, x, y, max_drop=max_drop, confidence=confidence,
                        calibration_data=calibration, objective=objective, profile=profile,
                        choices=words, guide=guide, output=output)
    except PrecisionBudgetError as e:
        if as_json and e.best is not None:
            click.echo(json.dumps(e.best.to_dict(), indent=2))
        elif e.best is not None:
            e.best.summary(print_fn=click.echo)
        raise _in_command_terms(e) from e
    except PrecisionError as e:
        raise _in_command_terms(e) from e
    v = result.verification
    recheck_failed = not result.recheck_met_budget
    if plot is not None:
        _plot_sensitivity(result.sensitivity, plot)
    if recheck_failed:
        if as_json:
            click.echo(json.dumps(result.to_dict() | {"output": None}, indent=2))
        else:
            result.summary(print_fn=click.echo)
        written = "nothing was written; " if out_path is not None else ""
        raise PrecisionError(
            f"The held-out re-check bounds the drop on new data at {v.drop_bound_pt:.2f} pt "
            f"({v.losses} lost of {v.samples} held-out samples) at "
            f"{confidence:.0%} confidence, above --max-drop {max_drop:g} (the search's own "
            f"bound was {result.search_drop_bound_pt:.2f} pt): the budget is not shown to hold; "
            f"{written}give more samples in --data (the re-check uses half of them) or a looser "
            "--max-drop or --confidence.",
            option="--max-drop", kind="recheck_failed",
        )
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
