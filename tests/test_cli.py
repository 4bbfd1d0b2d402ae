"""The `tflight` command as a user runs it: fast `--help`, quiet native logs, clear errors.

Everything here runs the command in a fresh Python process, because what is
checked (which modules get imported, what reaches file descriptor 2) is
process-wide state.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lines TensorFlow / LiteRT / the MLIR converter write from C++ straight to fd 2.
NATIVE_MARKERS = (
    "cudart_stub.cc",
    "All log messages before absl::InitializeLog()",
    "cpu_feature_guard.cc",
    "fully_quantize:",
    "Created TensorFlow Lite XNNPACK delegate",
    "I0000 ",
)
HEAVY = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "ai_edge_litert")

# A throw-away command registered on the real group, run through the real `main()`.
_PROBE = r"""
import os, sys, warnings
import click
from tflight.cli import cli, main

@cli.command("probe")
@click.option("--fail", is_flag=True)
@click.option("--warn", is_flag=True)
@click.option("--crash", is_flag=True)
def probe(fail, warn, crash):
    click.echo("result on stdout")
    click.echo("progress on stderr", err=True)
    os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] native chatter\n")
    click.echo("TF_CPP_MIN_LOG_LEVEL=" + os.environ.get("TF_CPP_MIN_LOG_LEVEL", "<unset>"))
    if warn:
        from converters.errors import ConversionWarning
        from tflight.errors import TflightWarning
        third_party = [
            ("    Warning: tf.lite.Interpreter is deprecated and is scheduled for deletion",
             UserWarning, "tensorflow.lite.python.interpreter"),
            ("Statistics for quantized inputs were expected, but not specified; continuing "
             "anyway.", UserWarning, "tensorflow.lite.python.convert"),
            ("distutils Version classes are deprecated. Use packaging.version instead.",
             DeprecationWarning, "tensorflow_model_optimization"),
        ]
        for i, (msg, cat, mod) in enumerate(third_party):
            warnings.warn_explicit(msg, cat, mod.replace(".", "/") + ".py", 10 + i, module=mod)
        warnings.warn("our own tflight warning", TflightWarning)
        warnings.warn("our own conversion warning", ConversionWarning)
    if fail:
        raise RuntimeError("a genuine bug")
    if crash:
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)

main(sys.argv[1:])
"""


def _run(args, *, code=None, tmp_path, extra_env=None, timeout=300):
    """Runs `tflight ARGS` (or CODE with ARGS) in a fresh process with TMPDIR in tmp_path."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TFLIGHT_VERBOSE",)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.update(PYTHONPATH=str(ROOT), TMPDIR=str(tmp), **(extra_env or {}))
    code = code or "import sys; from tflight.cli import main; main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def _native_logs(tmp_path):
    return sorted((tmp_path / "tmp").glob("tflight-native-*"))


def test_help_imports_no_tensorflow():
    code = textwrap.dedent(
        f"""
        import json, sys
        from click.testing import CliRunner
        from tflight.cli import cli
        runner = CliRunner()
        names = ["--help"] + [[c, "--help"] for c in sorted(cli.commands)]
        for args in names:
            result = runner.invoke(cli, args if isinstance(args, list) else [args])
            assert result.exit_code == 0, (args, result.output)
            assert "Usage:" in result.output
        print(json.dumps(sorted(cli.commands)))
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    commands, heavy = proc.stdout.strip().splitlines()
    assert {"convert", "inspect", "bench"} <= set(json.loads(commands))
    assert json.loads(heavy) == []


def test_help_through_main_is_clean(tmp_path):
    proc = _run(["--help"], tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: tflight")
    assert proc.stderr == ""
    assert _native_logs(tmp_path) == []


def test_native_output_goes_to_a_log_that_is_deleted_on_success(tmp_path):
    proc = _run(["probe"], code=_PROBE, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["result on stdout", "TF_CPP_MIN_LOG_LEVEL=2"]
    assert proc.stderr == "progress on stderr\n"
    assert _native_logs(tmp_path) == []


def test_user_log_level_is_respected(tmp_path):
    proc = _run(["probe"], code=_PROBE, tmp_path=tmp_path,
                extra_env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "TF_CPP_MIN_LOG_LEVEL=0" in proc.stdout


def test_verbose_env_keeps_native_output(tmp_path):
    proc = _run(["probe"], code=_PROBE, tmp_path=tmp_path, extra_env={"TFLIGHT_VERBOSE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "cudart_stub.cc:31] native chatter" in proc.stderr
    assert "progress on stderr" in proc.stderr
    assert _native_logs(tmp_path) == []


def test_genuine_bug_is_an_internal_error_with_its_traceback_in_the_kept_log(tmp_path):
    proc = _run(["probe", "--fail"], code=_PROBE, tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "progress on stderr" in proc.stderr
    assert "Traceback" not in proc.stderr and "native chatter" not in proc.stderr
    (log,) = _native_logs(tmp_path)
    lines = proc.stderr.splitlines()
    assert lines[-1] == (
        "Error: internal error in tflight (RuntimeError: a genuine bug). This is a bug, not a "
        f"mistake of yours; the full traceback is in {log} (please attach it to a bug report)."
    )
    text = log.read_text()
    assert "cudart_stub.cc:31] native chatter" in text
    assert "Traceback (most recent call last)" in text
    body, ended = text.rstrip().rsplit("\n", 1)
    assert body.rstrip().endswith("RuntimeError: a genuine bug")
    assert ended == "tflight: this run ended with exit code 1"
    # A later run leaves it where the Error: line said, and does not call it a crash.
    again = _run(["probe"], code=_PROBE, tmp_path=tmp_path)
    assert again.stderr == "progress on stderr\n"
    assert _native_logs(tmp_path) == [log] and log.read_text() == text


def test_log_is_kept_and_named_after_any_failed_exit(tmp_path):
    code = _PROBE.replace('raise RuntimeError("a genuine bug")', "sys.exit(3)")
    proc = _run(["probe", "--fail"], code=code, tmp_path=tmp_path)
    assert proc.returncode == 3
    (log,) = _native_logs(tmp_path)
    assert proc.stderr.splitlines()[-1] == f"tflight: the log of this run is kept in {log}"


def test_log_of_a_crashed_run_is_named_by_the_next_run(tmp_path):
    crashed = _run(["probe", "--crash"], code=_PROBE, tmp_path=tmp_path)
    assert crashed.returncode == -11, crashed.stderr
    (log,) = _native_logs(tmp_path)
    assert "Fatal Python error: Segmentation fault" in log.read_text()
    proc = _run(["probe"], code=_PROBE, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _native_logs(tmp_path) == []
    (kept,) = (tmp_path / "tmp").glob("tflight-crashed-*.log")
    assert "cudart_stub.cc:31] native chatter" in kept.read_text()
    assert proc.stderr.splitlines()[0] == (
        f"tflight: an earlier run (process {log.name.split('-')[2]}) ended abruptly (crash or "
        f"kill); its native log is kept in {kept}"
    )
    again = _run(["probe"], code=_PROBE, tmp_path=tmp_path)
    assert again.stderr == "progress on stderr\n"  # named once


def test_internal_error_in_the_model_loader_is_not_blamed_on_the_user(tmp_path, monkeypatch):
    """A failure of ours while loading a valid file: exit 1, 'internal error', a log."""
    import tempfile

    import tf_keras
    from click.testing import CliRunner

    from tflight import _io
    from tflight.cli import cli

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    path = tmp_path / "m.h5"
    model.save(path)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 4), "float32"), y=np.zeros(8, "int64"))

    @contextlib.contextmanager
    def broken_scope():
        raise AttributeError("'NoneType' object has no attribute 'keras'")
        yield

    monkeypatch.setattr(_io, "tfmot_scope", broken_scope)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(
        cli, ["compress", str(path), "--data", str(data), "-o", str(tmp_path / "o.tflite")]
    )
    assert result.exit_code == 1, result.output
    (line,) = result.output.splitlines()
    assert line.startswith("Error: internal error in tflight (AttributeError: ")
    (log,) = tmp_path.glob("tflight-error-*.log")
    assert f"the full traceback is in {log}" in line
    assert "broken_scope" in log.read_text()
    # The same file with the loader intact is the user's good model, not an error.
    monkeypatch.undo()
    assert _io.load_model(path).count_params() == 10


def test_third_party_warnings_are_hidden_ours_are_not(tmp_path):
    # -W default would show every warning, DeprecationWarnings included.
    proc = _run(["probe", "--warn"], code=_PROBE, tmp_path=tmp_path,
                extra_env={"PYTHONWARNINGS": "default"})
    assert proc.returncode == 0, proc.stderr
    assert "TflightWarning: our own tflight warning" in proc.stderr
    assert "ConversionWarning: our own conversion warning" in proc.stderr
    for hidden in ("tf.lite.Interpreter is deprecated", "Statistics for quantized inputs",
                   "distutils Version classes"):
        assert hidden not in proc.stderr


def test_user_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip archive")
    proc = _run(["convert", bad, "-o", tmp_path / "out.tflite"], tmp_path=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "bad.keras" in lines[0]
    assert proc.stdout == ""
    assert not (tmp_path / "out.tflite").exists()
    assert _native_logs(tmp_path) == []


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("cli") / "tiny.keras"
    inp = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu")(inp)
    keras.Model(inp, keras.layers.Dense(4)(x)).save(path)
    calib = path.with_name("calib.npy")
    np.save(calib, np.random.default_rng(0).random((32, 8), dtype=np.float32))
    return path, calib


@pytest.mark.slow
def test_real_convert_is_quiet(tiny_model, tmp_path):
    model, calib = tiny_model
    proc = _run(["convert", model, "-o", tmp_path / "out", "-m", "fp32,int8", "-c", calib],
                tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for marker in NATIVE_MARKERS:
        assert marker not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    header, rule, *lines = proc.stdout.splitlines()
    assert header.split()[:2] == ["mode", "size"]
    assert re.fullmatch(r"[- ]+", rule)
    rows, notes = lines[:2], lines[2:]
    assert [r.split()[0] for r in rows] == ["fp32", "int8"]
    assert all("ok (SNR" in r for r in rows)
    # A 212-parameter model: int8's scales and quantize steps outweigh its weights,
    # and the table is followed by one note saying so, nothing else.
    sizes = {m: (tmp_path / "out" / f"tiny_{m}.tflite").stat().st_size for m in ("fp32", "int8")}
    expected = ["note: int8 is not smaller than fp32"] if sizes["int8"] >= sizes["fp32"] else []
    assert [n[: len("note: int8 is not smaller than fp32")] for n in notes] == expected
    assert (tmp_path / "out" / "tiny_int8.tflite").read_bytes()[4:8] == b"TFL3"
    assert _native_logs(tmp_path) == []


@pytest.mark.slow
def test_real_distill_is_quiet_and_leaves_no_log(tmp_path, digits):
    import keras

    teacher_path, student_path = tmp_path / "teacher.keras", tmp_path / "student.keras"
    for path, width in ((teacher_path, 16), (student_path, 2)):
        keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(width, 3),
                          keras.layers.Flatten(), keras.layers.Dense(10)]).save(path)
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:64], y=digits.y_train[:64])
    proc = _run(["distill", "--teacher", teacher_path, "--student", student_path, "--data", data,
                 "--epochs", "1", "-o", tmp_path / "out.keras"], tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no CUDA probe, no Keras shuffle warning, no progress when piped
    assert "Wrote" in proc.stdout
    assert _native_logs(tmp_path) == []


def test_an_os_error_on_a_users_path_is_the_users_problem():
    from click.testing import CliRunner

    import tflight.cli as cli_module

    @cli_module.cli.command("write-probe")
    def write_probe():
        # A path outside the temporary folder and our package: the user's.
        open("/proc/no/such/dir/f.txt", "w")  # noqa: SIM115

    try:
        result = CliRunner().invoke(cli_module.cli, ["write-probe"])
    finally:
        cli_module.cli.commands.pop("write-probe")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: [Errno 2] No such file or directory: ")
    assert "internal error" not in result.output


@pytest.mark.parametrize("level, quiet", [("2", True), ("0", False)])
def test_tensorflow_python_warnings_follow_the_cpp_log_level(level, quiet):
    """The command sets TF_CPP_MIN_LOG_LEVEL=2 first; TensorFlow's Python loggers follow it.

    (They print retracing notices when a search calls `predict` in a loop.)
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": level}
    env.pop("TFLIGHT_VERBOSE", None)
    proc = subprocess.run(
        [sys.executable, "-c", "import logging, tflight._keras as k; "
         "print(k.tf.get_logger().level == logging.ERROR)"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(quiet)
