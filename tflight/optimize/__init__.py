"""One call from a Keras model to the best verified `.tflite` for a device, with a report.

`optimize` tries the techniques of the earlier stages (PTQ, the mixed-precision
search, int4, QAT, channel pruning with fine-tuning or distillation, low rank,
clustering) where they apply, cheap ones first, chooses on validation data,
measures the winner once on test data the search never saw, and writes the
chosen `.tflite`, `report.json` and a self-contained `report.html`.
"""

from tflight._lazy import attach

_EXPORTS = {
    "OptimizeError": "tflight.optimize.inputs",
    "DEVICES": "tflight.optimize.inputs",
    "CandidateResult": "tflight.optimize.result",
    "OptimizeResult": "tflight.optimize.result",
    "optimize": "tflight.optimize.search",
    "write_report_html": "tflight.optimize.html",
}
# `tflight.optimize` is this package (the import system binds it), so the
# function is reached as `tflight.optimize.optimize` / `from tflight.optimize import optimize`.
_LOCAL = frozenset({"optimize", "DEVICES", "write_report_html"})

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
