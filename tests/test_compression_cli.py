"""`tflight compress` through click's CliRunner: real models, real files, exit codes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits, keras3_cnn):
    root = tmp_path_factory.mktemp("compress")
    model_path = root / "cnn.keras"
    keras3_cnn.save(model_path)
    data_path = root / "train.npz"
    np.savez(data_path, x=digits.x_train[:320], y=digits.y_train[:320])
    return root, str(model_path), str(data_path)


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_compress_pqat_writes_a_verified_tflite(files):
    import converters

    root, model, data = files
    out = root / "pqat.tflite"
    result = _run(
        "compress",
        model,
        "--data",
        data,
        "--technique",
        "pqat",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--min-agreement",
        "0.95",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "Prune()" in result.output and "QAT() preserving sparsity" in result.output
    sparsity = re.search(r"sparsity: ([0-9.]+)%", result.output)
    assert sparsity and 48.0 <= float(sparsity.group(1)) <= 52.0, result.output  # 50 % target
    assert "top-1 agreement" in result.output
    report = converters.inspect(str(out))
    # QAT then int8 conversion: the weights of the convolution are int8.
    assert report.stats.op_dtypes["CONV_2D"].get("int8", 0) >= 1, report.stats.op_dtypes


def test_compress_bad_inputs_exit_2_without_traceback(files, tmp_path):
    root, model, data = files
    out = str(tmp_path / "x.tflite")
    missing = _run("compress", model, "--data", str(tmp_path / "nope.npz"), "--out", out)
    assert missing.exit_code == 2
    assert "Error: Data file" in missing.output and "does not exist" in missing.output

    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((4, 8, 8, 1)))
    no_y = _run("compress", model, "--data", str(bad), "--out", out)
    assert no_y.exit_code == 2 and "has no array `x` (found: ['inputs'])" in no_y.output

    bad_model = _run("compress", str(tmp_path / "m.keras"), "--data", data, "--out", out)
    assert bad_model.exit_code == 2 and "does not exist" in bad_model.output

    bad_sparsity = _run("compress", model, "--data", data, "--sparsity", "1.5", "--out", out)
    assert bad_sparsity.exit_code == 2
    assert "`sparsity` must be a fraction in (0, 1), got 1.5" in bad_sparsity.output

    bad_choice = _run("compress", model, "--data", data, "--technique", "zip", "--out", out)
    assert bad_choice.exit_code == 2 and "'zip' is not one of" in bad_choice.output

    assert "Traceback" not in missing.output + no_y.output + bad_sparsity.output
    assert not (tmp_path / "x.tflite").exists()  # nothing half-written
