"""`tflight optimize` on the command line: one Error line for bad input, a thin command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, keras3_cnn, digits):
    folder = tmp_path_factory.mktemp("inputs")
    model = folder / "m.keras"
    keras3_cnn.save(model)
    np.savez(folder / "train.npz", x=digits.x_train, y=digits.y_train)
    np.savez(folder / "val.npz", x=digits.x_test, y=digits.y_test)
    np.savez(folder / "small.npz", x=digits.x_test[:, :4, :4], y=digits.y_test)
    np.savez(folder / "labels.npz", x=digits.x_train, y=digits.y_train + 7)
    return folder


def _one_error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--data", "{d}/small.npz"], ("shape", "(4, 4, 1)")),
        (["--data", "{d}/labels.npz"], ("class ids up to 16", "10 classes")),
        (["--max-drop", "0.1"], ("3688", "450 validation samples")),
        (["--device", "pixel9"], ("Unknown device 'pixel9'", "edgetpu")),
        (["-o", "{d}"], ("is or holds the model",)),
        (["--time-budget", "soon"], ("not a duration",)),
    ],
)
def test_bad_input_is_one_error_line_before_any_training(files, extra, words):
    args = ["optimize", str(files / "m.keras"), "--data", str(files / "train.npz"),
            "--validation", str(files / "val.npz"), "-o", str(files / "out")]
    args += [a.format(d=files) for a in extra]
    result = CliRunner().invoke(cli, args)
    if "--time-budget" in extra:  # click's own parameter check: usage error, exit 2
        assert result.exit_code == 2 and "not a duration" in result.output
        return
    _one_error(result, *words)
    assert not (files / "out").exists()  # nothing written, not even an empty folder


@pytest.mark.slow
def test_a_spent_time_budget_is_reported_as_missed_with_json_only_on_stdout(files, tmp_path):
    out = tmp_path / "out"
    args = ["optimize", str(files / "m.keras"), "--data", str(files / "train.npz"),
            "--validation", str(files / "val.npz"), "--max-drop", "3", "-o", str(out),
            "--time-budget", "1s", "--json"]
    # The fp32 baseline alone takes longer than a second: no candidate may start.
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Missed: MISSED"), result.stderr  # no progress under --json
    report = json.loads(result.stdout)
    assert report["met"] is False and report["winner"] is None
    assert report["time_budget_s"] == 1.0 and report["stopped_by_time"] is True
    assert all(c["reason"].startswith("time budget") for c in report["candidates"])
    assert (out / "report.html").is_file() and not (out / "model.tflite").exists()
