"""Output files: ordinary permissions, atomic, never over an input."""

from __future__ import annotations

import os
import stat

import pytest

from converters.errors import ConversionError
from converters.files import check_output, default_file_mode, write_atomic


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_new_file_gets_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "m.tflite", b"abc")
        with open(tmp_path / "plain", "w"):
            pass
        expected = _mode(tmp_path / "plain")
        assert default_file_mode() == expected
    finally:
        os.umask(old)
    assert _mode(tmp_path / "m.tflite") == expected
    assert (tmp_path / "m.tflite").read_bytes() == b"abc"


def test_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)
    write_atomic(path, b"new")
    assert _mode(path) == 0o640
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temporary left


def test_output_that_is_an_input_is_refused(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model")
    link = tmp_path / "link.keras"
    link.symlink_to(model)
    hard = tmp_path / "hard.keras"
    os.link(model, hard)
    (tmp_path / "sub").mkdir()
    for out in (model, link, hard, tmp_path / "sub" / ".." / "m.keras"):
        with pytest.raises(ConversionError, match="would destroy it"):
            check_output(out, [model])
    assert model.read_bytes() == b"model"


def test_output_inside_an_input_directory_is_refused(tmp_path):
    saved = tmp_path / "saved_model"
    saved.mkdir()
    with pytest.raises(ConversionError, match="inside the input directory"):
        check_output(saved / "m.tflite", [saved])


def test_output_checks_do_not_refuse_good_paths(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"model")
    assert check_output(tmp_path / "new" / "m.tflite", [model, None]).name == "m.tflite"


def test_unwritable_folder_is_refused_before_work(tmp_path):
    # /proc refuses new files even to root, for whom a read-only chmod means nothing.
    with pytest.raises(ConversionError, match="cannot create files"):
        check_output("/proc/self/m.tflite", [])
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(ConversionError, match="cannot create files"):
                check_output(locked / "m.tflite", [])
    finally:
        os.chmod(locked, 0o700)


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    with pytest.raises(ConversionError, match="not a directory"):
        check_output(tmp_path / "afile" / "m.tflite", [])
