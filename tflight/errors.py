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
    "InternalError",
    "BridgeInternalError",
]


class TflightError(Exception):
    """Base class of every error raised by `tflight`.

    Besides its one-line message, an error carries structured fields, so that a
    front end (the `tflight` command) can say the fix in its own words — map
    `option` to its flag — without reading the message text.

    Attributes:
      option: the argument of the library call the error is about (its Python
        keyword, e.g. "sparsity", "max_drop", "validation_data"), or None.
      layer: the name of the layer the error is about, or None.
      fix: what would work, in the library's terms, or None.
      kind: a short machine-readable word for the failure (e.g.
        "unsupported_layer", "budget_missed"), or None.
      details: any further fields (e.g. measured figures), as a dict.
      internal: False for every error a user can cause; True (class
        `InternalError` and its children) for a failure of ours, which the
        command line reports as an internal error with exit code 1.
    """

    internal: bool = False

    def __init__(
        self,
        message: str = "",
        *,
        option: str | None = None,
        layer: str | None = None,
        fix: str | None = None,
        kind: str | None = None,
        **details: object,
    ) -> None:
        super().__init__(message)
        self.option = option
        self.layer = layer
        self.fix = fix
        self.kind = kind
        self.details = details


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

    def __init__(self, message: str, best: object = None, **fields: object) -> None:
        super().__init__(message, kind=fields.pop("kind", "budget_missed"), **fields)
        self.best = best


class LanguageModelError(TflightError):
    """A causal language model, its arguments or its prompt cannot be used as asked.

    Attributes:
      argument: the argument (or CLI option without dashes) at fault, e.g. "max_length".
      value: what was received.
      fix: what would work.
    """

    def __init__(self, message: str, *, argument: str | None = None, value: object = None,
                 fix: str | None = None, **fields: object) -> None:
        super().__init__(message, option=fields.pop("option", argument), fix=fix, **fields)
        self.argument = argument
        self.value = value


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


class InternalError(TflightError):
    """A failure of tflight's own (or of a library underneath), not a mistake of the user's.

    The command line reports it as "internal error" with the log path and exit
    code 1. The fields (`layer`, `fix`, ...) still say what is known and any
    workaround.
    """

    internal = True


class BridgeInternalError(InternalError, BridgeError):
    """The bridge failed on a built-in Keras layer: a gap of ours, not the user's."""


class TflightWarning(UserWarning):
    """Something worked but deserves the user's attention."""
