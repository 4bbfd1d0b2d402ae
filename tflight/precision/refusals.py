"""Which quantizer failures mean "this precision is not supported here", and which are bugs.

litert-quantizer refuses a recipe it cannot apply (a block size that does not
divide a dimension, an op its blockwise path does not handle, a bit width an
algorithm lacks) by raising `ValueError` or `NotImplementedError` from its own
code; its docstrings document those as the errors of an unsupported request.
Only those are treated as "unsupported" by the mixed-precision search and the
sensitivity analysis. Anything else — another exception type, or any
exception raised in tflight's own recipe code — is a bug (ours or the
quantizer's) and surfaces as `tflight.errors.InternalError`, so it is never
reported as a precision the model "does not support". The test is the
exception's type and where it was raised, never its message text.
"""

from __future__ import annotations

__all__ = ["quantizer_refused"]

_REFUSALS = (ValueError, NotImplementedError)
_QUANTIZER = "litert_quantizer"


def quantizer_refused(e: BaseException) -> bool:
    """True if `e` is litert-quantizer's own refusal of a recipe (raised inside its package)."""
    if not isinstance(e, _REFUSALS):
        return False
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    return module == _QUANTIZER or module.startswith(_QUANTIZER + ".")
