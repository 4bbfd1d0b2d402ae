"""Layer configs across generations: the tables and rules that translate them.

A layer's config is rebuilt in the other generation's form: dtype policies
become names, serialized objects (initializers, regularizers) the legacy
`{class_name, config}` form, activations whose meaning differs are replaced
by objects that keep it, renamed keys are renamed, and options the target
class lacks are dropped only when they hold their default value.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tflight._keras import keras
from tflight.bridge.generations import Direction
from tflight.bridge.own_objects import k3_support, plain, tfk_support
from tflight.errors import UnsupportedLayerError

__all__ = ["builtin_base", "find_class", "config_for_tf_keras", "layer_config", "rebuild_layer",
           "policy_name", "k3_activation_to_tfk"]

# Activations whose name means the same function in both generations.
_SHARED_ACTIVATIONS = frozenset(
    {
        "elu",
        "exponential",
        "gelu",
        "linear",
        "mish",
        "relu",
        "selu",
        "sigmoid",
        "softmax",
        "softplus",
        "softsign",
        "swish",
        "tanh",
    }
)
_ACTIVATION_ALIASES = {"silu": "swish"}

# Keyword arguments every tf_keras layer accepts besides its own.
_TFK_BASE_KWARGS = frozenset(
    {"name", "trainable", "dtype", "dynamic", "activity_regularizer", "autocast", "input_dim"}
)
_K3_BASE_KWARGS = frozenset({"name", "trainable", "dtype", "activity_regularizer", "autocast"})

# tf_keras options with no effect on what a layer computes.
_TFK_ONLY_IGNORABLE = frozenset(
    {
        "batch_input_shape",
        "implementation",
        "input_length",
        # Input shapes recorded by MultiHeadAttention; Keras 3 builds on call.
        "query_shape",
        "key_shape",
        "value_shape",
    }
)

# Config keys renamed between generations: {class name: {Keras 3 key: tf_keras key}}.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}


def policy_name(dtype: Any) -> Any:
    if isinstance(dtype, dict):
        config = dtype.get("config") or {}
        return config.get("name", dtype.get("class_name"))
    return dtype


def _legacy_object(value: dict[str, Any]) -> dict[str, Any]:
    """Reduces a serialized object to `{class_name, config}`, dropping None options."""
    config = {k: v for k, v in (value.get("config") or {}).items() if v is not None}
    return {"class_name": value.get("registered_name") or value["class_name"], "config": config}


@functools.cache
def _init_params(cls: type) -> tuple[frozenset[str], bool, dict[str, Any]]:
    """Named parameters of `cls.__init__`, whether it takes **kwargs, and defaults."""
    names: set[str] = set()
    defaults: dict[str, Any] = {}
    var_kw = False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        has_var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
                if p.default is not p.empty:
                    defaults.setdefault(p.name, p.default)
        if not has_var_kw:
            break
        var_kw = True
    return frozenset(names), var_kw, defaults


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, str) and "class_name" in a:
        # A serialized default object, e.g. {"class_name": "GlorotUniform"} vs
        # "glorot_uniform"; only when it carries no options of its own.
        camel = "".join(part.capitalize() for part in b.split("_"))
        return a["class_name"] == camel and not any((a.get("config") or {}).values())
    try:
        return bool(np.all(np.asarray(a == b)))
    except Exception:  # noqa: BLE001 - incomparable values are different
        return False


def _fit_config(
    layer: Any,
    config: dict[str, Any],
    target_cls: type,
    base_kwargs: frozenset[str],
    target_name: str,
    ignorable: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Drops options the target class lacks when they hold their default value.

    `ignorable` options change speed or bookkeeping only, never the function.
    """
    names, _, _ = _init_params(target_cls)
    allowed = names | base_kwargs
    _, _, source_defaults = _init_params(type(layer))
    fitted = {}
    for key, value in config.items():
        if key in allowed:
            fitted[key] = value
        elif (
            key in ignorable
            or value is None
            or value is False
            or (key == "data_format" and value == "channels_last")
            or _same(value, source_defaults.get(key, object()))
        ):
            continue
        else:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__name__}) uses {key}={value!r}, which "
                f"{target_name} {target_cls.__name__} does not have. Use the default for "
                f"{key}, or register a translation with tflight.bridge.register(...)."
            )
    return fitted


def _translate_value(key: str, value: Any, activation: Callable[[Any], Any]) -> Any:
    if key.endswith("activation"):
        return activation(value)
    if isinstance(value, dict) and "class_name" in value:
        if value["class_name"] in {"DTypePolicy", "Policy", "FloatDTypePolicy"}:
            return policy_name(value)
        return _legacy_object(value)
    return value


def _activation_name(value: Any) -> Any:
    """The name of a serialized activation (a string, a dict or a function)."""
    if isinstance(value, Mapping):
        config = value.get("config")
        if isinstance(config, str):
            return config
        if isinstance(config, Mapping) and isinstance(config.get("name"), str):
            return config["name"]
        return str(value.get("registered_name") or value.get("class_name"))
    if isinstance(value, str):
        return value
    return str(getattr(value, "__name__", repr(value)))


def k3_activation_to_tfk(value: Any, layer: Any) -> Any:
    if value is None:
        return value
    raw = _activation_name(value)
    name = _ACTIVATION_ALIASES.get(raw, raw)
    if name in _SHARED_ACTIVATIONS:
        return name
    try:
        if not name.isidentifier() or not callable(keras.activations.get(name)):
            raise ValueError(name)
    except Exception as e:  # noqa: BLE001 - reported as a bridge error below
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses activation {raw!r}, which is "
            "not a built-in Keras activation; use a built-in one, or register a translation "
            "for the layer with tflight.bridge.register(...)."
        ) from e
    # A registered function: tf_keras serializes it under a name of its own, so
    # a clone (as TF-MOT makes) cannot fall back to tf_keras' different meaning.
    return tfk_support().wrap_activation(name)


def _tfk_activation_to_k3(value: Any, layer: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, Mapping) and value.get("class_name") == "Keras3Activation":
        return value["config"]["name"]  # made by to_tf_keras: the Keras 3 name
    name = _activation_name(value)
    support = k3_support()
    if name in support.tf_keras_activations:
        return support.tf_keras_activations[name]
    try:
        keras.activations.get(name)
    except Exception as e:  # noqa: BLE001 - reported as a bridge error below
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses activation {name!r}, which "
            "has no Keras 3 counterpart; use a built-in one, or register a translation for "
            "the layer with tflight.bridge.register(..., direction='to_keras3')."
        ) from e
    # Same name, same function (relu6, silu, ...); the output check confirms it.
    return name


def builtin_base(cls: type, package: str) -> type | None:
    """The Keras class `cls` computes like: itself if Keras ships it, else a Keras
    base class when no class in between redefines `call` or `build`."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == package:
            return klass
        if "call" in klass.__dict__ or "build" in klass.__dict__:
            return None
    return None


def find_class(source_cls: type, target_root: Any, target_pkg: str) -> type | None:
    """The class of the other generation with the same name, if Keras ships one."""
    name = source_cls.__name__
    cls = getattr(target_root.layers, name, None)
    if isinstance(cls, type):
        return cls
    module = source_cls.__module__
    if ".applications." in module:
        # e.g. keras.src.applications.convnext.LayerScale
        tail = module.split(".applications.", 1)[1]
        try:
            mod = importlib.import_module(f"{target_pkg}.src.applications.{tail}")
        except ImportError:
            return None
        cls = getattr(mod, name, None)
        return cls if isinstance(cls, type) else None
    return None


def config_for_tf_keras(layer: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 layer config in the form tf_keras constructors read."""

    def activation(value: Any) -> Any:
        try:
            return k3_activation_to_tfk(value, layer)
        except UnsupportedLayerError:
            return value  # the user's own activation: theirs to translate

    out = {}
    for key, value in config.items():
        if key == "dtype":
            out[key] = policy_name(value)
        else:
            out[key] = _translate_value(key, value, activation)
    return out


def rebuild_layer(cls: type, config: dict[str, Any]) -> Any:
    try:
        return cls.from_config(config)
    except KeyError:
        # Some from_config methods also expect a build config (tf_keras
        # MultiHeadAttention's query_shape); the constructor does not.
        return cls(**config)




@dataclasses.dataclass(frozen=True)
class _Rules:
    """How a built-in layer's config is translated in one direction."""

    renamed: Callable[[str], dict[str, str]]  # class name -> {source key: target key}
    activation: Callable[[Any, Any], Any]  # (value, layer) -> the target's activation
    base_kwargs: frozenset[str]  # keyword arguments every target layer accepts
    ignorable: frozenset[str]  # source-only options with no effect on the function
    target: str  # the target generation in messages
    plain: bool  # turn tracking containers into lists and dicts first


_RULES = {
    Direction.TO_TF_KERAS: _Rules(
        renamed=lambda name: _RENAMED.get(name, {}),
        activation=lambda value, layer: k3_activation_to_tfk(value, layer),
        base_kwargs=_TFK_BASE_KWARGS,
        ignorable=frozenset(),
        target="tf_keras",
        plain=False,
    ),
    Direction.TO_KERAS3: _Rules(
        renamed=lambda name: {v: k for k, v in _RENAMED.get(name, {}).items()},
        activation=lambda value, layer: _tfk_activation_to_k3(value, layer),
        base_kwargs=_K3_BASE_KWARGS,
        ignorable=_TFK_ONLY_IGNORABLE,
        target="Keras 3",
        plain=True,
    ),
}


def layer_config(layer: Any, name: str, cls: type, direction: Direction) -> dict[str, Any]:
    """The config of built-in `layer` (class `name`) as the target class `cls` reads it.

    Raises:
        UnsupportedLayerError: If the layer uses an option or activation the
            target generation lacks.
    """
    rules = _RULES[direction]
    renamed = rules.renamed(name)
    source = layer.get_config()
    if rules.plain:
        source = plain(source)
    config = {
        renamed.get(k, k): _translate_value(k, v, lambda a: rules.activation(a, layer))
        for k, v in source.items()
    }
    if name == "BatchNormalization" and isinstance(config.get("axis"), list):
        # tf_keras stores a list of axes; Keras 3 takes one.
        if len(config["axis"]) != 1:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' (BatchNormalization) normalizes over axes "
                f"{config['axis']}; Keras 3 BatchNormalization takes a single axis."
            )
        config["axis"] = config["axis"][0]
    config["dtype"] = policy_name(config.get("dtype"))
    return _fit_config(layer, config, cls, rules.base_kwargs, rules.target, rules.ignorable)
