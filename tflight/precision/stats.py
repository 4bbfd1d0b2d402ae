"""How sure an accuracy drop measured on samples is: exact one-sided binomial bounds.

The drop of a quantized model against its float model on the same samples is
paired (as in McNemar's test): only the samples the float model gets right and
the quantized one wrong ("losses") can make it worse. `drop_bound_pt` bounds
the drop on new data from the losses; `samples_needed` says how many samples
a budget needs before any bound can meet it.

A retrained model (fine-tuned, pruned, distilled) changes many predictions
both ways; bounding only its losses would refuse one that gains as many
samples as it loses. `net_drop_bound_pt` bounds the net drop (losses minus
gains) instead: the share of changed predictions and, among those, the share
that are losses, each with an exact bound at half the error rate
(Bonferroni), so that both hold together with the confidence asked for;
`net_samples_needed` is its sample count for a budget.

References:
  Clopper and Pearson, "The use of confidence or fiducial limits illustrated
  in the case of the binomial", Biometrika 26(4), 1934.
"""

from __future__ import annotations

import math

__all__ = [
    "DEFAULT_CONFIDENCE",
    "drop_bound_pt",
    "net_drop_bound_pt",
    "net_samples_needed",
    "samples_needed",
]

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


def net_drop_bound_pt(losses: int, gains: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound on the net accuracy drop (losses − gains) / n, in points.

    With r the share of samples whose correctness changes and q the share of
    those that are losses, the drop is r·(2q − 1). Given the D = losses + gains
    changed samples, the losses are binomial in D with rate q (McNemar's exact
    conditional view); D is binomial in n with rate r. Exact Clopper-Pearson
    bounds r ∈ [r_lo, r_hi] and q ≤ q_hi, each at 1 − (1 − confidence)/2, hold
    together with probability ≥ `confidence`, and then the drop is at most
    max over r of r·(2·q_hi − 1). Negative when the gains clearly outweigh the
    losses.
    """
    from scipy.stats import beta

    if n <= 0:
        return 100.0
    alpha = (1.0 - confidence) / 2.0
    changed = losses + gains
    r_hi = 1.0 if changed >= n else float(beta.ppf(1.0 - alpha, changed + 1, n - changed))
    r_lo = 0.0 if changed == 0 else float(beta.ppf(alpha, changed, n - changed + 1))
    if changed == 0:
        q_hi = 1.0
    elif losses >= changed:
        q_hi = 1.0
    else:
        q_hi = float(beta.ppf(1.0 - alpha, losses + 1, changed - losses))
    slope = 2.0 * q_hi - 1.0
    return 100.0 * (r_hi if slope >= 0 else r_lo) * slope


def net_samples_needed(max_drop_pt: float, confidence: float) -> int | None:
    """Fewest samples on which `net_drop_bound_pt` can reach `max_drop_pt` (nothing changed)."""
    if max_drop_pt <= 0:
        return None
    if max_drop_pt >= 100:
        return 1
    # With nothing changed the bound is r_hi = 1 - ((1 - confidence) / 2)^(1/n).
    return max(1, math.ceil(math.log((1 - confidence) / 2) / math.log(1 - max_drop_pt / 100)))
