"""Exceptions raised by `tflight`.

`TflightError` is the root of every error a user can cause; the command-line
interface turns it (and `converters.ConversionError`) into one readable line and
exit code 2.
"""

from __future__ import annotations

__all__ = [
    "TflightError",
    "BridgeError",
    "UnsupportedLayerError",
    "CompressionError",
    "MissingCallbackError",
    "DistillationError",
    "BenchmarkError",
    "DeviceError",
    "PrecisionError",
    "PrecisionBudgetError",
    "LanguageModelError",
    "UnsupportedOpError",
    "TflightWarning",
]


class TflightError(Exception):
    """Base class of every error raised by `tflight`."""


class BridgeError(TflightError):
    """A Keras 3 model could not be rebuilt in tf_keras (or back)."""


class UnsupportedLayerError(TflightError):
    """A layer is not supported by the requested technique."""


class CompressionError(TflightError):
    """A compression technique was misused or failed."""


class MissingCallbackError(CompressionError):
    """A wrapped model is trained without a callback it needs."""


class DistillationError(TflightError):
    """A distillation set-up is invalid."""


class BenchmarkError(TflightError):
    """A benchmark could not be run."""


class DeviceError(BenchmarkError):
    """An emulated or physical device could not be set up or used."""


class PrecisionError(TflightError):
    """A mixed-precision analysis or search cannot run on this model or data."""


class PrecisionBudgetError(PrecisionError):
    """No configuration met the accuracy budget; `best` holds the closest one found."""

    def __init__(self, message: str, best: object = None) -> None:
        super().__init__(message)
        self.best = best


class LanguageModelError(TflightError):
    """A causal language model, its arguments or its prompt cannot be used as asked.

    Attributes:
      argument: the argument (or CLI option without dashes) at fault, e.g. "max_length".
      value: what was received.
      fix: what would work.
    """

    def __init__(self, message: str, *, argument: str | None = None, value: object = None,
                 fix: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument
        self.value = value
        self.fix = fix


class UnsupportedOpError(UnsupportedLayerError, LanguageModelError):
    """A layer of the model traces to an op that LiteRT has no builtin kernel for.

    Attributes:
      op: the TensorFlow op, e.g. "tf.MatrixInverse".
      layer: the layer's name path in the traced graph, if the converter named it.
    """

    def __init__(self, message: str, *, op: str | None = None, layer: str | None = None,
                 fix: str | None = None) -> None:
        LanguageModelError.__init__(self, message, argument="causal_lm", value=layer, fix=fix)
        self.op = op
        self.layer = layer


class TflightWarning(UserWarning):
    """Something worked but deserves the user's attention."""
