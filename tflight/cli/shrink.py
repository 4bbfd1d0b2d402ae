"""`tflight shrink`: remove channels or factorize layers so the model gets smaller and faster."""

from __future__ import annotations

import json
import os

import click

from tflight.cli._common import custom_objects_option
from tflight.compress.gate import DEFAULT_MAX_DROP

__all__ = ["shrink"]


_COUNTED = ("conv", "dense", "separable", "depthwise")


def _not_counted(model) -> list[str]:
    """Layers with weights whose MACs the report's count leaves out, as "name (Class)".

    The count covers convolutions and Dense layers; BatchNormalization is left
    out of this list because conversion folds it into the preceding layer.
    """
    from tflight.shrink.depgraph import DependencyGraph

    graph = DependencyGraph(model)
    counted = {id(rec.layer) for rec in graph.layers.values() if rec.kind in _COUNTED}
    out: list[str] = []

    def walk(m) -> None:
        for layer in getattr(m, "layers", []):
            if getattr(layer, "layers", None) and not layer.__class__.__name__ == "Bidirectional":
                walk(layer)
                continue
            if (id(layer) in counted or not layer.weights
                    or type(layer).__name__ == "BatchNormalization"):
                continue
            out.append(f"{layer.name} ({type(layer).__name__})")

    walk(model)
    return out


def _class_ids(y):
    """One-hot labels as class ids (the accuracy and the criteria take ids)."""
    import numpy as np

    return np.argmax(y, axis=-1) if y.ndim == 2 else y


@click.command("shrink")
@click.argument("model_path", metavar="MODEL")
@click.option(
    "--method",
    type=click.Choice(["channels", "lowrank"]),
    default="channels",
    show_default=True,
    help="channels: structured channel pruning; lowrank: SVD of Dense and 1x1 convolutions.",
)
@click.option(
    "--flops",
    type=float,
    default=None,
    help="Fraction of the convolution/Dense MACs to keep, in (0, 1) [default: 0.5].",
)
@click.option(
    "--ratio",
    type=float,
    default=None,
    help="channels: fraction of every group's channels to remove (instead of --flops).",
)
@click.option(
    "--criterion",
    type=click.Choice(["l1", "l2", "bn", "taylor", "apoz"]),
    default="l1",
    show_default=True,
    help="channels: importance criterion (taylor and apoz need --data).",
)
@click.option("--global", "global_ranking", is_flag=True, help="channels: rank across layers.")
@click.option("--round-to", type=int, default=1, show_default=True, help="channels: keep multiples of N.")
@click.option("--energy", type=float, default=None, help="lowrank: energy to keep (instead of --flops).")
@click.option("--data", "data_path", default=None, help="An .npz with `x` and `y`, for criteria and fine-tuning.")
@click.option("--epochs", type=int, default=0, show_default=True, help="Fine-tuning epochs on --data.")
@click.option("--distill", is_flag=True, help="Fine-tune with distillation from the original model.")
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Fine-tuning Adam learning rate.")
@click.option(
    "-o",
    "--output",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the smaller model (.keras, or .h5 for tf_keras).",
)
@click.option(
    "--sensitivity",
    "sensitivity_plot",
    default=None,
    type=click.Path(dir_okay=False),
    help="channels: measure each group's sensitivity on the last 20% of --data (held out "
    "from fine-tuning), allocate per-group ratios for --flops, and save the curves here (.png).",
)
@click.option(
    "--latency",
    type=float,
    default=None,
    help="channels, with --sensitivity: fraction of the estimated latency on --profile to keep, "
    "in (0, 1) (instead of --flops; estimated from the profile's cost model, not measured).",
)
@click.option(
    "--profile",
    "device_profile",
    type=click.Choice(["pixel3", "pixel4", "cortex-a53", "edgetpu"]),
    default="pixel4",
    show_default=True,
    help="Device profile for --latency.",
)
@click.option(
    "--arithmetic",
    type=click.Choice(["int8", "fp32"]),
    default="int8",
    show_default=True,
    help="Arithmetic the model will run in, for --latency.",
)
@click.option(
    "--validation",
    "validation_path",
    default=None,
    help="Held-out data (.npz with `x` and `y`) to check the result's accuracy on "
    "[default: hold out --holdout of --data].",
)
@click.option(
    "--holdout",
    type=click.FloatRange(0.0, 0.5, min_open=True),
    default=0.2,
    show_default=True,
    help="Share of --data kept out of criteria, sensitivity and fine-tuning, to check the "
    "accuracy on (ignored with --validation).",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(min=0.0),
    default=DEFAULT_MAX_DROP,
    show_default=True,
    help="Accuracy points the smaller model may lose against MODEL on the held-out data; "
    "past it nothing is written and the exit code is 2 (checked when --data is given).",
)
@click.option(
    "--keep-failed",
    is_flag=True,
    help="Write the smaller model even when it misses --max-drop (the exit code is still 2).",
)
@custom_objects_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def shrink(
    model_path: str,
    method: str,
    flops: float | None,
    ratio: float | None,
    criterion: str,
    global_ranking: bool,
    round_to: int,
    energy: float | None,
    data_path: str | None,
    epochs: int,
    distill: bool,
    lr: float,
    out_path: str,
    sensitivity_plot: str | None,
    latency: float | None,
    device_profile: str,
    arithmetic: str,
    validation_path: str | None,
    holdout: float,
    max_drop: float,
    keep_failed: bool,
    custom_objects_path: str | None,
    as_json: bool,
) -> None:
    """Make MODEL smaller and faster: remove whole channels or factorize layers.

    The report lists channels (or ranks) per layer before and after, and the MACs
    counted from the layer shapes. With --data, the smaller model's accuracy is
    measured against MODEL's on held-out data (--validation, or a --holdout share
    of --data); past --max-drop points nothing is written (exit code 2) unless
    --keep-failed asks for it.
    """
    from converters.files import check_output
    from tflight import _io
    from tflight._files import check_model_path, save_model
    from tflight.errors import CompressionError

    if (epochs or distill) and data_path is None:
        raise CompressionError("Fine-tuning (--epochs/--distill) needs --data train.npz.")
    if distill and not epochs:
        raise CompressionError("--distill needs --epochs N (N > 0).")
    if method == "lowrank" and (ratio is not None or criterion != "l1" or round_to != 1):
        raise CompressionError("--ratio, --criterion and --round-to apply to --method channels.")
    if sensitivity_plot is not None and (method != "channels" or data_path is None or ratio):
        raise CompressionError(
            "--sensitivity needs --method channels, --data and --flops or --latency."
        )
    if latency is not None and (sensitivity_plot is None or flops is not None):
        raise CompressionError(
            "--latency allocates ratios from measured sensitivities: give --sensitivity "
            "curves.png and --data, and not --flops."
        )
    if method == "channels" and energy is not None:
        raise CompressionError("--energy applies to --method lowrank.")
    if not os.path.isfile(model_path):
        raise CompressionError(f"Model file {model_path!r} does not exist.")
    # The output is checked before anything is loaded or trained: a path that
    # is (or links to) an input, or that cannot be written, costs nothing.
    if validation_path is not None and data_path is None:
        raise CompressionError("--validation checks a fine-tune or criteria on --data: give --data too.")
    check_output(
        out_path, [model_path, data_path, validation_path, sensitivity_plot, custom_objects_path],
        option="-o/--output",
        error=CompressionError,
    )
    check_model_path(out_path, option="output", error=CompressionError)
    x = y = x_val = y_val = None
    if data_path is not None:
        x, y = _io.load_xy(data_path, labels=True, error=CompressionError)
        y = _class_ids(y)
        if validation_path is not None:
            x_val, y_val = _io.load_xy(validation_path, labels=True, error=CompressionError)
            y_val = _class_ids(y_val)
    custom = _io.load_custom_objects(custom_objects_path, error=CompressionError)
    model = _io.load_model(model_path, custom_objects=custom, error=CompressionError)
    check_model_path(out_path, model, option="output", error=CompressionError)
    held = None
    if x is not None:
        from tflight.compress.checks import split_rows

        _io.check_input_shape(model, x, data_path, error=CompressionError)
        if x_val is not None:
            _io.check_input_shape(model, x_val, validation_path, error=CompressionError)
            held = f"{len(x_val)} samples of {validation_path}"
        else:
            x, y, x_val, y_val = split_rows(x, y, holdout)
            held = f"{len(x_val)} held-out samples ({holdout:.0%} of {data_path}, not used)"

    if method == "channels":
        from tflight.shrink.channels import prune_channels

        if ratio is None and flops is None and latency is None:
            flops = 0.5
        sensitivity = None
        if sensitivity_plot is not None:
            from tflight.shrink.sensitivity import analyze_sensitivity

            split = int(len(x) * 0.8)
            if split < 1 or split == len(x):
                raise CompressionError(f"--data has {len(x)} examples: too few to hold out 20%.")
            data = (x[:split], y[:split])
            sensitivity = analyze_sensitivity(
                model, x[split:], y[split:], importance=criterion, data=data
            )
            if latency is not None:
                ratio = sensitivity.allocate(
                    latency_target=latency, profile=device_profile, arithmetic=arithmetic
                )
            else:
                ratio = sensitivity.allocate(flops_target=flops)
            flops = None
            x, y = data
        result = prune_channels(
            model,
            ratio=ratio,
            flops_target=flops,
            importance=criterion,
            data=None if x is None else (x, y),
            global_ranking=global_ranking,
            round_to=round_to,
        )
    else:
        from tflight.shrink.lowrank import factorize

        if energy is None and flops is None:
            flops = 0.5
        result = factorize(model, macs_target=flops, energy=energy)
    report = result.to_dict()
    not_counted = _not_counted(model)
    report["macs_counted_over"] = "Dense/Conv layers only"
    report["macs_not_counted"] = not_counted
    target_note = None
    if method == "channels" and flops is not None and abs(result.macs_ratio - flops) > 0.05:
        target_note = (
            f"note: the target was {flops:.0%} of the counted MACs; the result keeps "
            f"{result.macs_ratio:.1%}, {abs(result.macs_ratio - flops) * 100:.0f} points "
            f"{'under' if result.macs_ratio < flops else 'over'} it"
            + (f" (--round-to {round_to} keeps channel counts in multiples of {round_to})"
               if round_to > 1 else "")
        )
        report["target_note"] = target_note
    if method == "channels" and sensitivity is not None:
        sensitivity.plot(sensitivity_plot)
        report["sensitivity"] = sensitivity.to_dict() | {"allocated_ratios": ratio}
        if latency is not None:
            report["sensitivity"]["latency_target"] = {
                "fraction": latency,
                "profile": device_profile,
                "arithmetic": arithmetic,
                "method": "estimated (device-profile cost model of the convolution and Dense layers)",
            }
    if epochs:
        from tflight.shrink.channels import fine_tune

        history = fine_tune(
            result.model, x, y, teacher=model if distill else None, epochs=epochs, learning_rate=lr
        )
        report["fine_tune"] = {
            "epochs": epochs,
            "distilled": distill,
            # Keras' fit history: measured on the training data (--data), last epoch.
            "final_on_training_data": {k: float(v[-1]) for k, v in history.history.items()},
        }
    check = None
    if held is not None:
        from tflight.compress.gate import compare_models

        try:
            check = compare_models(
                model, result.model, x_val, y_val, max_drop=max_drop, error=CompressionError,
                advice=("epochs", "distill", "flops"),
                fix="fine-tuning (more epochs), distillation from the original, or keeping more MACs",
                result_name="smaller model",
            )
        except CompressionError as e:
            if e.kind != "budget_missed":
                raise
            check = e.details["check"]
            kept = "nothing was written"
            if keep_failed:
                save_model(result.model, out_path, option="output", error=CompressionError)
                kept = f"kept {out_path} anyway (--keep-failed)"
            raise CompressionError(
                f"the smaller model does not meet the accuracy budget: it loses {check.drop:.1f} "
                f"points on {held} ({check.accuracy:.2%} vs the original's {check.original:.2%}), "
                f"more than --max-drop {max_drop:g}; {kept}. Try fine-tuning (--epochs N, more "
                "epochs), --distill, keeping more MACs (a higher --flops, --sensitivity "
                "allocation), or allow more with --max-drop.",
                option="max_drop",
                kind=e.kind,
            ) from e
        report["accuracy"] = {
            "measured_on": held,
            "original": check.original,
            "result": check.accuracy,
            "drop_pt": check.drop,
            "max_drop_pt": max_drop,
            "method": "measured (Keras, top-1)",
        }
    save_model(result.model, out_path, option="output", error=CompressionError)
    if as_json:
        click.echo(json.dumps(report | {"output": out_path}, default=str))
        return
    if method == "channels" and sensitivity is not None:
        sensitivity.summary(print_fn=click.echo)
        click.echo(f"sensitivity curves: {sensitivity_plot}")
        if latency is not None:
            click.echo(
                f"ratios allocated to keep {latency:.0%} of the estimated {arithmetic} latency on "
                f"{device_profile} (estimated, not measured)"
            )
    result.summary(print_fn=click.echo)
    click.echo(
        "(MACs counted over Dense/Conv layers only; "
        + (f"not counted: {', '.join(not_counted)})" if not_counted
           else "every layer with weights is one of them)")
    )
    if target_note:
        click.echo(target_note)
    if epochs:
        final = ", ".join(
            f"{k}={v:.4f}" for k, v in report["fine_tune"]["final_on_training_data"].items()
        )
        click.echo(
            f"fine-tuned {epochs} epoch(s){' with distillation' if distill else ''}; last epoch "
            f"on the training data (--data, not held out): {final}"
        )
    if check is not None:
        click.echo(
            f"measured in Keras on {held}: accuracy original {check.original:.2%}, smaller model "
            f"{check.accuracy:.2%}; drop {check.drop:+.1f} pt (--max-drop {max_drop:g})"
        )
    else:
        click.echo(
            "Warning: accuracy not checked against --max-drop: it needs --data. A cut that is "
            "not fine-tuned can lose many points; pass --data (and --epochs) to fine-tune and "
            "check it."
        )
    click.echo(f"wrote {out_path}")
