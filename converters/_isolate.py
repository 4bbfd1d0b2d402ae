"""The parent side of `converters._worker`: one long-lived child process.

The child imports TensorFlow once and then serves every conversion request of
this process, so the isolation costs one TensorFlow import per process, not
one per call. If the child dies (a native crash in the converter, the
calibrator or LiteRT), the mode it was working on is reported as crashed, and
the next request starts a new child.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from converters import _child
from converters._worker import CRASH_HOOK, STATUS_FD

__all__ = ["RequestOutcome", "run_request"]

# Variables the child reads at start-up: a change restarts it.
_CHILD_ENV = (CRASH_HOOK,)
_START_TIMEOUT = 600.0


class RequestOutcome:
    """What happened to one request.

    Attributes:
      outcomes: mode word -> the child's JSON outcome (`ok`, `error`, `validation`).
      crashed: mode word -> how the child died while working on it.
      not_started: modes the child never reached (it died first).
      log: the child's output while serving this request.
    """

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, Any]] = {}
        self.crashed: dict[str, str] = {}
        self.not_started: list[str] = []
        self.log = ""
        self.finished = False


class _Worker:
    def __init__(self) -> None:
        self.env_key = tuple(os.environ.get(k) for k in _CHILD_ENV)
        fd, self.log_path = tempfile.mkstemp(prefix="converters-worker-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        read_fd, write_fd = os.pipe()
        env = _child.child_env(project_path=True)
        env[STATUS_FD] = str(write_fd)
        try:
            self.proc = subprocess.Popen(
                _child.python_command("-m", "converters._worker"),
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_fd,),
                close_fds=True,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        self._status = os.fdopen(read_fd, "r", buffering=1)
        self._buffer = ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None if the child died (or `timeout` passed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while "\n" not in self._buffer:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._status], [], [], wait)
            if not ready:
                return None
            chunk = os.read(self._status.fileno(), 65536).decode()
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split("\n", 1)
        return _child.decode(line)

    def log_size(self) -> int:
        self._log.flush()
        return os.path.getsize(self.log_path)

    def read_log(self, start: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            self._status.close()
        with contextlib.suppress(OSError):
            self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


_lock = threading.Lock()
_worker: _Worker | None = None


def _get_worker() -> _Worker:
    global _worker
    env_key = tuple(os.environ.get(k) for k in _CHILD_ENV)
    if _worker is not None and (not _worker.alive() or _worker.env_key != env_key):
        _worker.close()
        _worker = None
    if _worker is None:
        _worker = _Worker()
        event = _worker.read_event(_START_TIMEOUT)
        if event is None or event.get("event") != "ready":
            log = _worker.read_log(0)
            code = _worker.proc.poll()
            _worker.close()
            _worker = None
            tail = " | ".join(log.strip().splitlines()[-3:])
            raise RuntimeError(
                f"The conversion process could not start ({_child.describe_exit(code)}): {tail}"
            )
    return _worker


def _shutdown() -> None:
    global _worker
    if _worker is not None:
        _worker.close()
        _worker = None


atexit.register(_shutdown)


def run_request(
    directory: str,
    modes: list[str],
    *,
    progress: Callable[[str, str], None] | None = None,
) -> RequestOutcome:
    """Sends the request in `directory` to the child and collects the outcome.

    Args:
      directory: a folder holding `request.json` and the arrays it names.
      modes: the mode words of the request, in order.
      progress: called with `("start" | "end", mode)` as the child works.

    Returns:
      A `RequestOutcome`; modes the child crashed on are in `crashed`, modes it
      never reached in `not_started`.
    """
    global _worker
    result = RequestOutcome()
    with _lock:
        worker = _get_worker()
        try:
            _serve(worker, directory, result, progress)
        except BaseException:
            # Interrupted mid-request (Ctrl-C, an exception in `progress`):
            # the child's state is unknown, so it is not reused.
            worker.proc.kill()
            worker.close()
            _worker = None
            raise
        if not worker.alive():
            worker.close()
            _worker = None
    for m in modes:
        path = Path(directory) / f"{m}.json"
        if path.exists():
            result.outcomes[m] = json.loads(path.read_text())
        elif result.finished:
            result.crashed[m] = "failed without a result"
        elif m not in result.crashed:
            result.not_started.append(m)
    return result


def _serve(
    worker: _Worker,
    directory: str,
    result: RequestOutcome,
    progress: Callable[[str, str], None] | None,
) -> None:
    log_start = worker.log_size()
    current: str | None = None
    try:
        assert worker.proc.stdin is not None
        worker.proc.stdin.write((str(directory) + "\n").encode())
        worker.proc.stdin.flush()
    except OSError:
        pass
    while True:
        event = worker.read_event()
        if event is None:
            code = worker.proc.wait()
            if current is not None:
                result.crashed[current] = _child.describe_exit(code)
            break
        kind = event.get("event")
        if kind == "start":
            current = event["mode"]
            if progress is not None:
                progress("start", current)
        elif kind == "end":
            if progress is not None:
                progress("end", event["mode"])
            current = None
        elif kind == "error":
            result.log += event.get("error", "") + "\n"
        elif kind == "done":
            result.finished = True
            break
    result.log = worker.read_log(log_start) + result.log
