"""Exit codes at the command line's one boundary: 2 for the user's mistakes, 1 for ours.

The boundary (`tflight.cli._Group`) classifies by exception type and fields
(`internal`), never by message text: a native converter crash and a bridge
failure on a built-in layer are ours (exit 1, "internal error", the log path);
a library error a user can fix is theirs (exit 2, one `Error:` line).
"""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from converters import errors as cerrors
from converters._worker import CRASH_HOOK
from tflight import errors as terrors
from tflight.cli import _Group, _is_user_error, cli, exit_code_for


def _group_raising(exc: BaseException) -> click.Group:
    @click.group(cls=_Group)
    def g() -> None:
        pass

    @g.command()
    def go() -> None:
        raise exc

    return g


@pytest.mark.parametrize(
    "exc, code",
    [
        (terrors.CompressionError("sparsity must be in [0, 1)", option="sparsity"), 2),
        (terrors.BridgeError("layer 'x' (MyLayer) is not registered", layer="x"), 2),
        (cerrors.ModelLoadError("no such file: m.keras"), 2),
        (cerrors.ConverterCrashError("The converter process crashed (SIGSEGV)"), 1),
        (terrors.BridgeInternalError("tf_keras could not rebuild layer 'd'", layer="d"), 1),
        (terrors.InternalError("a bug"), 1),
        (ValueError("a plain bug of ours"), 1),
    ],
)
def test_boundary_exit_codes(exc, code, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(_group_raising(exc), ["go"])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    if code == 1:
        assert "internal error" in lines[0]
        log = next(tmp_path.glob("tflight-error-*.log"))
        assert log.as_posix() in lines[0]
        assert type(exc).__name__ in log.read_text()
    else:
        assert "internal error" not in lines[0]
        assert not list(tmp_path.glob("tflight-error-*.log"))


def test_classification_reads_fields_not_text():
    # The same words, different fields: only the type/field decides.
    assert _is_user_error(cerrors.ConversionError("The converter process crashed"))
    assert not _is_user_error(cerrors.ConverterCrashError("Shape mismatch in your data"))
    crash = cerrors.ConverterCrashError("crashed")
    crash.mode = "int8"
    user = cerrors.ValidationError("SNR too low")
    partial = cerrors.PartialConversionError({}, {"int8": crash, "fp16": user})
    assert partial.internal and exit_code_for(list(partial.failures.values())) == 1
    assert exit_code_for([user]) == 2


def test_native_converter_crash_exits_1_with_the_log(tmp_path, monkeypatch):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / "m.keras"
    model.save(path)
    # The converter child calls os.abort() (a real native crash) when it starts fp16.
    monkeypatch.setenv(CRASH_HOOK, "fp16")
    result = CliRunner().invoke(cli, ["convert", str(path), "-o", str(tmp_path / "o.tflite"),
                                      "-m", "fp16"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "internal error" in last
    assert "Converter log: " in last
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.tflite").exists()
