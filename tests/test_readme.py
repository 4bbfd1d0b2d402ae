"""The README's Python code runs as written.

Every ```python block of README.md is run, in order and in one fresh Python
process (the blocks share their names, as in a session), from an empty
folder, exactly as written (the README keeps its training short).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)


def _python_blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks_without_placeholders():
    blocks = _python_blocks()
    assert blocks, "README.md has no ```python block"
    for block in blocks:
        # `model = ...` or `compile={...}` would run as nonsense: a block shows runnable code.
        elided = [ln for ln in block.splitlines() if "..." in ln.split("#", 1)[0]]
        assert not elided, f"README.md elides code in a python block: {elided}"


def test_the_readme_python_blocks_run(tmp_path):
    code = "\n\n".join(_python_blocks())
    script = tmp_path / "readme_blocks.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )
    assert proc.returncode == 0, f"README code failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    # What the README says it writes is there.
    for name in ("model_int8.tflite", "model_fp32.tflite", "model_mixed.tflite",
                 "model_int4.tflite", "student.keras"):
        assert (tmp_path / name).is_file(), name
    # The first line printed is the int8 validation, which passes.
    assert proc.stdout.splitlines()[0].startswith("ok"), proc.stdout[:500]
