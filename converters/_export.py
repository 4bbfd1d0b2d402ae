"""One trace-and-freeze of the source model, shared by every mode of a call.

The frozen graph (or, where freezing fails, one SavedModel export) and the
sample arrays are written to the call's temporary folder, where the
conversion child reads them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from converters.source import Source

__all__ = ["SharedExport", "save_arrays"]


class SharedExport:
    """One trace-and-freeze of the source model, shared by every mode.

    The model is traced and its variables folded into constants once, here in
    the caller's process; the frozen graph is written to a file and every mode
    converts from it in the conversion child process (`converters._worker`),
    which skips the SavedModel export and re-import that `from_keras_model` /
    `from_saved_model` repeat for every conversion. Graphs the frozen path
    cannot handle (it fails on some stateful or control-flow graphs) fall back
    to one SavedModel export, also shared.
    """

    def __init__(self, source: Source, directory: str, *, static_batch: int | None) -> None:
        self.source = source
        self.directory = directory
        self.static_batch = static_batch
        self.frozen_error: str | None = None
        self._frozen: dict[str, Any] | None = None
        self._saved_model: dict[str, Any] | None = None
        self.seconds = 0.0

    def frozen(self) -> dict[str, Any] | None:
        """The frozen graph's description for the child, or None if freezing failed."""
        if self._frozen is None and self.frozen_error is None:
            start = time.perf_counter()
            try:
                fn = self.source.freeze(static_batch=self.static_batch)
                path = os.path.join(self.directory, "frozen.pb")
                with open(path, "wb") as f:
                    f.write(fn.graph.as_graph_def().SerializeToString())
                self._frozen = {
                    "kind": "frozen",
                    "path": path,
                    "inputs": [t.name for t in fn.inputs],
                    "outputs": [t.name for t in fn.outputs],
                }
            except Exception as e:  # noqa: BLE001 - fall back to a SavedModel
                self.frozen_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            self.seconds += time.perf_counter() - start
        return self._frozen

    def saved_model(self) -> dict[str, Any]:
        """The SavedModel export's description for the child (exported once)."""
        if self._saved_model is None:
            start = time.perf_counter()
            path = self.source.export(self.directory, static_batch=self.static_batch)
            self._saved_model = {"kind": "saved_model", "path": path}
            self.seconds += time.perf_counter() - start
        return self._saved_model


def save_arrays(path: str, names: list[str], arrays: list[np.ndarray] | Mapping[str, Any]) -> str:
    if isinstance(arrays, Mapping):
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    else:
        np.savez(path, **dict(zip(names, arrays, strict=True)))
    return path
