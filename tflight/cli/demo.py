"""`tflight demo`: the end-to-end main job on bundled data."""

from __future__ import annotations

import json

import click

from tflight.cli._common import progress_option, progress_printer

__all__ = ["demo"]


@click.command()
@click.option(
    "-o",
    "--output-dir",
    default="out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the .tflite files are written.",
)
@click.option("--epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--compress-epochs",
    default=6,
    show_default=True,
    type=click.IntRange(min=0),
    help="Fine-tuning epochs per compression stage (0 skips compression).",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@progress_option
def demo(
    output_dir: str,
    epochs: int,
    compress_epochs: int,
    seed: int,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Train a CNN on bundled digits, compress and convert it, verify and measure each file.

    Stages are shown on a terminal; --json output and piped output stay quiet.
    """
    from tflight import demo as _demo

    say = None if as_json and progress is None else progress_printer(progress)
    result = _demo.run(
        output_dir, epochs=epochs, compress_epochs=compress_epochs, seed=seed, progress=say
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        result.summary(print_fn=click.echo)
