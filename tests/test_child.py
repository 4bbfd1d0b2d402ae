"""The child-process protocol of `converters._child`, on real child processes."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
from pathlib import Path

import pytest

from converters import _child

# A child script run by path, as the GPU and benchmark children are: it loads
# `converters/_child.py` by path (no `converters` package on its path) and
# serves one request whose `do` field says what to do.
_SCRIPT = textwrap.dedent(
    """
    import importlib.util, os, signal, sys, time
    spec = importlib.util.spec_from_file_location("converters_child", {path!r})
    child = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(child)

    def handle(req):
        assert "converters" not in sys.modules and "numpy" not in sys.modules
        print("some log on stdout")
        print("native library says hello", file=sys.stderr)
        if req["do"] == "reply":
            return {{"twice": req["x"] * 2, "pythonpath": os.environ.get("PYTHONPATH")}}
        if req["do"] == "user-error":
            raise child.ChildError("InputDataError", "the inputs have 3 columns, not 4")
        if req["do"] == "bug":
            return {{}}["missing"]
        if req["do"] == "segv":
            print("about to crash", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSEGV)
        if req["do"] == "exit":
            sys.exit(3)
        if req["do"] == "hang":
            time.sleep(60)

    sys.exit(child.serve(handle, sys.argv, what="the test child"))
    """
)


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("child") / "child_script.py"
    path.write_text(_SCRIPT.format(path=_child.__file__))
    return path


def _run(script: Path, request: dict, *, timeout: float = 60.0, env=None) -> _child.ChildRun:
    return _child.run_child(
        _child.python_command(str(script)),
        request=request,
        env=env if env is not None else _child.child_env(project_path=False),
        timeout=timeout,
        name="test-child",
    )


def test_a_child_that_replies(script):
    run = _run(script, {"do": "reply", "x": 21})
    assert run.reply == {"twice": 42, "pythonpath": None}
    assert run.returncode == 0 and run.seconds > 0
    assert "native library says hello" in run.stderr
    # The log on stdout does not disturb the reply line.
    assert "some log on stdout" in run.stdout


def test_the_environment_rules():
    base = {"PYTHONPATH": "/elsewhere", "HOME": "/h"}
    dropped = _child.child_env(base, project_path=False)
    assert "PYTHONPATH" not in dropped and dropped["TF_CPP_MIN_LOG_LEVEL"] == "2"
    kept = _child.child_env(dict(base, TF_CPP_MIN_LOG_LEVEL="0"), project_path=True)
    root = str(Path(_child.__file__).resolve().parents[1])
    assert kept["PYTHONPATH"].split(os.pathsep) == [root, "/elsewhere"]
    assert kept["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert _child.python_command("x.py", "a")[1:] == ["-s", "x.py", "a"]


def test_a_child_that_raises_a_user_error(script):
    with pytest.raises(_child.ChildFailed) as info:
        _run(script, {"do": "user-error"})
    assert info.value.kind == "InputDataError"
    assert info.value.message == "the inputs have 3 columns, not 4"
    assert info.value.traceback is None and info.value.seconds > 0
    assert "native library says hello" in info.value.stderr


def test_a_bug_in_the_child_keeps_its_traceback_in_a_named_file(script, tmp_path):
    with pytest.raises(_child.ChildFailed) as info:
        _run(script, {"do": "bug", "traceback_dir": str(tmp_path)})
    assert info.value.kind == _child.INTERNAL
    assert info.value.message == "the test child failed: KeyError: 'missing'"
    path = Path(info.value.traceback)
    assert path.parent == tmp_path
    text = path.read_text()
    assert "Traceback" in text and "KeyError" in text and '"do": "bug"' in text


def test_a_child_killed_by_a_signal_is_named_and_its_log_kept(script):
    with pytest.raises(_child.ChildCrashed) as info:
        _run(script, {"do": "segv"})
    e = info.value
    assert e.returncode == -signal.SIGSEGV and e.signal == "SIGSEGV"
    assert e.how == "crashed (SIGSEGV)" and str(e).startswith("crashed (SIGSEGV): ")
    assert "about to crash" in e.tail
    assert e.log is not None and e.log in str(e)
    try:
        assert "about to crash" in Path(e.log).read_text()
    finally:
        os.unlink(e.log)


def test_a_child_that_exits_without_a_reply(script):
    with pytest.raises(_child.ChildCrashed) as info:
        _run(script, {"do": "exit"})
    assert info.value.how == "exited with code 3" and info.value.signal is None
    os.unlink(info.value.log)


def test_a_child_that_overruns_its_timeout_is_killed(script):
    with pytest.raises(_child.ChildTimeout, match="did not finish within 2 s"):
        _run(script, {"do": "hang"}, timeout=2.0)


def test_framing_takes_the_last_reply_line_only():
    text = "log\n" + _child.encode({"a": 1}) + "more log\n" + _child.encode({"a": 2}) + "tail\n"
    assert _child.decode(text) == {"a": 2}
    assert _child.decode("no reply here\n") is None
    line = _child.encode({"event": "ready"})
    assert line.endswith("\n") and json.loads(line[len(_child.REPLY_MARK):]) == {"event": "ready"}


def test_every_child_uses_the_shared_protocol():
    root = Path(_child.__file__).resolve().parents[1]
    # No private reply markers or stdout parsing outside converters/_child.py ...
    pattern = re.compile(r"RESULT_MARK|@@[\w-]+-result@@|json\.loads\([^)]*stdout")
    own = sorted(
        str(p.relative_to(root))
        for package in ("converters", "tflight")
        for p in (root / package).rglob("*.py")
        if p.name != "_child.py" and pattern.search(p.read_text())
    )
    assert own == [], own
    # ... and each child and each caller goes through it.
    for name in ("converters/verify.py", "converters/_worker.py", "converters/_isolate.py",
                 "converters/gpu.py", "converters/_gpu_child.py", "tflight/bench/_runner.py",
                 "tflight/bench/child.py", "tflight/bench/arm64.py", "tflight/bench/emulator.py"):
        assert "_child." in (root / name).read_text(), name
