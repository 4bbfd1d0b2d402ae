"""The `tflight` command line.

This module owns the group and the single error boundary: a mistake of the
user's (a library error from `tflight` or `converters`) becomes one line on
stderr and exit code 2, never a traceback. Each command lives in a private
`_cli_*` module and imports TensorFlow only when it runs, so that `--help` is
fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

__all__ = ["cli", "main"]

EXIT_USAGE = 2


class _Group(click.Group):
    """A click group that maps library errors to a one-line message and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as e:  # noqa: BLE001 - the boundary decides below
            if _is_user_error(e):
                click.echo(f"Error: {e}", err=True)
                ctx.exit(EXIT_USAGE)
            raise


def _is_user_error(e: BaseException) -> bool:
    from converters.errors import ConversionError
    from tflight.errors import TflightError

    return isinstance(e, (TflightError, ConversionError))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tflight")
def cli() -> None:
    """Compress Keras models, convert them to verified .tflite files, benchmark them."""


def _register() -> None:
    from tflight import _cli_convert, _cli_demo

    cli.add_command(_cli_demo.demo)
    cli.add_command(_cli_convert.convert)
    cli.add_command(_cli_convert.inspect)
    from tflight import _cli_distill

    cli.add_command(_cli_distill.distill)
    from tflight import _cli_bench

    cli.add_command(_cli_bench.bench)
    from tflight import _cli_compress

    cli.add_command(_cli_compress.compress)
    # Further commands register here.


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `tflight` console script."""
    # TensorFlow's C++ start-up chatter is noise for a command-line user; keep
    # the user's own setting if there is one.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="tflight")


if __name__ == "__main__":
    main()
