"""The README's main job, `tflight demo`: train on digits, then `optimize` end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.mark.slow
def test_demo_trains_optimizes_and_writes_the_report(tmp_path):
    from tflight.optimization import demo

    lines: list[str] = []
    result, accuracy, _ = demo.run(str(tmp_path / "out"), epochs=5,
                                   techniques=("int8", "dynamic"), progress=lines.append)
    assert accuracy > 0.8  # five epochs on real digits
    assert result.met, result.verdict
    assert (tmp_path / "out" / "model.tflite").is_file()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [c["spec"]["name"] for c in report["candidates"]] == ["int8", "dynamic"]
    assert report["validation_source"] == "validation_data" and report["test"]["samples"] == 269
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()
    assert lines[0].startswith("Training a small CNN") and any("[1/2] int8" in ln for ln in lines)


@pytest.mark.parametrize("where", ["file", "proc"])
def test_demo_refuses_an_unwritable_output_folder_before_training(tmp_path, where):
    if where == "file":
        blocker = tmp_path / "taken"
        blocker.write_text("a file")
        out = str(blocker / "sub")  # a folder inside a file
    else:
        out = "/proc/tflight-demo-out"  # root may write anywhere, but not here
    result = CliRunner().invoke(cli, ["demo", "-o", out, "--epochs", "1", "--progress"])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert repr(out) in lines[0] and "Training" not in result.output
