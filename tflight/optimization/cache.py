"""The search's on-disk cache: a finished candidate is never built twice for the same inputs.

The key is a SHA-256 of the model (its config and weights), the three data
splits, the search settings and the cache's format; each finished candidate is
stored under it as `<name>.tflite` plus `<name>.json` (its measured figures),
written atomically, so an interrupted search (Ctrl-C, a crash, a time budget)
resumes where it stopped and a changed input starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Cache", "model_digest", "search_key"]

# Bumped when a candidate is built or measured differently, so old entries are not reused.
_FORMAT = 1


def model_digest(model: Any) -> str:
    """A hash of a Keras model's architecture and weights."""
    h = hashlib.sha256()
    config = model.get_config() if hasattr(model, "get_config") else {}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for w in model.get_weights():
        a = np.ascontiguousarray(w)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def search_key(model: Any, arrays: list[np.ndarray], settings: dict[str, Any]) -> str:
    """The cache key of a search: model, data and settings together."""
    h = hashlib.sha256(model_digest(model).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode() + str(a.dtype).encode())
        h.update(a.tobytes())
    h.update(json.dumps({**settings, "format": _FORMAT}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()[:20]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Cache:
    """Finished candidates of one search, in `folder/key/`."""

    def __init__(self, folder: str | os.PathLike[str], key: str) -> None:
        self.key = key
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> tuple[bytes | None, dict[str, Any]] | None:
        """`(flatbuffer or None, record)` of a finished candidate, or None."""
        meta = self.folder / f"{name}.json"
        if not meta.is_file():
            return None
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        blob = self.folder / f"{name}.tflite"
        content = blob.read_bytes() if blob.is_file() else None
        if record.get("has_model") and content is None:
            return None
        return content, record

    def put(self, name: str, content: bytes | None, record: dict[str, Any]) -> None:
        """Stores a finished candidate (its model first, so a record always has its file)."""
        if content is not None:
            _write_atomic(self.folder / f"{name}.tflite", content)
        record = {**record, "has_model": content is not None}
        _write_atomic(self.folder / f"{name}.json", json.dumps(record, indent=1).encode())
