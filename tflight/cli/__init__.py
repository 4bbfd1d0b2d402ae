"""The `tflight` command line.

This module owns the group and the single error boundary:

* a mistake of the user's (a library error from `tflight` or `converters`)
  becomes one `Error:` line on stderr and exit code 2, never a traceback;
* any other exception is a failure of ours (or of a library underneath) and
  says so: one `Error: internal error ...` line naming the log file that holds
  the full traceback, and exit code 1.

Each command lives in a module of this package and imports TensorFlow only
when it runs, so that `--help` is fast.

`main()` also keeps the terminal readable: TensorFlow's and LiteRT's native
start-up and conversion messages (written by C++ straight to file descriptor 2)
go to a temporary log file, while everything `tflight` prints and Python
warnings still reach the real stderr. The log is deleted when the command
succeeds or stops at a mistake of the user's (exit 2, the `Error:` line says
what is wrong) or at Ctrl-C; after an internal error it is kept, holds the
traceback too, and its path is printed. A run that dies in native code
(SIGSEGV, abort) leaves its log with faulthandler's Python stack in it; the
next run names such a log once (renamed `tflight-crashed-*.log`).
`TFLIGHT_VERBOSE=1` turns the redirection off.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

import click

__all__ = ["cli", "main"]

EXIT_USAGE = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130

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


# The log file of the running `main()` (None outside it, e.g. under CliRunner):
# an internal error writes its traceback there, next to the native messages.
_run_log: dict[str, Any] = {"path": None, "named": False}


class _Group(click.Group):
    """A click group with the one error boundary of the command line.

    Library errors (the user's mistakes) become one `Error:` line and exit 2;
    every other exception becomes one `Error: internal error` line naming the
    file with the full traceback, and exit 1.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:  # noqa: BLE001 - the boundary decides below
            if _is_user_error(e):
                click.echo(f"Error: {_one_line(e)}", err=True)
                ctx.exit(EXIT_USAGE)
            path = _write_traceback(e)
            where = (
                f"the full traceback is in {path}" if path else "the traceback could not be saved"
            )
            click.echo(
                f"Error: internal error in tflight ({type(e).__name__}: {_one_line(e)}). This is "
                f"a bug, not a mistake of yours; {where} (please attach it to a bug report).",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)


def _one_line(e: BaseException) -> str:
    """The exception's message on one line (our messages are one line already)."""
    text = " ".join(part.strip() for part in str(e).strip().splitlines() if part.strip())
    return text or type(e).__name__


def _write_traceback(e: BaseException) -> str | None:
    """Appends `e`'s traceback to the run's log (or a new log file); returns its path."""
    text = "".join(traceback.format_exception(e))
    path = _run_log["path"]
    _run_log["named"] = path is not None
    try:
        if path is None:
            fd, path = tempfile.mkstemp(prefix="tflight-error-", suffix=".log")
            os.close(fd)
        with open(path, "a", encoding="utf-8", errors="backslashreplace") as f:
            f.write("\n--- tflight internal error ---\n" + text)
    except OSError:
        _run_log["named"] = False
        return None
    return path


def _is_user_error(e: BaseException) -> bool:
    """True for a mistake of the user's: exit 2. Decided by type and fields, never by text.

    A library error (`TflightError`, `ConversionError`) is the user's unless
    its `internal` field says it is ours (a native converter crash, a bridge
    gap on a built-in layer: `tflight.errors.InternalError`,
    `converters.errors.ConverterCrashError`); then, like any other exception,
    it is an internal error (exit 1, the log named).
    """
    from converters.errors import ConversionError
    from tflight.errors import TflightError

    if isinstance(e, (TflightError, ConversionError)):
        return not getattr(e, "internal", False)
    return _is_users_path_error(e)


def exit_code_for(errors: Iterator[BaseException] | list[BaseException]) -> int:
    """The exit code of a command that reports several failures itself (2, or 1 if any is ours)."""
    return EXIT_USAGE if all(_is_user_error(e) for e in errors) else EXIT_INTERNAL


def _is_users_path_error(e: BaseException) -> bool:
    """An OSError about a path of the user's (not a temporary file, not our package).

    Permission denied, a missing folder or a full disk on a path the user
    named is a problem to fix on their side, not a bug; the OSError's message
    names the path.
    """
    if not isinstance(e, OSError) or not e.filename or not isinstance(e.filename, str):
        return False
    path = os.path.realpath(e.filename)
    ours = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    tmp = os.path.realpath(tempfile.gettempdir())
    return not (path.startswith(ours + os.sep) or path.startswith(tmp + os.sep))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tflight")
def cli() -> None:
    """Compress Keras models, convert them to verified .tflite files, benchmark them."""


def _register() -> None:
    # One module per command; each imports TensorFlow only when it runs.
    from tflight.cli import bench, compress, convert, demo, distill, quantize, shrink

    cli.add_command(demo.demo)
    cli.add_command(convert.convert)
    cli.add_command(convert.inspect)
    cli.add_command(distill.distill)
    cli.add_command(bench.bench)
    cli.add_command(compress.compress)
    cli.add_command(quantize.quantize)
    cli.add_command(shrink.shrink)
    from tflight.cli import optimize

    cli.add_command(optimize.optimize)
    from tflight.cli import convert_lm, generate

    cli.add_command(convert_lm.convert_lm)
    cli.add_command(generate.generate)
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
    _report_abandoned_logs()
    # The process id in the name lets a later run recognise the log of a run
    # that was killed or crashed before it could say where its log was.
    log_fd, log_path = tempfile.mkstemp(prefix=f"tflight-native-{os.getpid()}-", suffix=".log")
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
    # A native crash (SIGSEGV, abort) writes the Python stack into the log.
    import faulthandler

    faulthandler.enable(file=2, all_threads=False)
    _run_log.update(path=log_path, named=False)
    code: int | None = EXIT_INTERNAL
    try:
        yield
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_INTERNAL)
        raise
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        raise
    finally:
        named = _run_log["named"]
        _run_log.update(path=None, named=False)
        sys.stderr.flush()
        os.dup2(saved_fd, 2)
        sys.stderr = python_stderr
        if code in (0, EXIT_USAGE, EXIT_INTERRUPTED):
            with contextlib.suppress(OSError):
                os.remove(log_path)
        elif os.path.exists(log_path):
            # The last line tells a later run that this one ended by itself
            # (`_report_abandoned_logs` leaves such logs where they were named).
            with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as f:
                f.write(f"\n{_ENDED} {code}\n")
            if not named:
                # (An internal error has already named the log in its `Error:` line.)
                print(f"tflight: the log of this run is kept in {log_path}", file=sys.stderr)


_ENDED = "tflight: this run ended with exit code"


def _ended_by_itself(path: str) -> bool:
    """Whether the log at `path` closes with the line a run writes when it ends."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 200))
            return _ENDED.encode() in f.read()
    except OSError:
        return False


def _report_abandoned_logs() -> None:
    """Names the logs of earlier runs that died (a crash, a kill) before naming them.

    Such a log is renamed `tflight-crashed-*.log` once reported, so that it is
    named once and never deleted behind the user's back.
    """
    import glob
    import re

    pattern = os.path.join(tempfile.gettempdir(), "tflight-native-*-*.log")
    for path in glob.glob(pattern):
        match = re.fullmatch(r"tflight-native-(\d+)-.*\.log", os.path.basename(path))
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except OSError:  # not ours to judge (permissions)
            continue
        if _ended_by_itself(path):
            continue  # kept on purpose and already named by its own run
        crashed = path.replace("tflight-native-", "tflight-crashed-", 1)
        try:
            os.replace(path, crashed)
        except OSError:
            continue
        print(
            f"tflight: an earlier run (process {pid}) ended abruptly (crash or kill); its "
            f"native log is kept in {crashed}",
            file=sys.stderr,
        )


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
