"""Running the benchmark child (`tflight/bench/child.py`) and reading what it wrote.

Each measurement runs in a fresh child process that imports only numpy and
LiteRT: a file that crashes the runtime kills the child, not the caller, and
the child's peak RSS is the inference's own rather than TensorFlow's. The
child is started, framed and mapped by `converters._child`; this module turns
its answers into results or the benchmark's own errors.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tflight.bench.results import BenchmarkInternalError, InputDataError
from tflight.errors import BenchmarkError

__all__ = ["CHILD", "AcceleratorUnavailable", "verify_model", "run_child", "read_outputs"]

CHILD = Path(__file__).with_name("child.py")


def verify_model(model: str | os.PathLike | bytes) -> tuple[bytes, Any]:
    """Reads and checks a `.tflite` safely (in a child process) before anything loads it."""
    import converters

    try:
        verified = converters.verify_tflite(model)
    except converters.errors.InvalidTFLiteError as e:
        raise BenchmarkError(str(e)) from e
    return verified.content, verified


def run_child(
    request: dict,
    *,
    timeout: float,
    label: str,
    env: dict[str, str] | None = None,
    log: list[str] | None = None,
) -> dict:
    """Runs `child.py` on `request`; maps its answer to a result or an error.

    The child is started, framed and mapped by `converters._child`.

    Args:
      env: the child's environment (default: this process's, without PYTHONPATH).
      log: if given, the child's stderr is appended to it.
    """
    from converters import _child, _random_inputs

    request = dict(request, random_inputs_module=_random_inputs.__file__)
    request.setdefault("traceback_dir", tempfile.gettempdir())
    try:
        run = _child.run_child(
            _child.python_command(str(CHILD)),
            request=request,
            env=_child.child_env(env, project_path=False),
            timeout=timeout,
            name="tflight-bench",
            tail_lines=2,
        )
    except _child.ChildTimeout as e:
        raise BenchmarkError(
            f"benchmarking {label} did not finish within {timeout:.0f} s; lower `runs`/"
            "`min_time` or raise `timeout`"
        ) from e
    except _child.ChildCrashed as e:
        if log is not None:
            log.append(e.stderr)
        raise BenchmarkError(
            f"LiteRT {e.how} while running {label}; the caller is unharmed. {e.tail}".strip()
            + (f" (its output is kept in {e.log})" if e.log else "")
        ) from None
    except _child.ChildFailed as e:
        if log is not None:
            log.append(e.stderr)
        if e.kind == "InputDataError":
            raise InputDataError(e.message) from None
        if e.kind == "AcceleratorUnavailable":
            raise AcceleratorUnavailable(e.message) from None
        if e.kind == _child.INTERNAL:
            raise BenchmarkInternalError(e.message, e.traceback) from None
        raise BenchmarkError(e.message) from None
    if log is not None:
        log.append(run.stderr)
    return run.reply



class AcceleratorUnavailable(BenchmarkError):
    """The requested accelerator is not there (the CPU can stand in, with a note)."""



def read_outputs(path: Path) -> list[np.ndarray]:
    with np.load(path) as d:
        return [d[f"out{i}"] for i in range(len(d.files))]

