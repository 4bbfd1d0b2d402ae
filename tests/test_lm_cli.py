"""`tflight convert-lm`, `tflight generate` and `tflight bench` on LM files, through CliRunner."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli

keras_hub = pytest.importorskip("keras_hub")


@pytest.fixture(scope="session")
def lm_files(tmp_path_factory):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=256, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=64, dropout=0.0)
    lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    d = tmp_path_factory.mktemp("lmcli")
    lm.save(d / "lm.keras")
    text = d / "heldout.txt"
    text.write_bytes(b"Return the sum of the values; raise ValueError if empty. " * 4)
    r = CliRunner().invoke(cli, ["convert-lm", str(d / "lm.keras"), "-o", str(d / "lm.tflite"),
                                 "--max-length", "48", "--prefill", "16", "--eval-text",
                                 str(text), "--json", str(d / "lm.json")])
    assert r.exit_code == 0, r.output
    return d, r.output


def test_convert_lm_writes_verified_file(lm_files):
    d, output = lm_files
    assert "greedy match 100.0%" in output and "held-out text" in output
    data = json.loads((d / "lm.json").read_text())
    assert data["verification"]["greedy_match"] == 1.0
    assert data["prefill_lengths"] == [16]


def test_generate_prints_tokens_and_speeds(lm_files):
    d, _ = lm_files
    r = CliRunner().invoke(cli, ["generate", str(d / "lm.tflite"), "--prompt", "1,2,3",
                                 "--token-ids", "--max-new-tokens", "5"])
    assert r.exit_code == 0, r.output
    ids = r.stdout.split("\n")[0].split()
    assert len(ids) == 5 and all(0 <= int(t) < 256 for t in ids)
    assert "decode: 4 tokens at" in r.output
    text = CliRunner().invoke(cli, ["generate", str(d / "lm.tflite"), "--prompt", "def f",
                                    "--sampler", "top_k", "--top-k", "3", "--seed", "1",
                                    "--max-new-tokens", "6"])
    assert text.exit_code == 0, text.output


@pytest.mark.parametrize("args, message", [
    (["--prompt", "x" * 60], "--prompt: the prompt (60 tokens) plus 64 new tokens exceeds"),
    (["--prompt", "1,999", "--token-ids"], "token id 999 is outside the vocabulary"),
    (["--prompt", "a,b", "--token-ids"], "is not comma-separated token ids"),
    (["--prompt", "hi", "--temperature", "0"], "temperature must be > 0"),
])
def test_generate_user_errors(lm_files, args, message):
    d, _ = lm_files
    r = CliRunner().invoke(cli, ["generate", str(d / "lm.tflite"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_convert_lm_user_errors(lm_files, tmp_path):
    d, _ = lm_files
    r = CliRunner().invoke(cli, ["convert-lm", str(d / "lm.keras"), "-o", str(tmp_path / "x.tflite"),
                                 "--max-length", "500"])
    assert r.exit_code == 2 and "--max-length" in r.output and "max_sequence_length=64" in r.output
    r = CliRunner().invoke(cli, ["convert-lm", str(d / "lm.keras"), "-o", str(d / "lm.keras"),
                                 "--max-length", "32"])
    assert r.exit_code == 2 and "would destroy" in r.output
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    seq.save(tmp_path / "plain.keras")
    r = CliRunner().invoke(cli, ["convert-lm", str(tmp_path / "plain.keras"), "-o",
                                 str(tmp_path / "y.tflite"), "--max-length", "32"])
    assert r.exit_code == 2 and "no call_with_cache" in r.output
    assert not (tmp_path / "y.tflite").exists()


def test_bench_learns_lm_files(lm_files):
    d, _ = lm_files
    r = CliRunner().invoke(cli, ["bench", str(d / "lm.tflite"), "--json"])
    assert r.exit_code == 0, r.output
    (row,) = json.loads(r.stdout)
    assert row["decode_tokens_per_second"] > 0 and row["time_to_first_token_ms"] > 0
    assert row["peak_memory_mb"] > 0 and row["new_tokens"] == 36 and row["prompt_tokens"] == 12
    assert np.isfinite(row["prefill_tokens_per_second"])


def test_bench_lm_file_on_emulated_arm64(lm_files):
    """The LM benchmark child runs under the emulated ARM64 device (set up on first use)."""
    d, _ = lm_files
    r = CliRunner().invoke(cli, ["bench", str(d / "lm.tflite"), "--device", "arm64"])
    assert r.exit_code == 0, r.output
    assert "emulated ARM64, qemu wall time" in r.output and "decode" in r.output
