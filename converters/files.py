"""Writing output files safely: atomically, with ordinary permissions, never over an input.

Every command and every `save` of this project writes through `write_atomic`, and
every command that takes input files checks its outputs with `check_output`
before doing any work, so that a mistyped `-o` can never destroy the user's
model or data.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from converters.errors import ConversionError

__all__ = ["KERAS_SUFFIXES", "check_output", "default_file_mode", "write_atomic", "write_json"]

# Suffixes of Keras model files: `.tflite` bytes must never be written under them.
KERAS_SUFFIXES = frozenset({".keras", ".h5", ".hdf5"})

_umask_lock = threading.Lock()


def default_file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file under the current umask."""
    with _umask_lock:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def write_atomic(
    path: str | os.PathLike, data: bytes, *, error: type[Exception] = ConversionError
) -> Path:
    """Writes `data` to `path` through a temporary file and a rename.

    A reader (or a crash) never sees a half-written file: the bytes go to a
    temporary file in the same directory, are flushed to disk, and the file is
    renamed over `path` in one step. The file gets the permissions a plain
    `open(path, "w")` would give it: an existing file keeps its mode, a new one
    gets 0666 less the umask (temporary files are created 0600, which would
    otherwise leak into the result).

    Args:
      path: where to write; missing parent directories are created.
      data: the bytes.
      error: the exception class raised when the file cannot be written.

    Returns:
      `path` as a `Path`.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"Cannot write to {str(path)!r}: it is a directory.")
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = default_file_mode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise error(f"Cannot write to {str(path)!r}: {e.strerror or e}.") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise error(f"Cannot write to {str(path)!r}: {e.strerror or e}.") from e
        raise
    return path


def write_json(
    path: str | os.PathLike, payload: Any, *, indent: int = 2, **dumps: Any
) -> Path:
    """Writes `payload` as JSON (and a final newline) to `path` through `write_atomic`.

    Args:
      path: where to write; missing parent directories are created.
      payload: anything `json.dumps` takes.
      indent: the JSON indentation.
      **dumps: further `json.dumps` arguments (`default=str`, `sort_keys=True`).

    Returns:
      `path` as a `Path`.
    """
    return write_atomic(path, (json.dumps(payload, indent=indent, **dumps) + "\n").encode())


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None],
    *,
    option: str = "-o/--output",
    error: type[Exception] = ConversionError,
) -> Path:
    """Refuses an output path that is, or resolves to, one of the inputs.

    Symbolic links, `..` and hard links are resolved, and an output inside an
    input directory (a SavedModel) is refused too. Call it before any work, so
    that a mistake costs nothing. It also checks that the output's folder
    exists or can be created and is writable, so that a long run does not end
    in an unwritable path: it creates and deletes a file there.

    Args:
      output: the output path the user gave.
      inputs: the input paths (None entries are ignored).
      option: the option's name, for the message.
      error: the exception class to raise.

    Returns:
      The output as a `Path`.
    """
    out = Path(output)
    real_out = Path(os.path.realpath(out))
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        real_src = Path(os.path.realpath(src))
        if real_out == real_src or _same_file(out, src):
            raise error(
                f"{option} {str(out)!r} is the input {str(src)!r}; writing there would destroy "
                "it. Choose another output path."
            )
        if real_src.is_dir() and real_src in real_out.parents:
            raise error(
                f"{option} {str(out)!r} lies inside the input directory {str(src)!r}. Choose a "
                "path outside it."
            )
    if real_out.is_dir():
        raise error(f"{option} {str(out)!r} is a directory; give a file path.")
    parent = real_out.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise error(f"{option} {str(out)!r}: {str(existing)!r} is not a directory.")
    # Create (and at once delete) a file there: `os.access` says yes to root
    # everywhere and knows nothing of read-only or virtual file systems.
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise error(
            f"{option} {str(out)!r}: cannot create files in {str(existing)!r} "
            f"({e.strerror or e}). Choose a writable location."
        ) from e
    return out
