"""`tflight bench`: benchmark .tflite files on the host or an emulated ARM64 device."""

from __future__ import annotations

import json

import click

__all__ = ["bench"]

_ACCELERATORS = ["cpu", "gpu", "npu"]
_DEVICES = ["host", "arm64"]


def _delegate_options(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for v in values:
        key, sep, val = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"expected KEY=VALUE, got {v!r}", param_hint="--delegate-option"
            )
        out[key] = val
    return out


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--runs", default=50, show_default=True, type=click.IntRange(min=1),
              help="Minimum number of measured runs.")
@click.option("--min-time", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Minimum seconds of measured runs.")
@click.option("--max-time", default=150.0, show_default=True, type=click.FloatRange(min=0),
              help="Stop measuring after this many seconds (0: no cap).")
@click.option("--warmup-runs", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--warmup-min-time", default=0.5, show_default=True, type=click.FloatRange(min=0))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=0),
              help="CPU threads (0: let LiteRT decide).")
@click.option("--xnnpack/--no-xnnpack", default=True, show_default=True,
              help="LiteRT's default XNNPACK delegate on the CPU.")
@click.option("--accelerator", type=click.Choice(_ACCELERATORS), default="cpu",
              show_default=True,
              help="gpu: LiteRT's GPU accelerator on a software Vulkan device (llvmpipe, set "
                   "up on first use; outputs checked against the CPU's; not GPU timing). "
                   "npu falls back to the CPU with a note if absent.")
@click.option("--delegate", type=click.Path(dir_okay=False),
              help="External delegate library (e.g. libedgetpu.so.1).")
@click.option("--delegate-option", multiple=True, metavar="KEY=VALUE",
              help="Option for the external delegate (repeatable).")
@click.option("--inputs", type=click.Path(dir_okay=False),
              help=".npz with inputs ('x' or 'x0', 'x1', ...) and optional labels 'y'.")
@click.option("--device", type=click.Choice(_DEVICES), default="host", show_default=True,
              help="arm64: also run LiteRT's AArch64 build under qemu (set up on first use).")
@click.option("--no-instructions", is_flag=True,
              help="With --device arm64: skip counting guest instructions (faster).")
@click.option("--profile", "op_profile", is_flag=True,
              help="Per-op profile, estimated by timing model prefixes (LiteRT's Python API "
                   "has no profiler).")
@click.option("--estimate", multiple=True, metavar="PROFILE",
              help="Device profile for the estimated-latency column (repeatable; "
                   "pixel4, cortex-a53, edgetpu). Default: pixel4.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--history", type=click.Path(dir_okay=False),
              help="Append the results to this JSON-lines file and show the change.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Draw latency against size to this .png (needs matplotlib).")
def bench(
    models: tuple[str, ...],
    runs: int,
    min_time: float,
    max_time: float,
    warmup_runs: int,
    warmup_min_time: float,
    threads: int,
    xnnpack: bool,
    accelerator: str,
    delegate: str | None,
    delegate_option: tuple[str, ...],
    inputs: str | None,
    device: str,
    no_instructions: bool,
    op_profile: bool,
    estimate: tuple[str, ...],
    seed: int,
    as_json: bool,
    history: str | None,
    plot: str | None,
) -> None:
    """Benchmark one or more .tflite MODELS side by side (ratios vs the first).

    Each model runs in a clean child process: init time, first run, latency
    statistics, peak memory; with --inputs labels, accuracy and agreement with
    the first model. Columns marked (est.) are estimates from device profiles.
    """
    # The module, not its function: looked up when called (tests replace it).
    from tflight.bench import run
    from tflight.bench.files import check_output_path
    from tflight.devices.profiles import PROFILES

    shown = list(estimate) or ["pixel4"]
    unknown = [e for e in shown if e not in PROFILES]
    if unknown:
        raise click.BadParameter(
            f"unknown profile(s) {unknown}; choose from {', '.join(PROFILES)}",
            param_hint="--estimate",
        )
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--plot needs matplotlib: pip install 'tflight[plot]'"
            ) from None
    # Output paths are checked before anything is measured.
    if history is not None:
        check_output_path(history, option="--history")
    if plot is not None:
        check_output_path(plot, option="--plot", plot=True)
    config = run.BenchmarkConfig(
        runs=runs,
        min_time=min_time,
        max_time=max_time,
        warmup_runs=warmup_runs,
        warmup_min_time=warmup_min_time,
        threads=threads or None,
        xnnpack=xnnpack,
        accelerator=accelerator,
        delegate=delegate,
        delegate_options=_delegate_options(delegate_option),
        seed=seed,
    )
    progress = lambda msg: click.echo(msg, err=True)  # noqa: E731
    try:
        comparison = run.benchmark_many(
            list(models),
            inputs=inputs,
            config=config,
            device=device,
            profile=op_profile,
            count_instructions=not no_instructions,
            progress=progress,
        )
    except run.BenchmarkInternalError as e:
        where = (
            f"the full traceback is in {e.traceback_path}"
            if e.traceback_path
            else "no traceback file could be written"
        )
        click.echo(f"tflight bench: internal error: {e}; {where}. Please report it.", err=True)
        raise SystemExit(1) from None
    from tflight.bench.history import (
        append_history,
        history_changes,
        plot_latency_vs_size,
        read_history,
    )

    previous = read_history(history) if history else []
    if history:
        append_history(comparison.results, history)
    if plot is not None:
        plot_latency_vs_size(comparison.results, plot)

    if as_json:
        click.echo(json.dumps([r.to_dict() for r in comparison.results], indent=2))
        return
    if len(comparison.results) == 1:
        comparison.results[0].summary(print_fn=click.echo)
        click.echo("")
    comparison.summary(print_fn=click.echo, estimate=shown)
    if len(comparison.results) > 1 and op_profile:
        for r in comparison.results:
            if r.profile is not None:
                click.echo(f"\n{r.model}:")
                r.profile.summary(click.echo)
    if len(comparison.results) > 1:
        for r in comparison.results:
            if r.device is not None:
                d = r.device
                click.echo(
                    f"arm64 {r.model}: {d.runtime}, outputs "
                    f"{'match' if d.outputs_match else 'DIFFER'} (max |diff| {d.max_abs_diff:.3g}); "
                    f"{d.cost_note}"
                )
    if history:
        for line in history_changes(comparison.results, previous, history):
            click.echo(line)
    if plot is not None:
        click.echo(f"plot written to {plot}")
