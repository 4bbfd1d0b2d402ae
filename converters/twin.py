"""A float32 twin of a Keras 3 model built under a mixed-precision policy.

The TFLite converter and TF-MOT's wrappers want float32 compute: a model
built under `mixed_float16` fails conversion even in mode fp32 ('tf.Conv2D'
op is neither a custom op nor a flex op) and raises dtype errors inside
TF-MOT. Its variables are float32 already, so a twin rebuilt from its config
with every layer's policy set to float32, given the same weights, computes
what the model means in float32. `converters.source` converts the twin, and
`tflight.compress` trains it; both say so.
"""

from __future__ import annotations

from typing import Any

from converters.errors import UnsupportedModelError

__all__ = ["float32_twin"]


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def float32_twin(model: Any) -> tuple[Any, str]:
    """A float32 copy (same weights) of a model built under a mixed-precision policy.

    The TFLite converter wants float32 compute: a `mixed_float16` (or
    `mixed_bfloat16`) model fails even in mode fp32. Its variables are float32
    already; the twin is rebuilt from the model's config with every layer's
    policy set to float32, and given the same weights.

    Returns:
      (twin, label) for a mixed-precision model — the label names the model
      and its policies, for messages — and (None, "") for any other.
    """
    mixed = sorted(
        {
            str(layer.dtype_policy.name)
            for layer in model._flatten_layers(include_self=True)
            if getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32")
            in ("float16", "bfloat16")
        }
    )
    if not mixed:
        return None, ""
    label = f"{model.name!r} ({', '.join(mixed)})"
    try:
        config = model.get_config()
    except NotImplementedError:
        config = None
    if config is None:
        raise UnsupportedModelError(
            f"The Keras 3 model {label} computes in reduced precision, which the TFLite "
            "converter and TF-MOT need in float32, and it has no get_config() to rebuild it. "
            "Build the model again under keras.mixed_precision.set_global_policy('float32'), "
            "load the trained weights into it and convert that.",
            fix="rebuild the model under the float32 policy with the same weights",
        )

    def to_float32(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(
                value.get("config"), dict
            ):
                return {**value, "config": {**value["config"], "name": "float32"}}
            return {k: to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(v) for v in value]
        if value in ("mixed_float16", "mixed_bfloat16"):
            return "float32"
        return value

    try:
        twin = type(model).from_config(to_float32(config))
        twin.set_weights(model.get_weights())
    except Exception as e:  # noqa: BLE001 - user models raise anything here
        raise UnsupportedModelError(
            f"The Keras 3 model {label} computes in reduced precision, which the TFLite "
            "converter and TF-MOT need in float32, and rebuilding it in float32 failed: "
            f"{_first_line(e)}. "
            "Build it again under keras.mixed_precision.set_global_policy('float32'), load "
            "the trained weights and convert that.",
            fix="rebuild the model under the float32 policy with the same weights",
        ) from e
    return twin, label
