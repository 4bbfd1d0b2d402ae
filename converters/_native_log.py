"""Keeping native console output (TensorFlow's C++ logging) in logs, off the terminal.

`native_output_to_log` points file descriptors 1 and 2 at a file for the
duration of a block (the graph optimizer prints while freezing);
`quiet_start_up` keeps TensorFlow's start-up lines (CUDA probes, CPU feature
and oneDNN notices, absl's pre-initialisation warning) off the terminal while
it is imported, and shows any other line afterwards;
`keep_log` writes what was gathered to a file named in the error of a failed
mode, and `log_tail` picks the lines of such a log that say why.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["native_output_to_log", "quiet_start_up", "keep_log", "log_tail"]


@contextlib.contextmanager
def native_output_to_log(logs: list[str]) -> Any:
    """Sends what native code prints to descriptors 1 and 2 (TensorFlow's
    graph optimizer while freezing) to `logs` instead of the terminal."""
    import sys

    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="converters-trace-", suffix=".log")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
        with contextlib.suppress(OSError):
            with open(path, errors="replace") as f:
                logs.append(f.read())
            os.unlink(path)


def keep_log(text: str) -> str:
    """Writes the converter's output to a kept log file; returns its path."""
    fd, path = tempfile.mkstemp(prefix="converters-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


_NOISE = ("cuda", "cuinit", "onednn", "port.cc", "cpu_feature_guard", "absl::initializelog",
          "single_machine.cc", "devices.cc", "rebuild tensorflow")


def log_tail(text: str, n: int = 3) -> str:
    """The last few lines of a native log that say something about a failure."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not any(k in ln.lower() for k in _NOISE)]
    useful = [
        ln for ln in lines
        if any(k in ln.lower() for k in ("error", "fatal", "check failed", "abort", "segmentation"))
    ]
    return " | ".join(useful[-n:])[:600]


# What TensorFlow prints on every start on a machine without a GPU: nothing to act on.
_START_UP_NOISE = (
    "all log messages before absl::initializelog",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuda_executor.cc",
    "cuinit",
    "could not find cuda drivers",
    "unable to register cu",
    "cpu_feature_guard.cc",
    "rebuild tensorflow with the appropriate compiler flags",
    "to enable the following instructions",
    "onednn custom operations are on",
    "tf_enable_onednn_opts",
    "port.cc",
    "computation_placer.cc",
    "tf-trt warning",
    "absl::initializelog() is called are written to stderr",
    "created tensorflow lite xnnpack delegate for cpu",
)
VERBOSE_ENV = "TFLIGHT_VERBOSE"


@contextlib.contextmanager
def quiet_start_up() -> Iterator[None]:
    """Runs a block (TensorFlow's first import) with its start-up lines kept off descriptor 2.

    Only the known start-up lines are dropped: anything else written to
    descriptor 2 meanwhile is written to `sys.stderr` when the block ends,
    and if the block raises, everything it printed is. With `TFLIGHT_VERBOSE=1`
    nothing is held back.
    """
    if os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable descriptor 2
        yield
        return
    fd, path = tempfile.mkstemp(prefix="converters-start-up-", suffix=".log")
    failed = False
    try:
        os.dup2(fd, 2)
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        text = ""
        with contextlib.suppress(OSError):
            with open(path, errors="replace") as f:
                text = f.read()
            os.unlink(path)
        kept = [
            line for line in text.splitlines()
            if line.strip() and (failed or not any(k in line.lower() for k in _START_UP_NOISE))
        ]
        if kept:
            with contextlib.suppress(Exception):
                sys.stderr.write("\n".join(kept) + "\n")
