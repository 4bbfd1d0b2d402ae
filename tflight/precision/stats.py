"""How sure an accuracy drop measured on samples is: exact one-sided binomial bounds.

The drop of a quantized model against its float model on the same samples is
paired (as in McNemar's test): only the samples the float model gets right and
the quantized one wrong ("losses") can make it worse. `drop_bound_pt` bounds
the drop on new data from the losses; `samples_needed` says how many samples
a budget needs before any bound can meet it.

References:
  Clopper and Pearson, "The use of confidence or fiducial limits illustrated
  in the case of the binomial", Biometrika 26(4), 1934.
"""

from __future__ import annotations

import math

__all__ = ["DEFAULT_CONFIDENCE", "drop_bound_pt", "samples_needed"]

DEFAULT_CONFIDENCE = 0.95


def drop_bound_pt(losses: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound on an accuracy drop, in points.

    The drop of a quantized model against its float model on the same samples
    is (losses - gains) / n, where losses are the samples the float model gets
    right and the quantized one wrong (paired, as in McNemar's test). It is at
    most the loss rate, and the loss count is binomial; so the exact one-sided
    Clopper-Pearson bound on the loss rate bounds the drop on new data from
    the same distribution with probability >= `confidence`. Gains are not
    credited, which keeps the bound conservative.
    """
    from scipy.stats import beta

    if losses >= n:
        return 100.0
    return 100.0 * float(beta.ppf(confidence, losses + 1, n - losses))


def samples_needed(max_drop_pt: float, confidence: float) -> int | None:
    """Fewest samples on which `drop_bound_pt` can reach `max_drop_pt` (with no loss at all).

    None if no number of samples can (a budget of 0 points).
    """
    if max_drop_pt <= 0:
        return None
    if max_drop_pt >= 100:
        return 1
    # With 0 losses the bound is 1 - (1 - confidence)^(1/n).
    return max(1, math.ceil(math.log(1 - confidence) / math.log(1 - max_drop_pt / 100)))
