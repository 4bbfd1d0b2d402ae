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
from tflight._io import custom_objects_scope
from tflight.cli._common import custom_objects_option

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
@click.option("--input-dtype", type=click.Choice(_IO_DTYPES), default=None, help="Dtype of the .tflite inputs.")
@click.option("--output-dtype", type=click.Choice(_IO_DTYPES), default=None, help="Dtype of the .tflite outputs.")
@click.option("--sparse", is_flag=True, help="Store weights in TFLite's sparse format (pruned models).")
@click.option(
    "--validation",
    metavar="FILE",
    default=None,
    help="Inputs to validate on (.npy/.npz, like --calibration). Default: the last quarter of "
    "--calibration (at most 32 samples), held out from calibration.",
)
@click.option("--min-snr", type=float, default=None, metavar="DB",
              help="Lowest SNR (dB) every output must reach (default per mode).")
@click.option("--min-top1", type=click.FloatRange(0, 1), default=None, metavar="SHARE",
              help="Lowest top-1 agreement with MODEL for classifier outputs (default per mode).")
@click.option("--no-validate", is_flag=True, help="Skip the comparison with the source model.")
@click.option(
    "--selective",
    is_flag=True,
    help="int8: if full int8 fails validation, keep float the fewest ops that lose the signal; "
    "int16x8: keep float the ops without a 16x8 kernel. The ops kept float are listed.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@custom_objects_option
def convert(
    model: str,
    out: str,
    modes: list[str],
    calibration: str | None,
    target: str,
    input_dtype: str | None,
    output_dtype: str | None,
    sparse: bool,
    validation: str | None,
    min_snr: float | None,
    min_top1: float | None,
    no_validate: bool,
    selective: bool,
    as_json: bool,
    custom_objects_path: str | None,
) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel directory) to verified .tflite files.

    Each mode is converted from one shared trace, checked against the target
    and, unless --no-validate, run in LiteRT and compared with MODEL on inputs
    calibration did not see. If some modes fail, the others are still written,
    each failure is reported on one line, and the exit code is 2.
    """
    import sys

    import converters
    from converters.files import KERAS_SUFFIXES, check_output

    paths = _output_paths(model, out, modes)
    for path in paths.values():
        check_output(path, [model, calibration, validation])
        if path.suffix.lower() in KERAS_SUFFIXES:
            raise converters.errors.ConversionError(
                f"-o/--output {str(path)!r} has a Keras suffix; a .tflite file written there "
                "would pass for a Keras model. Use a .tflite name."
            )
    thresholds = None
    if min_snr is not None or min_top1 is not None:
        thresholds = {}
        for mode in modes:
            default = converters.default_thresholds(mode)
            thresholds[mode] = converters.Thresholds(
                min_snr_db=default.min_snr_db if min_snr is None else min_snr,
                min_top1=default.min_top1 if min_top1 is None else min_top1,
                max_abs_error=default.max_abs_error,
            )
    progress = None
    if not as_json and sys.stderr.isatty():
        total = len(modes)

        def progress(event: str, mode: str) -> None:
            if event == "start":
                click.echo(f"converting {mode} ({modes.index(mode) + 1}/{total}) ...", err=True)

    failures: dict[str, Exception] = {}
    try:
        with custom_objects_scope(custom_objects_path, error=converters.errors.ConversionError):
            results = converters.convert_many(
                model,
                modes,
                representative_data=calibration,
                validation_data=validation,
                input_dtype=input_dtype,
                output_dtype=output_dtype,
                target=target,
                validate=not no_validate,
                thresholds=thresholds,
                sparse=sparse,
                progress=progress,
                selective=selective,
            )
    except converters.errors.PartialConversionError as e:
        results, failures = e.results, dict(e.failures)
    except converters.errors.ConversionError as e:
        raise _in_cli_words(e, calibration, validation) from e
    # Only what converted and validated is written, each file atomically.
    for mode, result in results.items():
        result.save(paths[mode])
    messages = {m: str(_in_cli_words(e, calibration, validation)) for m, e in failures.items()}
    _report(results, paths, target, as_json, model, messages)
    if failures:
        from tflight.cli import exit_code_for

        for mode, message in messages.items():
            ours = getattr(failures[mode], "internal", False)
            click.echo(f"Error: {mode}: {'internal error: ' if ours else ''}{message}", err=True)
        raise click.exceptions.Exit(exit_code_for(list(failures.values())))


def _flags(calibration: str | None, validation: str | None) -> dict[str, str]:
    """The command's name for each keyword argument of `converters.convert_many`."""
    return {
        "representative_data": f"--calibration {calibration or 'FILE'}",
        "validation_data": f"--validation {validation or 'FILE'}",
        "input_dtype": "--input-dtype",
        "output_dtype": "--output-dtype",
    }


# Where the validation samples came from (`ValidationReport.sample_source`), in flags.
_SAMPLE_SOURCES = {
    "validation_data": "--validation",
    "held-out representative_data": "held-out --calibration",
    "in-sample representative_data": "in-sample --calibration",
    "representative_data": "--calibration",
    "random": "random",
}


def _in_cli_words(e: Exception, calibration: str | None, validation: str | None) -> Exception:
    """The library error, speaking of the command's flags instead of Python arguments.

    Mapped from the error's fields (`option`, `wording`, `finding`, `mode`,
    `log_path`), never from its message text.
    """
    import converters

    if isinstance(e, converters.errors.ValidationError) and e.finding:
        message = e.finding + (
            " Lower the pass marks with --min-snr DB / --min-top1 SHARE, give --calibration "
            "data closer to real inputs, or skip the check with --no-validate."
        )
        if e.mode == "int8":
            message += (
                " --selective keeps float just the ops that lose the signal (listed); mode "
                "dynamic (-m dynamic) keeps activations in float and often passes where int8 "
                "does not (e.g. a QAT model with layers kept float)."
            )
    elif isinstance(e, converters.errors.ConversionError):
        message = e.message_for(_flags(calibration, validation).get(e.option or ""))
    else:
        return e
    if getattr(e, "log_path", None):
        message += f" Converter log: {e.log_path}"
    out = converters.errors.ConversionError(message, option=e.option, layer=e.layer, fix=e.fix,
                                            kind=e.kind)
    out.mode = e.mode
    out.log_path = e.log_path
    out.internal = bool(getattr(e, "internal", False))  # a crash stays ours (exit 1)
    return out


def _report(
    results: dict, paths: dict, target: str, as_json: bool, model: str, failures: dict
) -> None:
    fp32 = results.get("fp32")
    if as_json:
        payload: dict[str, Any] = {
            "model": model, "target": target, "results": [], "failures": failures,
        }
        for mode, result in results.items():
            d = result.to_dict()
            d["path"] = str(paths[mode])
            if result.target_report is not None and result.target_report.compiled is not None:
                d["compiled_path"] = str(result.compiled_path(paths[mode]))
            d["ratio_vs_fp32"] = None if fp32 is None else round(fp32.size / result.size, 3)
            payload["results"].append(d)
        click.echo(json.dumps(payload, indent=2))
        return
    if not results:
        return
    header = ["mode", "size", "gzip", "vs fp32", "ops (by dtype)", "target", "validation", "file"]
    checked = next((r.validation for r in results.values() if r.validation is not None), None)
    if checked is not None:
        # Say which samples the files were checked on (never the calibration ones).
        where = _SAMPLE_SOURCES.get(checked.sample_source, checked.sample_source)
        header[6] = f"validation ({checked.samples} {where} samples)"
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
        if fp32 is not None and mode != "fp32" and r.size >= fp32.size:
            ops, fp32_ops = _op_count(r), _op_count(fp32)
            if ops > fp32_ops:
                why = (f"its graph holds more ops than the fp32 one ({ops} vs {fp32_ops}: "
                       "quantize/dequantize steps, or a recurrent layer unrolled over its time "
                       "steps) and they outweigh what its smaller weights save")
            else:
                why = ("its quantization scales and metadata outweigh what its smaller weights "
                       "save (a model this small has few weights to shrink)")
            click.echo(
                f"note: {mode} is not smaller than fp32 ({r.size:,} vs {fp32.size:,} bytes): "
                f"{why}; pick the smallest file that validates."
            )
        for note in r.notes:
            click.echo(f"{mode}: {note}")
        if r.target_report is not None:
            for issue in r.target_report.issues:
                click.echo(f"{mode} on {target}: {issue}")
            for note in r.target_report.notes:
                click.echo(f"{mode} on {target}: {note}")
            if r.target_report.compiled is not None:
                click.echo(f"{mode} on {target}: compiled model in {r.compiled_path(paths[mode])}")


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


def _op_count(result) -> int:
    return sum(sum(by_dtype.values()) for by_dtype in result.op_dtypes.values())
