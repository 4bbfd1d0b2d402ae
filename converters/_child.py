"""The one protocol between this project and the Python child processes it starts.

LiteRT, the TFLite converter and the GPU accelerator are native code that can
crash the process (SIGSEGV, abort) instead of raising, so every risky step runs
in a child Python process: the `.tflite` probe of `converters.verify`, the
conversion worker of `converters._isolate`, the GPU run of `converters.gpu` and
the benchmark child of `tflight.benchmark` (also run under the ARM64 emulator by
`tflight.device`). They all talk the way this module says:

* **Spawning** (`python_command`, `child_env`): the same interpreter with `-s`
  (no user site-packages); `PYTHONPATH` either points at this project (children
  that import `converters`) or is dropped (scripts run by path that import only
  numpy and `ai_edge_litert`); `TF_CPP_MIN_LOG_LEVEL` set unless the caller set it.
* **Framing**: the request is a JSON file (or stdin); the reply is one line on
  stdout, `REPLY_MARK` followed by a JSON object (`encode` / `decode`). Anything
  else the child prints is its log. An error is the reply
  `{"error": {"kind", "message", "traceback"}}`, where `traceback` names a file
  holding the child's traceback for errors that are bugs of ours (kind
  `"InternalError"`), else None.
* **Crashes**: a child killed by a signal, or exiting without a reply, becomes
  `ChildCrashed` in the caller, whose message names the signal, ends with the tail
  of the child's stderr and names the log file (kept) holding all of its output.
  A child that overruns its timeout is killed and becomes `ChildTimeout`.

The child-side half (`ChildError`, `reply`, `serve`, `internal_error`) imports
only the standard library: scripts run by path under the emulated AArch64 Python
(numpy and `ai_edge_litert` only) load this file by path with `load_by_path`.
The caller's half imports `subprocess` and friends only when called.
"""

from __future__ import annotations

import json
import os
import sys

REPLY_MARK = "@@converters-child-reply@@"
INTERNAL = "InternalError"

__all__ = [
    "INTERNAL",
    "REPLY_MARK",
    "ChildCrashed",
    "ChildError",
    "ChildFailed",
    "ChildRun",
    "ChildTimeout",
    "child_env",
    "decode",
    "describe_exit",
    "encode",
    "internal_error",
    "load_by_path",
    "python_command",
    "reply",
    "run_child",
    "serve",
]


# --------------------------------------------------------------------- framing


def encode(payload: dict) -> str:
    """The reply line for `payload`: the marker, the JSON, a newline."""
    return REPLY_MARK + json.dumps(payload) + "\n"


def decode(text: str) -> dict | None:
    """The last reply in `text` (a child's stdout or one line), or None if there is none."""
    for line in reversed(text.splitlines()):
        if line.startswith(REPLY_MARK):
            return json.loads(line[len(REPLY_MARK):])
    return None


# ------------------------------------------------------------------ child side


class ChildError(Exception):
    """Raised in a child for an error the caller reports as such (not a bug).

    Args:
      kind: a word the caller maps to its own exception type.
      message: the readable message.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def reply(payload: dict) -> None:
    """Writes the reply line on stdout (after a newline, in case the log left a partial line)."""
    sys.stdout.write("\n" + encode(payload))
    sys.stdout.flush()


def internal_error(
    e: BaseException,
    *,
    request: dict | None = None,
    what: str = "the child process",
    traceback_dir: str | None = None,
    prefix: str = "converters-internal-",
) -> dict:
    """The error of a bug of ours: its traceback written to a file, the file named."""
    import tempfile
    import traceback

    path: str | None = None
    try:
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=".txt", dir=traceback_dir)
        with os.fdopen(fd, "w") as f:
            if request is not None:
                f.write(f"request: {json.dumps(request)}\n\n")
            f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    except OSError:
        path = None
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return {"kind": INTERNAL, "message": f"{what} failed: {type(e).__name__}: {first}",
            "traceback": path}


def serve(
    handler,
    argv: list[str],
    *,
    what: str = "the child process",
    traceback_prefix: str = "converters-internal-",
) -> int:
    """Runs `handler(request)` on the request file `argv[1]` and replies.

    `ChildError` becomes `{"error": {kind, message, traceback: None}}`; any other
    exception is a bug of ours and becomes an `InternalError` whose traceback is
    written to a file in the request's `traceback_dir` (default: the temporary
    directory). Returns the exit code (0 whenever a reply was written).
    """
    if len(argv) != 2:
        print(f"usage: {argv[0] if argv else 'child'} REQUEST.json", file=sys.stderr)
        return 64
    with open(argv[1]) as f:
        request = json.load(f)
    try:
        out = handler(request)
    except ChildError as e:
        out = {"error": {"kind": e.kind, "message": str(e), "traceback": None}}
    except Exception as e:  # noqa: BLE001 - a bug of ours: keep the traceback
        out = {"error": internal_error(e, request=request, what=what, prefix=traceback_prefix,
                                       traceback_dir=request.get("traceback_dir"))}
    reply(out)
    return 0


def load_by_path(path: str, name: str):
    """Imports the Python file `path` as module `name` (for scripts run without `converters`)."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- caller side

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_command(*args: str, python: str | None = None) -> list[str]:
    """The argv of a child Python: `python -s ARGS` (a script path, `-m mod` or `-c code`)."""
    return [python or sys.executable, "-s", *args]


def child_env(
    base: dict[str, str] | None = None,
    *,
    project_path: bool,
    tf_log_level: str = "2",
) -> dict[str, str]:
    """The environment of a child: `base` (default: this process's) with our rules.

    Args:
      base: the starting environment.
      project_path: True for a child that imports `converters` (PYTHONPATH gets
        this project's root first); False for a script run by path that imports
        only numpy and `ai_edge_litert` (PYTHONPATH is dropped, so that the
        child cannot pick up another copy of the project).
      tf_log_level: `TF_CPP_MIN_LOG_LEVEL` unless `base` sets it.
    """
    env = dict(os.environ if base is None else base)
    if project_path:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([_PROJECT_ROOT, *rest])
    else:
        env.pop("PYTHONPATH", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", tf_log_level)
    return env


def describe_exit(code: int | None) -> str:
    """How a child ended: `crashed (SIGSEGV)`, `exited with code 3`, `stopped responding`."""
    import signal

    if code is None:
        return "stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"crashed ({name})"
    return f"exited with code {code}"


class ChildRun:
    """A child that replied.

    Attributes:
      reply: the reply object (without an `error`).
      stdout: its standard output, reply line included.
      stderr: its standard error (the native libraries' log).
      returncode: its exit code.
      seconds: wall time from start to exit.
    """

    def __init__(self, reply: dict, stdout: str, stderr: str, returncode: int,
                 seconds: float) -> None:
        self.reply = reply
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = returncode
        self.seconds = seconds


class ChildFailed(Exception):
    """The child replied with an error: `kind`, `message`, `traceback` (a file or None).

    `stderr` and `seconds` are the child's log and wall time, as in `ChildRun`.
    """

    def __init__(self, kind: str, message: str, traceback: str | None, stderr: str,
                 seconds: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback = traceback
        self.stderr = stderr
        self.seconds = seconds


class ChildCrashed(Exception):
    """The child died without a reply (a signal or an exit code).

    Attributes:
      how: `describe_exit` of its exit code, e.g. `crashed (SIGSEGV)`.
      returncode: its exit code (negative: the signal).
      tail: the last lines of its stderr, joined by " | ".
      log: the file holding all its output (kept for a bug report), or None.
      stderr: its whole standard error.
    """

    def __init__(self, how: str, returncode: int, tail: str, log: str | None,
                 stderr: str) -> None:
        self.how = how
        self.returncode = returncode
        self.tail = tail
        self.log = log
        self.stderr = stderr
        detail = f": {tail}" if tail else ""
        kept = f" (its output is kept in {log})" if log else ""
        super().__init__(f"{how}{detail}{kept}")

    @property
    def signal(self) -> str | None:
        """The signal's name if it died of one."""
        return self.how[len("crashed ("):-1] if self.returncode < 0 else None


class ChildTimeout(Exception):
    """The child did not reply within `timeout` seconds and was killed."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"did not finish within {timeout:.0f} s")
        self.timeout = timeout


def _tail(text: str, lines: int) -> str:
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())[:400]


def _keep_log(name: str, stdout: str, stderr: str) -> str | None:
    import tempfile

    try:
        fd, path = tempfile.mkstemp(prefix=f"{name}-crashed-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write("--- stderr ---\n" + stderr + "\n--- stdout ---\n" + stdout)
    except OSError:
        return None
    return path


def run_child(
    argv: list[str],
    *,
    request: dict | None = None,
    stdin: bytes | None = None,
    env: dict[str, str],
    timeout: float,
    name: str = "converters-child",
    tail_lines: int = 3,
    preexec_fn=None,
) -> ChildRun:
    """Starts a child, hands it the request, waits for its reply.

    Args:
      argv: the command (`python_command(...)`, or an emulator's); with
        `request`, the path of the request file is appended.
      request: written to a JSON file in a temporary directory.
      stdin: bytes written to the child's stdin.
      env: its environment (`child_env(...)`).
      timeout: seconds before it is killed.
      name: prefix of the log file kept when it crashes.
      tail_lines: lines of stderr quoted in a crash message.
      preexec_fn: passed to `subprocess.run`.

    Returns:
      A `ChildRun` with the reply.

    Raises:
      ChildFailed: it replied with an error.
      ChildCrashed: it died or exited without a reply.
      ChildTimeout: it overran `timeout` (it was killed).
    """
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        cmd = list(argv)
        if request is not None:
            path = os.path.join(tmp, "request.json")
            with open(path, "w") as f:
                json.dump(request, f)
            cmd.append(path)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd, input=stdin, capture_output=True, timeout=timeout, env=env,
                check=False, preexec_fn=preexec_fn,
            )
        except subprocess.TimeoutExpired as e:
            raise ChildTimeout(timeout) from e
        seconds = time.monotonic() - t0
    stdout = proc.stdout.decode(errors="replace")
    stderr = proc.stderr.decode(errors="replace")
    try:
        out = decode(stdout)
    except ValueError:
        out = None
    if out is None:
        raise ChildCrashed(describe_exit(proc.returncode), proc.returncode,
                           _tail(stderr, tail_lines), _keep_log(name, stdout, stderr), stderr)
    err = out.get("error")
    if err is not None:
        raise ChildFailed(err.get("kind", INTERNAL), err.get("message", ""),
                          err.get("traceback"), stderr, seconds)
    return ChildRun(out, stdout, stderr, proc.returncode, seconds)
