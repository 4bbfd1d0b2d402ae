"""Compiling a wrapped tf_keras model with the user's `compile` arguments.

TF-MOT wraps tf_keras models and drops their optimizer, while users write
`compile` arguments for Keras 3: Keras 3 optimizer, loss and metric objects are
translated to their tf_keras equivalents through their configs, and an
optimizer object (bound to one model's variables) is rebuilt for each stage.
"""

from __future__ import annotations

from typing import Any

from tflight._keras import tf_keras
from tflight.errors import CompressionError

__all__ = [
    "compile_model",
    "fresh_optimizer",
    "translate",
]

def compile_model(model: Any, compile: dict[str, Any] | None) -> None:
    """Compiles a tf_keras model with `compile` kwargs (Keras 3 objects translated)."""
    if compile is None:
        return
    if not isinstance(compile, dict):
        raise CompressionError(
            f"`compile` must be a dict of `Model.compile` keyword arguments, got "
            f"{type(compile).__name__}. Example: compile={{'optimizer': 'adam', "
            "'loss': 'sparse_categorical_crossentropy'}."
        )
    kwargs = {key: translate(key, value) for key, value in compile.items()}
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise CompressionError(
            f"Could not compile the compressed model with {compile!r}: {e}"
        ) from e


def translate(key: str, value: Any) -> Any:
    """Keras 3 optimizer/loss/metric objects -> tf_keras equivalents, via their config."""
    if isinstance(value, list | tuple):
        return type(value)(translate(key, v) for v in value)
    module = type(value).__module__.split(".")[0]
    if module != "keras":
        return value
    import inspect

    k = tf_keras()
    namespaces = {"optimizer": k.optimizers, "loss": k.losses, "metrics": k.metrics}
    if key not in namespaces:
        return value
    name = type(value).__name__
    cls = getattr(namespaces[key], name, None)
    try:
        if cls is None:
            raise ValueError(f"tf_keras.{namespaces[key].__name__.split('.')[-1]} has no {name}")
        accepted = inspect.signature(cls.__init__).parameters
        config = {
            arg: val
            for arg, val in value.get_config().items()
            if arg in accepted and arg != "name" and val is not None
        }
        return cls(**config)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot translate"
        raise CompressionError(
            f"The Keras 3 {key} {name} has no tf_keras equivalent ({e}). "
            f"Pass a string (e.g. 'adam') or a tf_keras object as `compile[{key!r}]`."
        ) from e



def fresh_optimizer(compile: dict[str, Any]) -> dict[str, Any]:
    """An optimizer object is bound to one model's variables: rebuild it per stage."""
    optimizer = compile.get("optimizer")
    if optimizer is None or isinstance(optimizer, str):
        return compile
    optimizer = translate("optimizer", optimizer)
    return {**compile, "optimizer": type(optimizer).from_config(optimizer.get_config())}

