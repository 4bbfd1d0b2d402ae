"""The README's main job, `tflight demo`, end to end with short training."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.mark.slow
def test_demo_trains_converts_compresses_and_measures(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["demo", "-o", str(out), "--epochs", "5", "--compress-epochs", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    rows = {row["name"]: row for row in figures["rows"]}
    assert list(rows) == ["fp32", "fp16", "dynamic", "int8", "pcqat int8"]
    for row in rows.values():
        assert (out / row["path"].split("/")[-1]).is_file()
        assert row["validation"].startswith("ok"), row
        # Five epochs on real digits already beat chance (10 %) by far.
        assert row["accuracy"] > 0.6, row
    assert rows["fp32"]["accuracy"] == pytest.approx(figures["keras_accuracy"], abs=0.005)
    assert rows["int8"]["size"] * 3 < rows["fp32"]["size"]
    assert rows["fp16"]["size"] * 1.8 < rows["fp32"]["size"]
    # Pruned to 80 %, 16 shared values, int8: the gzip is far smaller than int8 alone.
    assert rows["pcqat int8"]["gzip_size"] * 2 < rows["int8"]["gzip_size"]
    assert "Keras agreement" in rows["pcqat int8"]["validation"]


def test_demo_table_renders_every_row(tmp_path):
    from tflight.demo import DemoResult, DemoRow

    rows = tuple(
        DemoRow(name=n, path=f"{n}.tflite", size=s, gzip_size=g, accuracy=a, validation="ok")
        for n, s, g, a in [("fp32", 4000, 3000, 0.95), ("int8", 1000, 600, 0.94)]
    )
    lines: list[str] = []
    DemoResult(keras_accuracy=0.95, rows=rows, train_seconds=1.0, num_test=10).summary(
        print_fn=lines.append
    )
    assert "4.00x" in lines[-1] and "5.00x" in lines[-1] and "94.00%" in lines[-1]
    assert lines[-2].startswith("fp32") and "1.00x" in lines[-2]


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


def test_demo_shows_stages_and_epochs_only_when_asked_or_on_a_terminal(tmp_path):
    args = ["demo", "-o", str(tmp_path / "out"), "--epochs", "2", "--compress-epochs", "0"]
    shown = CliRunner().invoke(cli, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    assert "Training a small CNN" in shown.stderr and "  epoch 2/2: loss " in shown.stderr
    quiet = CliRunner().invoke(cli, args)  # CliRunner's stderr is not a terminal
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
