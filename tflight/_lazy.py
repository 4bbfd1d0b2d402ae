"""Lazy public namespaces: a package's names load on first use (PEP 562).

Every stage package declares its public names once, in an `_EXPORTS` mapping
from the public name to the module that defines it (``"module"`` when the
object has the public name there, ``"module:attr"`` when it is named otherwise
in its module). `attach` turns that mapping into the package's `__getattr__`,
`__dir__` and `__all__`, so importing a stage (or `tflight` itself) imports no
TensorFlow until a name is used.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["attach", "resolve"]


def resolve(package: str, name: str, target: str) -> Any:
    """Imports the object that `target` names for `package.name`."""
    module_name, _, attr = target.partition(":")
    if module_name == f"{package}.{name}" and not attr:
        return importlib.import_module(module_name)  # the public name is a submodule
    return getattr(importlib.import_module(module_name), attr or name)


def attach(
    package: str,
    exports: Mapping[str, str],
    *,
    deprecated: Mapping[str, str] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """Returns `(__getattr__, __dir__, __all__)` for a lazily exporting package.

    Args:
      package: the package's `__name__`.
      exports: public name -> defining module (``"module"`` or ``"module:attr"``).
      deprecated: old public name -> the public name that replaced it. Using an
        old name works and issues a `DeprecationWarning` naming the new one.

    Returns:
      The three module attributes, to be assigned in the package's `__init__`.
    """
    deprecated = dict(deprecated or {})
    public = list(exports)

    def __getattr__(name: str) -> Any:
        if name in deprecated:
            new = deprecated[name]
            warnings.warn(
                f"{package}.{name} is deprecated; use {package}.{new} (same object).",
                DeprecationWarning,
                stacklevel=2,
            )
            return __getattr__(new)
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = resolve(package, name, target)
        sys.modules[package].__dict__[name] = value
        return value

    def __dir__() -> list[str]:
        own = (n for n in sys.modules[package].__dict__ if n.startswith("__"))
        return sorted({*public, *own})

    return __getattr__, __dir__, public
