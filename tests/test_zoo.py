"""The model-zoo matrix: every model shape a user brings, through every technique.

The matrix (models, techniques, expected errors, cells pending other parts of
the project) is defined once, in `benchmarks/zoo.py`; this test runs the cells
in its `TEST_CELLS` (the benchmark runs all of them). A cell passes when it
works and its checks hold (sparsity inside nested layers, quantize wrappers on
nested layers, LiteRT agreeing with Keras), or when it ends in the documented
tflight/converters error listed in `EXPECTED_ERRORS`. A cell never passes on
a raw exception. Cells in `PENDING_OTHER_BRANCHES` are expected to fail until
the work they depend on is merged (xfail, not strict: they pass once it is).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import zoo  # noqa: E402

_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def zoo_model():
    """Builds each zoo model once per session (on first use)."""

    def get(name: str):
        if name not in _BUILT:
            try:
                _BUILT[name] = zoo.MODELS[name]()
            except Exception as e:  # noqa: BLE001 - reported by the cell
                _BUILT[name] = e
        return _BUILT[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "technique"), zoo.TEST_CELLS, ids=[f"{m}-{t}" for m, t in zoo.TEST_CELLS]
)
def test_zoo_cell(zoo_model, model, technique):
    pending = (model, technique) in zoo.PENDING_OTHER_BRANCHES
    built = zoo_model(model)
    if isinstance(built, Exception):
        if pending:
            pytest.xfail(f"pending another branch: cannot build: {built}")
        raise built
    cell = zoo.run_cell(built, technique)
    if pending and not cell.ok:
        pytest.xfail(f"pending another branch: {cell.reason}")
    assert not cell.raw_error, cell.reason
    assert cell.ok, cell.reason


def test_matrix_is_consistent():
    """Every expectation and pending cell names a real model and technique."""
    cells = {(m, t) for m in zoo.MODELS for t in zoo.TECHNIQUES}
    assert set(zoo.EXPECTED_ERRORS) <= cells
    assert zoo.PENDING_OTHER_BRANCHES <= cells
    assert set(zoo.TEST_CELLS) <= cells
    # The test covers every model and every technique at least once.
    assert {m for m, _ in zoo.TEST_CELLS} == set(zoo.MODELS)
    assert {t for _, t in zoo.TEST_CELLS} == set(zoo.TECHNIQUES)
