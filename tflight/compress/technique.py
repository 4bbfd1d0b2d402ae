"""The technique protocol and layer selection: what every compression technique shares.

Each technique (`Prune`, `QAT`, `Cluster`) is a frozen dataclass with the same
small protocol:

* `apply(model, *, preserve=frozenset(), compile=None)` returns a new, wrapped
  tf_keras model ready for fine-tuning (the user's model is never modified);
* `plan(model, *, preserve=...)` decides, without wrapping, which layers it
  touches (a `CompressionReport`);
* `callbacks(model)` lists the Keras callbacks the wrapped model needs in `fit`;
* `strip(model)` returns the plain model to hand to `converters.convert`;
* `provides` names the property it leaves in the weights (``"sparsity"``,
  ``"clusters"``) so that a later technique can preserve it.

A `Selector` says which layers a technique touches; the helpers here match it
against a model's layers through `isinstance`, so a subclass of `Conv2D` is
still a `Conv2D`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from tflight.errors import CompressionError

__all__ = [
    "Selector",
    "Technique",
    "check_names_exist",
    "check_selector",
    "layer_matches",
    "selected_layers",
]

Selector = type | tuple[type, ...] | str | Sequence[str] | Callable[[Any], bool] | None
"""Which layers a technique touches.

* a layer class or a tuple of classes: every layer that is an *instance* of
  one of them (a subclass of `Conv2D` is still a `Conv2D`); Keras 3 classes
  are matched by name against the tf_keras rebuild;
* a name or a list of names: those layers (unknown names are an error);
* a predicate `f(layer) -> bool`;
* `None`: every layer the technique supports.
"""


@runtime_checkable
class Technique(Protocol):
    """The protocol shared by `Prune`, `QAT` and `Cluster`."""

    provides: frozenset[str]

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
    ) -> Any: ...

    def plan(self, model: Any, *, preserve: frozenset[str] = frozenset()) -> Any: ...

    def callbacks(self, model: Any) -> list[Any]: ...

    def strip(self, model: Any) -> Any: ...



def layer_matches(layer: Any, select: Selector) -> bool:
    if select is None:
        return True
    if isinstance(select, type):
        select = (select,)
    if isinstance(select, tuple) and all(isinstance(s, type) for s in select):
        return any(_isinstance(layer, cls) for cls in select)
    if isinstance(select, str):
        return layer.name == select
    if callable(select):
        return bool(select(layer))
    return layer.name in set(select)


def _isinstance(layer: Any, cls: type) -> bool:
    if isinstance(layer, cls):
        return True
    # A Keras 3 class given for a tf_keras layer (the model went through the
    # bridge): match the class name anywhere in the layer's MRO.
    if cls.__module__.split(".")[0] == "keras":
        return any(c.__name__ == cls.__name__ for c in type(layer).__mro__)
    return False


def check_selector(select: Selector, *, arg: str) -> None:
    if select is None or callable(select) or isinstance(select, str):
        return
    if isinstance(select, tuple) and select and all(isinstance(s, type) for s in select):
        return
    if isinstance(select, Sequence) and select and all(isinstance(s, str) for s in select):
        return
    raise CompressionError(
        f"`{arg}` must be a layer class, a tuple of classes, a layer name, a list of names, "
        f"a predicate `f(layer) -> bool` or None, got {select!r}."
    )


def check_names_exist(model: Any, select: Selector, *, arg: str) -> None:
    names = [select] if isinstance(select, str) else select
    if select is None or callable(select) or isinstance(select, type | tuple):
        return
    known = {layer.name for layer in model.layers}
    # Wrapped layers answer to the name of the layer they wrap, too.
    known |= {
        layer.layer.name for layer in model.layers if hasattr(getattr(layer, "layer", None), "name")
    }
    missing = [n for n in names if n not in known]
    if missing:
        raise CompressionError(
            f"`{arg}` names layers that are not in model {model.name!r}: {missing}. "
            f"Its layers are: {sorted(known)}."
        )


def selected_layers(model: Any, select: Selector = None) -> list[str]:
    """Names of the top-level layers of `model` that `select` picks.

    Args:
      model: a Keras 3 or tf_keras model.
      select: a `Selector` (class, tuple of classes, name(s), predicate or None).

    Returns:
      The names, in model order.

    Raises:
      CompressionError: `select` is malformed or names layers the model lacks.
    """
    check_selector(select, arg="select")
    check_names_exist(model, select, arg="select")
    return [layer.name for layer in model.layers if layer_matches(layer, select)]

