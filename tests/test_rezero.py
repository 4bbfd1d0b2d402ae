"""Pruned zeros through later stages: counted before the repair, reported per layer.

A stage after `Prune` that keeps a pruned layer float (here QAT with
`keep_float`) trains it as a plain layer and refills its zeros; the pipeline
puts them back and the stage's `CompressionReport.rezeroed` says how many, per
layer. The sparsity-preservation check runs on the counts taken before the
repair, so it can fire.
"""

from __future__ import annotations

import numpy as np
import pytest

import tflight
from tflight.compress.masks import Refill, check_refills
from tflight.errors import CompressionError


def test_rezeroed_weights_are_counted_and_reported(keras3_cnn, digits):
    import keras

    x, y = digits.x_train[:256], digits.y_train[:256]
    compile_kwargs = {
        "optimizer": keras.optimizers.Adam(1e-3),
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
    out = tflight.Pipeline(
        [tflight.Prune(sparsity=0.6), tflight.QAT(keep_float=["logits"])]
    ).fit(keras3_cnn, x, y, compile=compile_kwargs, epochs=2, batch_size=32)
    prune_rep, qat_rep = out.reports
    assert prune_rep.rezeroed == ()  # nothing to put back after pruning itself
    rows = {layer: (refilled, pruned) for layer, refilled, pruned in qat_rep.rezeroed}
    # The kept-float layer trained as a plain Dense: it refilled most of its zeros.
    assert "logits" in rows, qat_rep.rezeroed
    refilled, pruned = rows["logits"]
    assert 0 < refilled <= pruned
    assert any("re-zeroed after training: logits" in line for line in qat_rep.lines())
    # ... and the model handed back is as sparse as pruning left it.
    sparsity = {r.layer: r.sparsity for r in tflight.sparsity_report(out.model).layers}
    assert sparsity["logits"] >= 0.58
    layer = next(la for la in out.model.layers if la.name.endswith("logits"))
    kernel = next(w.numpy() for w in layer.weights if "kernel" in w.name)
    assert int(kernel.size - np.count_nonzero(kernel)) >= pruned


def test_sparsity_check_fires_before_any_repair():
    # A wrapped layer (one the stage promised to keep sparse) that refilled
    # 30 % of its pruned weights: the check sees it, since it runs on the
    # counts taken before the zeros are put back.
    refills = [Refill("conv", 30, 100), Refill("logits", 90, 100)]
    with pytest.raises(CompressionError, match="conv refilled 30 of 100") as info:
        check_refills(refills, {"conv"}, tflight.QAT(), frozenset({"sparsity"}))
    assert info.value.layer == "conv" and info.value.kind == "sparsity_lost"
    # A layer the stage did not wrap (kept float) is repaired and reported, not refused.
    check_refills(refills, {"other"}, tflight.QAT(), frozenset({"sparsity"}))
    # Within tolerance: fine.
    check_refills([Refill("conv", 1, 100)], {"conv"}, tflight.QAT(), frozenset({"sparsity"}))
