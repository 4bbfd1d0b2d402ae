"""`tflight convert` and `tflight inspect`.

Thin front ends over `converters`: parse the words, call the library, render
its result objects as a table or JSON. Library errors propagate to the group's
error boundary in `tflight.cli`, which prints one line and exits with code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

# Cheap: `converters.modes` imports neither TensorFlow nor LiteRT.
from converters.modes import Mode, Target

__all__ = ["convert", "inspect"]

_MODES = tuple(m.value for m in Mode)
_TARGETS = tuple(t.value for t in Target)
_IO_DTYPES = ("float32", "int8", "uint8", "int16")


def _parse_modes(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str]:
    words: list[str] = []
    for item in value or ("fp32",):
        for word in item.split(","):
            word = word.strip().lower()
            if not word:
                continue
            if word not in _MODES:
                raise click.BadParameter(
                    f"{word!r} is not a mode; choose from {', '.join(_MODES)}.", ctx, param
                )
            if word not in words:
                words.append(word)
    if not words:
        raise click.BadParameter(f"give at least one of {', '.join(_MODES)}.", ctx, param)
    return words


def _model_stem(model: str) -> str:
    path = Path(model.rstrip("/\\"))
    return path.stem if path.suffix else path.name or "model"


def _output_paths(model: str, out: str, modes: list[str]) -> dict[str, Path]:
    """Where each mode's file goes.

    One mode: OUT is the file (or, for an existing directory, the folder for
    `<model>_<mode>.tflite`). Several modes: OUT is a directory (existing, or
    without a `.tflite` suffix) for `<model>_<mode>.tflite`, or a name stem
    `name.tflite` giving `name_<mode>.tflite`.
    """
    target = Path(out)
    stem = _model_stem(model)
    is_dir = target.is_dir() or out.endswith(("/", "\\"))
    if len(modes) == 1 and not is_dir:
        return {modes[0]: target if target.suffix else target.with_suffix(".tflite")}
    if is_dir or target.suffix.lower() != ".tflite":
        return {m: target / f"{stem}_{m}.tflite" for m in modes}
    return {m: target.with_name(f"{target.stem}_{m}.tflite") for m in modes}


def _ops_cell(op_dtypes: dict[str, dict[str, int]]) -> str:
    totals: dict[str, int] = {}
    for by in op_dtypes.values():
        for dtype, n in by.items():
            totals[dtype] = totals.get(dtype, 0) + n
    total = sum(totals.values())
    parts = ", ".join(f"{d} {n}" for d, n in sorted(totals.items(), key=lambda kv: -kv[1]))
    return f"{total} ({parts})"


def _render_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


@click.command("convert")
@click.argument("model", metavar="MODEL")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    metavar="OUT",
    help="Output .tflite file; with several modes a directory or a name stem (name.tflite).",
)
@click.option(
    "-m",
    "--mode",
    "modes",
    multiple=True,
    callback=_parse_modes,
    metavar="MODES",
    help=f"Comma-separated modes: {', '.join(_MODES)} (default fp32).",
)
@click.option(
    "-c",
    "--calibration",
    metavar="FILE",
    help="Representative inputs (.npy, or .npz with one array per input) for int8/int16x8.",
)
@click.option(
    "-t",
    "--target",
    type=click.Choice(_TARGETS),
    default="cpu",
    show_default=True,
    help="Deployment target: shapes the converter settings and the checks.",
)
@click.option(
    "--input-dtype",
    type=click.Choice(_IO_DTYPES),
    default=None,
    help="Dtype of the .tflite inputs.",
)
@click.option(
    "--output-dtype",
    type=click.Choice(_IO_DTYPES),
    default=None,
    help="Dtype of the .tflite outputs.",
)
@click.option(
    "--sparse", is_flag=True, help="Store weights in TFLite's sparse format (pruned models)."
)
@click.option("--no-validate", is_flag=True, help="Skip the comparison with the source model.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def convert(
    model: str,
    out: str,
    modes: list[str],
    calibration: str | None,
    target: str,
    input_dtype: str | None,
    output_dtype: str | None,
    sparse: bool,
    no_validate: bool,
    as_json: bool,
) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel directory) to verified .tflite files.

    Each mode is converted from one shared export, checked against the target
    and, unless --no-validate, run in LiteRT and compared with MODEL.
    """
    import converters

    paths = _output_paths(model, out, modes)
    try:
        results = converters.convert_many(
            model,
            modes,
            representative_data=calibration,
            input_dtype=input_dtype,
            output_dtype=output_dtype,
            target=target,
            validate=not no_validate,
            sparse=sparse,
        )
    except converters.errors.RepresentativeDataError as e:
        # Speak in the command's words, not the library argument's.
        message = str(e).replace("`representative_data`", f"--calibration {calibration}")
        raise converters.errors.RepresentativeDataError(
            message.replace("needs --calibration None", "needs --calibration FILE")
        ) from e
    # Everything converted and validated: only now write, each file atomically.
    for mode, result in results.items():
        result.save(paths[mode])
    fp32 = results.get("fp32")
    if as_json:
        payload: dict[str, Any] = {"model": model, "target": target, "results": []}
        for mode, result in results.items():
            d = result.to_dict()
            d["path"] = str(paths[mode])
            d["ratio_vs_fp32"] = None if fp32 is None else round(fp32.size / result.size, 3)
            payload["results"].append(d)
        click.echo(json.dumps(payload, indent=2))
        return
    header = ["mode", "size", "gzip", "vs fp32", "ops (by dtype)", "target", "validation", "file"]
    rows = []
    for mode, r in results.items():
        rows.append(
            [
                mode,
                f"{r.size:,}",
                f"{r.gzip_size:,}",
                "-" if fp32 is None else f"{fp32.size / r.size:.2f}x",
                _ops_cell(r.op_dtypes),
                "-" if r.target_report is None else r.target_report.short(),
                "skipped" if r.validation is None else r.validation.short(),
                str(paths[mode]),
            ]
        )
    click.echo(_render_table(rows, header))
    for mode, r in results.items():
        if r.target_report is not None:
            for issue in r.target_report.issues:
                click.echo(f"{mode} on {target}: {issue}")
            for note in r.target_report.notes:
                click.echo(f"{mode} on {target}: {note}")


@click.command("inspect")
@click.argument("model", metavar="MODEL.tflite")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def inspect(model: str, as_json: bool) -> None:
    """Describe MODEL.tflite: inputs/outputs, quantization, ops, sizes, GPU fit.

    The file is verified in a separate process before it is read, so a corrupt
    file gives an error instead of a crash.
    """
    import converters

    report = converters.inspect(model)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())
