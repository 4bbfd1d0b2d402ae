"""Text that ships offline: the docstrings and comments of Python's standard library.

A real, varied English-and-code corpus for training and evaluating tiny
language models without any download. Files are read in sorted order and
split into training and held-out text by file (a stable hash of the path), so
no file contributes to both.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import os
import sysconfig
import tokenize

import numpy as np

__all__ = ["TextCorpus", "stdlib_text"]


@dataclasses.dataclass(frozen=True)
class TextCorpus:
    """Training and held-out text as byte token ids (uint8 arrays).

    Attributes:
      train: training bytes.
      heldout: held-out bytes (from other files).
      files: number of source files read.
    """

    train: np.ndarray
    heldout: np.ndarray
    files: int


def _texts(source: str) -> list[str]:
    out: list[str] = []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return out
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                out.append(doc)
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT and len(tok.string) > 3:
                out.append(tok.string.lstrip("#").strip())
    except (tokenize.TokenError, SyntaxError):
        pass
    return out


def stdlib_text(*, max_bytes: int = 2_000_000, heldout_fraction: float = 0.1) -> TextCorpus:
    """Reads docstrings and comments of the standard library's modules (ASCII only).

    Args:
      max_bytes: stop after this many bytes in all.
      heldout_fraction: share of files kept apart for evaluation.

    Returns:
      A `TextCorpus`.
    """
    root = sysconfig.get_paths()["stdlib"]
    train: list[bytes] = []
    held: list[bytes] = []
    total = files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "test", "tests",
                                                             "idlelib", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            try:
                with open(path, encoding="utf-8") as f:
                    source = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            chunk = "\n".join(_texts(source)).encode("ascii", errors="ignore")
            if not chunk:
                continue
            rel = os.path.relpath(path, root).encode()
            bucket = int(hashlib.sha1(rel).hexdigest()[:8], 16) / 0xFFFFFFFF
            (held if bucket < heldout_fraction else train).append(chunk + b"\n")
            files += 1
            total += len(chunk) + 1
            if total >= max_bytes:
                break
        if total >= max_bytes:
            break
    as_array = lambda parts: np.frombuffer(b"".join(parts), dtype=np.uint8).copy()  # noqa: E731
    return TextCorpus(train=as_array(train), heldout=as_array(held), files=files)
