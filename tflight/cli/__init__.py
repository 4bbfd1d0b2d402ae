"""The `tflight` command line.

This module owns the group and the single error boundary: a mistake of the
user's (a library error from `tflight` or `converters`) becomes one line on
stderr and exit code 2, never a traceback. Each command lives in a module of
this package and imports TensorFlow only when it runs, so that `--help` is
fast.

`main()` also keeps the terminal readable: TensorFlow's and LiteRT's native
start-up and conversion messages (written by C++ straight to file descriptor 2)
go to a temporary log file, while everything `tflight` prints, Python warnings
and tracebacks still reach the real stderr. The log is deleted when the command
ends normally, and its path is printed when it ends with an unexpected
exception. `TFLIGHT_VERBOSE=1` turns the redirection off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["cli", "main"]

EXIT_USAGE = 2

VERBOSE_ENV = "TFLIGHT_VERBOSE"

# Python warnings of the libraries underneath that a command-line user can do
# nothing about: (message regex, category, module regex). Each is tied to the
# third-party module that raises it, so `TflightWarning` / `ConversionWarning`
# are never hidden.
_THIRD_PARTY_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"\s*Warning: tf\.lite\.Interpreter is deprecated", UserWarning, r"tensorflow\."),
    (r"Statistics for quantized inputs were expected", UserWarning, r"tensorflow\."),
    (
        r"distutils Version classes are deprecated",
        DeprecationWarning,
        r"tensorflow_model_optimization",
    ),
)


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
    # One module per command; each imports TensorFlow only when it runs.
    from tflight.cli import bench, compress, convert, demo, distill

    cli.add_command(demo.demo)
    cli.add_command(convert.convert)
    cli.add_command(convert.inspect)
    cli.add_command(distill.distill)
    cli.add_command(bench.bench)
    cli.add_command(compress.compress)
    # Further commands register here.


_register()


def _quiet_third_party_warnings() -> None:
    for message, category, module in _THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


@contextlib.contextmanager
def _native_stderr_to_log() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary log; Python's `sys.stderr` keeps the terminal.

    Native code (TensorFlow, LiteRT, the MLIR converter) writes to descriptor 2
    directly, Python writes through `sys.stderr`; so `sys.stderr` is pointed at
    a duplicate of the original descriptor and descriptor 2 at the log. Child
    processes inherit descriptor 2 unless they capture it, so their native
    messages land in the log as well.
    """
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0") or sys.stderr is None:
        yield
        return
    try:
        sys.stderr.flush()
        saved_fd = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2: nothing to protect
        yield
        return
    log_fd, log_path = tempfile.mkstemp(prefix="tflight-native-", suffix=".log")
    python_stderr = sys.stderr
    # Not closed afterwards: loggers created during the command may hold it.
    sys.stderr = open(
        saved_fd,
        "w",
        buffering=1,
        encoding=getattr(python_stderr, "encoding", None) or "utf-8",
        errors="backslashreplace",
        closefd=False,
    )
    os.dup2(log_fd, 2)
    os.close(log_fd)
    failed = False
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        failed = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        sys.stderr = python_stderr
        try:
            keep = failed and os.path.getsize(log_path) > 0
        except OSError:
            keep = False
        if keep:
            print(
                f"tflight: native TensorFlow/LiteRT messages of this run are in {log_path}",
                file=sys.stderr,
            )
        else:
            with contextlib.suppress(OSError):
                os.remove(log_path)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `tflight` console script."""
    # Before TensorFlow is imported: its C++ INFO/WARNING logs are noise for a
    # command-line user; keep the user's own setting if there is one.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _quiet_third_party_warnings()
    with _native_stderr_to_log():
        cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="tflight")


if __name__ == "__main__":
    main()
