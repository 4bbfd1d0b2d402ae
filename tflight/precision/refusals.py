"""Which quantizer failures mean "this precision is not supported here", and which are bugs.

litert-quantizer refuses a recipe it cannot apply (a block size that does not
divide a dimension, an op its blockwise path does not handle, a bit width an
algorithm lacks) by raising `ValueError` or `NotImplementedError` from its own
code; its docstrings document those as the errors of an unsupported request.
Only those are treated as "unsupported" by the mixed-precision search and the
sensitivity analysis. Anything else — another exception type, or any
exception raised in tflight's own recipe code — is a bug (ours or the
quantizer's) and surfaces as `tflight.errors.InternalError`, so it is never
reported as a precision the model "does not support". A failure of another
type raised inside litert-quantizer's own code is its bug: that option is left
out and reported as the quantizer's failure, by name (`quantizer_failed`). The
test is the exception's type and where it was raised, never its message text.
"""

from __future__ import annotations

__all__ = ["quantizer_failed", "quantizer_refused"]

_REFUSALS = (ValueError, NotImplementedError)
_QUANTIZER = "litert_quantizer"


def _raised_in_quantizer(e: BaseException) -> bool:
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    return module == _QUANTIZER or module.startswith(_QUANTIZER + ".")


def quantizer_refused(e: BaseException) -> bool:
    """True if `e` is litert-quantizer's own refusal of a recipe (raised inside its package)."""
    return isinstance(e, _REFUSALS) and _raised_in_quantizer(e)


def quantizer_failed(e: BaseException) -> bool:
    """True if `e` is another failure raised inside litert-quantizer's own code (its bug).

    Such a failure is neither a documented refusal nor a bug of tflight's: the
    quantizer cannot build that recipe for that layer (e.g. litert-quantizer
    0.11.0 raises a `TypeError` in `dequant_insert.py` building fp16 for a GRU
    cell). It is reported as that, by name, and the option is left out.
    """
    return not isinstance(e, _REFUSALS) and _raised_in_quantizer(e)
