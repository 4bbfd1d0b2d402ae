"""Old module paths of the flat layout, kept importable with a deprecation warning.

tflight's modules now live in one sub-package per stage (`tflight.bridge`,
`tflight.compress`, ...). Code that imported a module by its old path
(`from tflight.structured import fine_tune`) keeps working: the old name is an
alias of the new module, and the first import says where it went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "install"]

MOVED: dict[str, str] = {
    "tflight.compose": "tflight.compress.pipeline",
    "tflight.pruning": "tflight.compress.pruning",
    "tflight.quantization": "tflight.compress.quantization+tflight.compress.agreement",
    "tflight.clustering": "tflight.compress.clustering",
    "tflight.flatten": "tflight.bridge.flattening",
    "tflight._bridge_ops": "tflight.bridge.ops",
    "tflight.distillation_losses": "tflight.distillation.losses",
    "tflight.depgraph": "tflight.shrink.depgraph",
    "tflight.importance": "tflight.shrink.importance",
    "tflight.structured": "tflight.shrink.channels",
    "tflight.lowrank": "tflight.shrink.lowrank",
    "tflight.sensitivity": "tflight.shrink.sensitivity",
    "tflight.precision_search": "tflight.precision.search",
    "tflight.profiles": "tflight.devices.profiles",
    "tflight.benchmark": "tflight.bench.run",
    "tflight.bench_results": "tflight.bench.results",
    "tflight.bench_history": "tflight.bench.history",
    "tflight._bench_child": "tflight.bench.child",
    "tflight.device": "tflight.bench.emulator",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as a view of the new module."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: Any) -> types.ModuleType | None:
        return None  # a plain module, filled in by exec_module

    def exec_module(self, module: types.ModuleType) -> None:
        # One old module may have been split in several ("a+b").
        news = MOVED[module.__name__].split("+")
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(news)}; import it from there "
            "(the old path will be removed in a later release).",
            DeprecationWarning,
            stacklevel=2,
        )
        targets = [importlib.import_module(new) for new in news]
        names: list[str] = []
        for target in reversed(targets):
            module.__dict__.update(
                {k: v for k, v in vars(target).items() if not k.startswith("__")}
            )
            names = [*getattr(target, "__all__", []), *names]
        module.__all__ = names
        module.__doc__ = targets[0].__doc__

        def find(name: str) -> Any:
            for target in targets:
                if hasattr(target, name):
                    return getattr(target, name)
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")

        module.__getattr__ = find  # type: ignore[method-assign]


def install() -> None:
    """Puts the alias finder on `sys.meta_path` once."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
