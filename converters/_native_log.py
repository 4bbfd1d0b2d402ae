"""Keeping native console output (TensorFlow's C++ logging) in logs, off the terminal.

`native_output_to_log` points file descriptors 1 and 2 at a file for the
duration of a block (the graph optimizer prints while freezing);
`keep_log` writes what was gathered to a file named in the error of a failed
mode, and `log_tail` picks the lines of such a log that say why.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

__all__ = ["native_output_to_log", "keep_log", "log_tail"]


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
