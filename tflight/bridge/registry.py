"""User translations: how a user teaches the bridge layers it does not know.

`register` adds a `Translation` (a predicate and a function making the other
generation's layer), `unregister` removes it, and `inline` asks for a
composite layer to be rebuilt from the layers its `call` uses. The rebuild
asks `user_translation` first for every layer. The classes translations
return are made known to their generation's deserialization (TF-MOT clones
models through their configs), and remembered as twins of their source
class, so that the reverse direction can undo a translation nobody
registered the reverse of.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from tflight._keras import keras, tf_keras
from tflight.bridge.configs import config_for_tf_keras
from tflight.bridge.generations import Direction
from tflight.bridge.own_objects import plain
from tflight.errors import BridgeError, UnsupportedLayerError

__all__ = ["Translation", "register", "unregister", "inline", "matching_translation",
           "user_translation", "from_twin", "twin_source"]


@dataclasses.dataclass(frozen=True)
class Translation:
    """A user translation of one kind of layer, chosen by a predicate.

    Attributes:
        matches: Called with a source layer; True if `translate` handles it.
        translate: Called with the source layer; returns a new, unbuilt layer of
            the target Keras generation. The bridge calls it on the same inputs
            and then copies the source layer's weights into it in order, so the
            new layer must create the same weights, in the same order and shapes.
        direction: Which generation the source layer belongs to.
        name: A label used in messages.
    """

    matches: Callable[[Any], bool]
    translate: Callable[[Any], Any]
    direction: Direction = Direction.TO_TF_KERAS
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.matches):
            raise BridgeError(
                f"Translation.matches must be a callable taking a layer, got {self.matches!r}."
            )
        if not callable(self.translate):
            raise BridgeError(
                f"Translation.translate must be a callable taking a layer, got {self.translate!r}."
            )
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError as e:
            raise BridgeError(
                f"Translation.direction must be one of {[d.value for d in Direction]}, "
                f"got {self.direction!r}."
            ) from e


_TRANSLATIONS: list[Translation] = []
# Class of a layer made by a user translation -> the class it was made from,
# so that `to_keras3` can undo a translation nobody registered the reverse of.
_TWIN_SOURCES: dict[type, type] = {}


def register(
    matches: Callable[[Any], bool] | type,
    translate: Callable[[Any], Any],
    *,
    direction: Direction | str = Direction.TO_TF_KERAS,
    name: str = "",
) -> Translation:
    """Teaches the bridge how to translate layers it does not know.

    Registered translations are tried before the built-in ones, newest first,
    so a user can also override how a built-in layer is translated.

    While `translate` runs, the source layer's `get_config()` returns its
    config in the target generation's form (for a Keras 3 layer: the dtype
    policy as a name, initializers and the like as tf_keras reads them), so
    `TwinClass(**layer.get_config())` works for a twin class whose constructor
    takes the same arguments. The class of the layer `translate` returns is
    made known to the target generation's deserialization (under its bare
    class name, unless it is registered already), so that TF-MOT, which clones
    models through their configs, can rebuild it; no
    `register_keras_serializable` on the twin class is needed. `to_keras3`
    turns such a twin back into the source class, rebuilt from the twin's
    config, unless a `"to_keras3"` translation for it is registered.

    Args:
        matches: A predicate on the source layer, or a class (then every
            instance of it or of a subclass matches).
        translate: Returns an unbuilt layer of the other Keras generation that
            computes the same function with the same weights layout. The
            bridge builds it on the same inputs and copies the source layer's
            weights into it, in order.
        direction: `"to_tf_keras"` (source is a Keras 3 layer) or `"to_keras3"`.
        name: A label for messages; defaults to the predicate's name.

    Returns:
        The `Translation`, which `unregister` takes.

    Raises:
        BridgeError: If `matches` or `translate` is not callable or `direction`
            is unknown.

    Example:
        >>> import keras, tf_keras, tflight
        >>> from tflight.bridge import register, report_of, unregister
        >>> @keras.saving.register_keras_serializable(package="my_layers")
        ... class Scale(keras.layers.Layer):
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight(shape=input_shape[-1:], initializer="ones")
        ...     def call(self, x):
        ...         return x * self.w
        >>> class TfKerasScale(tf_keras.layers.Layer):  # the same layer in tf_keras
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight(shape=input_shape[-1:], initializer="ones")
        ...     def call(self, x):
        ...         return x * self.w
        >>> t = register(Scale, lambda layer: TfKerasScale(**layer.get_config()))
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(Scale(name="scale")(inputs)))
        >>> tf_model = tflight.to_tf_keras(model)  # weights copied, outputs compared
        >>> report_of(tf_model).passed, type(tf_model.get_layer("scale")).__name__
        (True, 'TfKerasScale')
        >>> unregister(t)
    """
    if isinstance(matches, type):
        cls = matches
        name = name or cls.__name__

        def matches(layer: Any) -> bool:
            return isinstance(layer, cls)

    translation = Translation(
        matches=matches,
        translate=translate,
        direction=direction,
        name=name or getattr(matches, "__name__", repr(matches)),
    )
    _TRANSLATIONS.insert(0, translation)
    return translation


def inline(layer: Any) -> Any:
    """A `translate` for `register`: rebuild the layer from the layers it calls.

    For a custom layer that is a composition (its `call` uses only other
    layers and `keras.ops`, and it owns no weights itself): the bridge traces
    `call` on the layer's inputs into a Functional sub-model of the same
    inner layers and translates that. The round trip gives back that
    sub-model, not the custom class. Python branches on `training` inside
    `call` are fixed at their inference value. keras-hub layers of this kind
    are inlined without registration.

    Example:
        >>> tflight.bridge.register(MyResidualBlock, tflight.bridge.inline)

    Raises:
        BridgeError: Always, if called directly; pass it to `register`.
    """
    raise BridgeError(
        f"tflight.bridge.inline is passed to register(...), not called (got {layer!r})."
    )


def unregister(translation: Translation) -> None:
    """Removes a translation added with `register`.

    Raises:
        BridgeError: If it is not registered.
    """
    try:
        _TRANSLATIONS.remove(translation)
    except ValueError as e:
        raise BridgeError(f"{translation!r} is not registered.") from e


def matching_translation(layer: Any, direction: Direction) -> Translation | None:
    """The newest registered translation whose predicate accepts `layer`."""
    for t in _TRANSLATIONS:
        if t.direction is not direction:
            continue
        try:
            hit = t.matches(layer)
        except Exception as e:  # noqa: BLE001 - a user's predicate failing is reported
            raise BridgeError(
                f"The predicate of translation '{t.name}' raised {type(e).__name__}: {e} "
                f"on layer '{layer.name}' ({type(layer).__name__})."
            ) from e
        if hit:
            return t
    return None


def user_translation(layer: Any, direction: Direction) -> Any:
    t = matching_translation(layer, direction)
    if t is None:
        return None
    if t.translate is inline:
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is registered to be inlined, which "
            "the bridge does in Functional models (keras.Input -> layers -> keras.Model) and "
            "in the Keras 3 direction only; build the model that way, or register a "
            "translation that returns a layer."
        )
    try:
        with _target_config(layer, direction):
            new = t.translate(layer)
    except Exception as e:  # noqa: BLE001
        raise BridgeError(
            f"Translation '{t.name}' failed on layer '{layer.name}' "
            f"({type(layer).__name__}): {type(e).__name__}: {e}"
        ) from e
    target = tf_keras() if direction is Direction.TO_TF_KERAS else keras
    if not isinstance(new, target.layers.Layer):
        generation = "tf_keras" if direction is Direction.TO_TF_KERAS else "Keras 3"
        raise BridgeError(
            f"Translation '{t.name}' returned {type(new).__name__} for layer '{layer.name}'; "
            f"it must return a {generation} layer."
        )
    _make_loadable(type(new), direction)
    if direction is Direction.TO_TF_KERAS and type(new).__module__.split(".")[0] != "tf_keras":
        # A class of the user's own (a built-in one also stands for itself).
        _TWIN_SOURCES[type(new)] = type(layer)
    return new


@contextlib.contextmanager
def _target_config(layer: Any, direction: Direction) -> Any:
    """Within the block, `layer.get_config()` returns the target generation's form."""
    if direction is not Direction.TO_TF_KERAS:
        yield
        return
    own = layer.__dict__.get("get_config")
    source = layer.get_config

    def get_config() -> dict[str, Any]:
        return config_for_tf_keras(layer, source())

    # Set on the instance, past Keras' attribute tracking, and removed after.
    object.__setattr__(layer, "get_config", get_config)
    try:
        yield
    finally:
        if own is None:
            object.__delattr__(layer, "get_config")
        else:
            object.__setattr__(layer, "get_config", own)


def _make_loadable(cls: type, direction: Direction) -> None:
    """Lets the target generation rebuild `cls` from a config (clone, load).

    TF-MOT clones models through `get_config`/`from_config`, looking classes up
    by their registered name; a twin class defined in a user's script is not
    registered, so it is added to the generation's custom objects under its
    bare name (the name an unregistered class is saved under).
    """
    module = tf_keras() if direction is Direction.TO_TF_KERAS else keras
    if cls.__module__.split(".")[0] == module.__name__:
        return  # the generation's own class
    saving = module.saving
    registered = saving.get_registered_name(cls)
    if saving.get_registered_object(registered) is cls:
        return
    custom = module.utils.get_custom_objects()
    other = custom.get(cls.__name__)
    redefined = other is not None and (other.__module__, other.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )  # e.g. a notebook cell run again
    if other is not None and other is not cls and not redefined:
        raise BridgeError(
            f"Another class named {cls.__name__} ({other.__module__}) is already known to "
            f"{module.__name__}'s deserialization, so the translated layer's class "
            f"{cls.__module__}.{cls.__name__} cannot be found by name when the model is "
            f"cloned or loaded. Register it under a package of its own: "
            f"@{module.__name__}.saving.register_keras_serializable(package='my_layers')."
        )
    custom[cls.__name__] = cls


def from_twin(layer: Any) -> Any:
    """The Keras 3 layer a registered translation made `layer` from, rebuilt from its config.

    Returns None for a layer no translation made.
    """
    cls = _TWIN_SOURCES.get(type(layer))
    if cls is None:
        return None
    try:
        return cls.from_config(plain(layer.get_config()))
    except Exception as e:  # noqa: BLE001 - reported with the layer's name
        raise BridgeError(
            f"Layer '{layer.name}' ({type(layer).__name__}) was translated from Keras 3 "
            f"{cls.__name__}, which cannot be rebuilt from its config ({type(e).__name__}: "
            f"{e}); register the reverse with tflight.bridge.register(..., "
            "direction='to_keras3')."
        ) from e


def twin_source(cls: type) -> type | None:
    """The Keras 3 class a user translation made tf_keras class `cls` from, if any."""
    return _TWIN_SOURCES.get(cls)
