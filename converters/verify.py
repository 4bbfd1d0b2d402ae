"""Checking that bytes are a well-formed `.tflite` flatbuffer, without risking the process.

LiteRT trusts the flatbuffers it loads: a truncated or corrupted file can make
the interpreter (or the model analyzer) read out of bounds and kill the Python
process with a segmentation fault. So an untrusted file is first checked here
in two steps:

1. cheap checks in this process: not empty, the `TFL3` file identifier, a root
   offset inside the buffer;
2. a probe in a child Python process that parses every table with the
   flatbuffer schema, checks that every index (tensors, buffers, operator codes,
   subgraphs) is in range and that constant buffers are as large as their
   tensors, loads the model in LiteRT, allocates and runs it once on zeros, and
   runs the GPU-delegate compatibility analysis. A crash or a hang of the child
   becomes an `InvalidTFLiteError` here.

Only after both steps pass do `TFLiteModel` and `inspect` touch the bytes in
this process.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

from converters import _child, flatbuffer
from converters.errors import InvalidTFLiteError

__all__ = ["VerifiedTFLite", "verify_tflite", "read_tflite_bytes"]

_IDENTIFIER = b"TFL3"
_PROBE_TIMEOUT_S = 120.0

# Runs in a child process (`python -c`). Reads the model from stdin, parses it
# with `converters/flatbuffer.py` and replies with `converters/_child.py`, both
# loaded by path (argv[1], argv[2]) so that the probe does not import the
# `converters` package.
_PROBE = r"""
import resource, sys
buf = sys.stdin.buffer.read()
limit = (2 << 30) + 8 * len(buf)
try:
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
except (ValueError, OSError):
    pass
import numpy as np
import importlib.util
def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
reply = load("converters_child", sys.argv[1]).reply
flatbuffer = load("converters_flatbuffer", sys.argv[2])
out = {"ok": False, "stage": "parse", "problem": None, "gpu": None, "load_error": None}
def done():
    reply(out)
    sys.exit(0)
try:
    m = flatbuffer.parse(buf)
except Exception as e:
    out["problem"] = "it is truncated or corrupt (its flatbuffer tables cannot be parsed: %s)" % (type(e).__name__,)
    done()
try:
    out["stage"] = "check"
    nbuf = len(m.buffers or [])
    ncodes = len(m.operatorCodes or [])
    if not m.subgraphs:
        raise ValueError("it has no subgraphs")
    if m.version is None or m.version < 3:
        raise ValueError("schema version %r is not 3" % (m.version,))
    for si, sg in enumerate(m.subgraphs):
        tensors = sg.tensors or []
        nt = len(tensors)
        for t in tensors:
            if not 0 <= t.buffer < max(nbuf, 1):
                raise ValueError("a tensor of subgraph %d refers to buffer %d of %d" % (si, t.buffer, nbuf))
            if t.shape is not None and any(int(d) < 0 for d in t.shape):
                raise ValueError("a tensor of subgraph %d has a negative dimension" % si)
        for name, idx in (("input", sg.inputs), ("output", sg.outputs)):
            for i in (idx if idx is not None else []):
                if not 0 <= int(i) < nt:
                    raise ValueError("subgraph %d %s index %d is out of range (%d tensors)" % (si, name, i, nt))
        for op in sg.operators or []:
            if not 0 <= op.opcodeIndex < ncodes:
                raise ValueError("an operator refers to operator code %d of %d" % (op.opcodeIndex, ncodes))
            for i in list(op.inputs if op.inputs is not None else []) + list(op.outputs if op.outputs is not None else []):
                if not -1 <= int(i) < nt:
                    raise ValueError("an operator of subgraph %d refers to tensor %d of %d" % (si, i, nt))
        sizes = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8, 12: 8, 15: 4, 16: 2, 18: 2}
        for t in tensors:
            b = m.buffers[t.buffer] if nbuf else None
            data = None if b is None else b.data
            if data is not None and len(data) and t.type in sizes and t.shape is not None and t.sparsity is None:
                need = sizes[t.type]
                for d in t.shape:
                    need *= int(d)
                if len(data) < need:
                    raise ValueError("tensor %r holds %d bytes but its shape needs %d" % (t.name, len(data), need))
except Exception as e:
    out["problem"] = "it is inconsistent: %s" % (e,)
    done()
out["stage"] = "analyze"
try:
    from ai_edge_litert import _pywrap_analyzer_wrapper as aw
    out["gpu"] = aw.ModelAnalyzer(buf, False, True)
except Exception as e:
    out["gpu"] = None
out["ok"] = True
out["stage"] = "load"
try:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    try:
        it = Interpreter(model_content=buf, num_threads=1)
        it.allocate_tensors()
    except (RuntimeError, ValueError):
        it = Interpreter(model_content=buf, num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it.allocate_tensors()
    out["stage"] = "invoke"
    for d in it.get_input_details():
        if d["dtype"] in (np.bytes_, np.object_, np.str_):
            raise ValueError("string inputs are not exercised")
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
except Exception as e:
    msg = str(e).strip().splitlines()
    out["load_error"] = msg[0] if msg else type(e).__name__
done()
"""


@dataclasses.dataclass(frozen=True)
class VerifiedTFLite:
    """Bytes that passed `verify_tflite`, with what the probe learnt about them.

    Attributes:
      content: the flatbuffer.
      source: the path it was read from, or `"<bytes>"`.
      gpu_analysis: the text of LiteRT's model analyzer with the GPU-delegate
        compatibility check, or None if the analyzer was not available.
      load_error: why LiteRT could not load or run the model on this machine
        (for example an unresolved custom op), or None if it ran.
    """

    content: bytes
    source: str
    gpu_analysis: str | None
    load_error: str | None


def read_tflite_bytes(path_or_bytes: str | os.PathLike | bytes | bytearray) -> tuple[bytes, str]:
    """Returns `(content, label)` for a path or a buffer; raises `InvalidTFLiteError`."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<bytes>"
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise InvalidTFLiteError(
            f"Expected a path to a .tflite file or its bytes, got {type(path_or_bytes).__name__}."
        )
    path = Path(path_or_bytes)
    if not path.exists():
        raise InvalidTFLiteError(f"No such file: {str(path)!r}; pass the path of a .tflite file.")
    if path.is_dir():
        raise InvalidTFLiteError(
            f"{str(path)!r} is a directory, not a .tflite file (convert a SavedModel first)."
        )
    try:
        return path.read_bytes(), str(path)
    except OSError as e:
        raise InvalidTFLiteError(f"Cannot read {str(path)!r}: {e.strerror or e}.") from e


def _header_check(content: bytes, label: str) -> None:
    if len(content) == 0:
        raise InvalidTFLiteError(f"{label} is empty (0 bytes), not a .tflite model.")
    if len(content) < 16:
        raise InvalidTFLiteError(
            f"{label} is {len(content)} bytes long, too short to be a .tflite model."
        )
    if content[4:8] != _IDENTIFIER:
        raise InvalidTFLiteError(
            f"{label} is not a .tflite model: it lacks the TFL3 file identifier "
            f"(bytes 4-8 are {content[4:8]!r}). Is it a Keras or SavedModel file? Convert it first."
        )
    (root,) = struct.unpack_from("<I", content, 0)
    if not 8 <= root <= len(content) - 4:
        raise InvalidTFLiteError(
            f"{label} is corrupt or truncated: its root table offset {root} lies outside "
            f"the {len(content)}-byte file."
        )


def verify_tflite(
    path_or_bytes: str | os.PathLike | bytes | bytearray,
    *,
    timeout: float = _PROBE_TIMEOUT_S,
) -> VerifiedTFLite:
    """Checks that a file or buffer is a well-formed `.tflite` model, safely.

    The deep checks (full schema parse, index ranges, a LiteRT load and one
    run on zeros) run in a child process, so that a malformed file that would
    crash LiteRT cannot take the caller down with it.

    Args:
      path_or_bytes: a path to a `.tflite` file, or its bytes.
      timeout: seconds the child process may take.

    Returns:
      A `VerifiedTFLite` with the bytes and what the probe found.

    Raises:
      InvalidTFLiteError: the input is missing, empty, truncated, corrupt, not a
        `.tflite` model, or makes LiteRT crash or hang.

    Example:
      >>> verify_tflite("model.tflite").content[4:8]
      b'TFL3'
    """
    content, source = read_tflite_bytes(path_or_bytes)
    label = "the buffer" if source == "<bytes>" else repr(source)
    _header_check(content, label)
    try:
        run = _child.run_child(
            _child.python_command("-c", _PROBE, _child.__file__, flatbuffer.__file__),
            stdin=content,
            env=_child.child_env(project_path=False, tf_log_level="3"),
            timeout=timeout,
            name="converters-verify",
            tail_lines=1,
        )
    except _child.ChildTimeout as e:
        raise InvalidTFLiteError(
            f"{label} could not be verified: loading it did not finish within {timeout:.0f} s."
        ) from e
    except _child.ChildCrashed as e:
        if e.returncode < 0:
            raise InvalidTFLiteError(
                f"{label} is corrupt: LiteRT {e.how} while loading it"
                + (f" (its output is kept in {e.log})." if e.log else ".")
            ) from None
        raise InvalidTFLiteError(
            f"{label} could not be verified: the checking process {e.how} "
            f"({e.tail or 'no message'})."
        ) from None
    report = run.reply
    if not report["ok"]:
        raise InvalidTFLiteError(f"{label} is not a valid .tflite model: {report['problem']}.")
    return VerifiedTFLite(
        content=content,
        source=source,
        gpu_analysis=report.get("gpu"),
        load_error=report.get("load_error"),
    )
