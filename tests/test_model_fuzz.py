"""Random models through the techniques: every cell works and is checked, or is refused.

A fixed-seed sample of `benchmarks/modelgen.py` (tiny random Keras 3 models:
CNNs, RNNs, attention, several inputs/outputs, nested and frozen sub-models,
custom layers, subclassed and mixed_float16 models), each through two
techniques sampled by `benchmarks/fuzz_models.py`. A cell passes when it works
and its checks hold (sparsity, cluster counts, quantize wrappers, every kernel
compressed or listed, the `.tflite` validated in LiteRT on held-out inputs,
integer modes computing in integers) or ends in a documented tflight /
converters error. It fails on a raw exception, a native crash, a file LiteRT
cannot run, a layer or op silently left float, or a check that does not hold.

A failing seed replays with
`.venv/bin/python -c "from benchmarks import modelgen; modelgen.generate(SEED)"`
and `benchmarks/fuzz_models.py --models 1 --seed SEED --per-model 13`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fuzz_models, modelgen  # noqa: E402

# Seeds 1000.. are not the benchmark's default range (0..): CI and the
# benchmark sample different models.
SEEDS = tuple(range(1000, 1040))
PER_MODEL = 2

OK = ("working", "refused")


# Found by the generator and not fixed yet (seed: reason). Seed 1021 was here until the
# sparsity report and the pruned masks read a SeparableConv2D's pointwise kernel.
KNOWN: dict[int, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed",
    [pytest.param(s, marks=pytest.mark.xfail(reason=KNOWN[s], strict=True)) if s in KNOWN else s
     for s in SEEDS],
)
def test_generated_model(seed):
    gen = modelgen.generate(seed)
    cells = [fuzz_models.run_cell(gen, t) for t in fuzz_models.sample_techniques(seed, PER_MODEL)]
    bad = [f"{c.technique}: {c.outcome}: {c.reason}" for c in cells if c.outcome not in OK]
    assert not bad, f"{gen.describe()}\n" + "\n".join(bad)


def test_generator_is_deterministic_and_varied():
    """The same seed builds the same model; the sample covers the vocabulary's families."""
    a, b = modelgen.generate(1003), modelgen.generate(1003)
    assert a.features == b.features
    assert [w.shape for w in a.model.weights] == [w.shape for w in b.model.weights]
    features = set()
    for seed in SEEDS:
        features.update(modelgen.generate(seed).features)
    for family in ("Conv2D", "Dense", "LSTM", "GRU", "MultiHeadAttention", "Embedding",
                   "multi_input", "multi_output", "subclassed", "mixed_float16"):
        assert any(family in f for f in features), family


def test_generated_models_are_tiny():
    for seed in SEEDS[:10]:
        assert modelgen.generate(seed).model.count_params() < 10_000


def test_classification_never_counts_a_raw_error_as_refused():
    import converters.errors
    import tflight.errors

    assert fuzz_models.classify(ValueError("boom")) == "raw_error"
    assert fuzz_models.classify(tflight.errors.UnsupportedLayerError("x")) == "refused"
    assert fuzz_models.classify(fuzz_models.SilentFloat("x")) == "silent_float"
    assert fuzz_models.classify(
        converters.errors.ConversionError(
            "Running the int8 model in LiteRT for validation failed: HARD_SWISH"
        )
    ) == "unrunnable_tflite"
    assert fuzz_models.classify(
        converters.errors.UnsupportedModelError("The TFLite converter failed on x: y")
    ) == "converter_failed"
