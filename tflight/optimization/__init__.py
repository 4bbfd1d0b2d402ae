"""One call from a Keras model to the best verified `.tflite` for a device, with a report.

`optimize` tries the techniques of the earlier stages (PTQ, the mixed-precision
search, int4, QAT, channel pruning with fine-tuning or distillation, low rank,
clustering) where they apply, cheap ones first, chooses on validation data,
measures the winner once on test data the search never saw, and writes the
chosen `.tflite`, `report.json` and a self-contained `report.html`.
"""

from tflight._lazy import attach

_EXPORTS = {
    "OptimizeError": "tflight.optimization.inputs",
    "DEVICES": "tflight.optimization.inputs",
    "CandidateResult": "tflight.optimization.result",
    "OptimizeResult": "tflight.optimization.result",
    "optimize": "tflight.optimization.search",
    "write_report_html": "tflight.optimization.html",
}
# The stage is `tflight.optimization` so that `tflight.optimize` is the function
# (a stage named like a public name would be rebound by the import system).
_LOCAL = frozenset({"DEVICES", "write_report_html"})

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
