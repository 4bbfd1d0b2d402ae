"""`tflight.optimize`: the search end to end on a tiny CNN and real digits.

Real TensorFlow, LiteRT and TF-MOT throughout; the search is limited to a few
candidates (`techniques=`) so that it fits in CI time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FEW = ("int8", "dynamic", "channels60-int8")


@pytest.fixture(scope="module")
def searched(tmp_path_factory, keras3_cnn, digits):
    """One search with clean test labels and one with poisoned test labels."""
    from tflight.optimization import optimize

    train, val = (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
    clean_dir = tmp_path_factory.mktemp("clean")
    clean = optimize(keras3_cnn, train, val, test_data=(digits.x_train[:200],
                                                         digits.y_train[:200]),
                     max_drop=3.0, techniques=FEW, epochs=2, output_dir=clean_dir)
    poisoned_dir = tmp_path_factory.mktemp("poisoned")
    wrong = (digits.y_train[:200] + 1) % 10  # every test label wrong
    poisoned = optimize(keras3_cnn, train, val, test_data=(digits.x_train[:200], wrong),
                        max_drop=3.0, techniques=FEW, epochs=2, output_dir=poisoned_dir,
                        measure_host=False)
    return clean, clean_dir, poisoned


@pytest.mark.slow
def test_the_search_finishes_and_the_chosen_file_is_reverified(searched, digits):
    import converters

    result, out, _ = searched
    assert result.met and result.winner is not None, result.verdict
    assert [c.name for c in result.candidates] == list(FEW)
    assert result.winner.validation.drop_bound_pt <= 3.0
    path = out / "model.tflite"
    assert result.files["chosen model"] == str(path) and path.is_file()
    # Re-verified here too, from the file alone, against the search's figures.
    logits = converters.TFLiteModel(str(path)).predict(digits.x_test)
    accuracy = float(np.mean(np.argmax(logits, -1) == digits.y_test))
    assert accuracy == pytest.approx(result.winner.validation.accuracy, abs=1e-9)
    assert result.reverified["matches_search"] is True
    # A post-training candidate computes what the source model does; a retrained
    # one (channel pruning + fine-tuning) is its own model, judged by accuracy.
    agreement = result.reverified["top1_agreement_with_source_keras"]
    int8 = next(c for c in result.candidates if c.name == "int8")
    if result.winner.spec["kind"] == "ptq":
        assert agreement > 0.95
    else:
        assert 0.0 < agreement <= 1.0
        assert result.winner.validation.accuracy >= int8.validation.accuracy - 0.03
    report = json.loads((out / "report.json").read_text())
    assert report["met"] is True and report["winner"]["spec"]["name"] == result.winner.name
    assert report["test"]["split"] == "test" and report["test"]["samples"] == 200
    assert result.commands and result.commands[0].startswith("tflight ")
    for c in result.candidates:
        assert c.status in ("measured", "skipped", "failed")
        assert c.status == "measured" or c.reason, c


@pytest.mark.slow
def test_selection_never_reads_the_test_split(searched):
    clean, _, poisoned = searched
    assert poisoned.winner.name == clean.winner.name
    for a, b in zip(clean.candidates, poisoned.candidates, strict=True):
        assert a.status == b.status and a.meets == b.meets, (a.name, b.name)
        if a.status == "measured":
            assert a.validation == b.validation
    # The poisoned labels are seen, once, by the test measurement only.
    assert poisoned.test.baseline_accuracy < clean.test.baseline_accuracy - 0.2
    assert poisoned.test.accuracy < clean.test.accuracy - 0.2


@pytest.mark.slow
def test_a_budget_no_candidate_meets_is_reported_missed(searched, keras3_cnn, digits,
                                                         tmp_path):
    from tflight.optimization import optimize

    _, clean_dir, _ = searched
    result = optimize(keras3_cnn, (digits.x_train, digits.y_train),
                      (digits.x_test, digits.y_test),
                      test_data=(digits.x_train[:200], digits.y_train[:200]), max_drop=3.0,
                      techniques=FEW, epochs=2, latency_budget_ms=1e-6, output_dir=tmp_path,
                      cache_dir=clean_dir / ".cache")
    assert not result.met and result.winner is None
    assert result.best_missed is not None
    assert result.verdict.startswith("MISSED") and "over the latency budget" in result.verdict
    assert not any(c.meets for c in result.candidates)
    assert not (tmp_path / "model.tflite").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["met"] is False and report["winner"] is None


@pytest.mark.slow
def test_an_interrupted_search_resumes_without_repeating_finished_candidates(
        keras3_cnn, digits, tmp_path):
    from tflight.optimization import optimize

    args = dict(max_drop=3.0, techniques=("int8", "dynamic", "fp16"), output_dir=tmp_path,
                measure_host=False)
    data = ((digits.x_train, digits.y_train), (digits.x_test, digits.y_test))

    def stop_at_the_third(line: str) -> None:
        if line.startswith("[3/3] fp16: building"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        optimize(keras3_cnn, *data, progress=stop_at_the_third, **args)
    lines: list[str] = []
    result = optimize(keras3_cnn, *data, progress=lines.append, **args)
    text = "\n".join(lines)
    assert "[1/3] int8: from the cache" in text and "[2/3] dynamic: from the cache" in text
    assert "int8: building" not in text and "dynamic: building" not in text
    assert "[3/3] fp16: building" in text
    assert [c.cached for c in result.candidates] == [True, True, False]


def test_bad_inputs_are_refused_before_any_training(keras3_cnn, digits, tmp_path):
    from tflight.optimization import OptimizeError, optimize

    train, val = (digits.x_train, digits.y_train), (digits.x_test, digits.y_test)
    cases = [
        (dict(train_data=(digits.x_train[:, :4, :4], digits.y_train)), "shape"),
        (dict(train_data=(digits.x_train, digits.y_train + 5)), "classes"),
        (dict(max_drop=0.1), "3688"),
        (dict(device="pixel9"), "Unknown device"),
        (dict(output_dir=None, objective="speed"), "objective"),
    ]
    for extra, words in cases:
        kwargs = {"train_data": train, "validation_data": val, "output_dir": tmp_path / "o"}
        kwargs.update(extra)
        with pytest.raises(OptimizeError, match=words):
            optimize(keras3_cnn, **kwargs)


@pytest.mark.slow
def test_tf_mot_candidates_under_a_strategy_say_which_technique_and_why(keras3_cnn, digits):
    import tensorflow as tf

    from tflight.optimization import optimize

    result = optimize(keras3_cnn, (digits.x_train, digits.y_train),
                      (digits.x_test, digits.y_test), max_drop=3.0, techniques=("qat-int8",),
                      strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), measure_host=False)
    (c,) = result.candidates
    assert c.status == "failed"
    assert "qat-int8 cannot train under OneDeviceStrategy" in c.reason
    assert "not mirrored" in c.reason


_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import keras
    import tensorflow as tf

    # Before anything else touches TensorFlow's context (collectives are set at start-up).
    strategy = (tf.distribute.MultiWorkerMirroredStrategy()
                if os.environ.get("TF_CONFIG") else None)
    from tflight.datasets import load_digits
    from tflight.optimization import training
    from tflight.shrink import prune_channels

    d = load_digits(seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)),
                              keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)])
    small = prune_channels(model, ratio=0.5).model
    tuned = training.fit(small, d.x_train[:512], d.y_train[:512], epochs=2, batch_size=32,
                         strategy=strategy, seed=0)
    np.savez(sys.argv[1], *tuned.get_weights())
    """
)


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_fine_tuning_on_two_workers_matches_one(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"w{i}.npz")],
            env={**env, "TF_CONFIG": json.dumps(config)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    single = subprocess.run([sys.executable, str(script), str(tmp_path / "one.npz")], env=env,
                            capture_output=True, text=True, timeout=600, check=False)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert single.returncode == 0, single.stderr[-3000:]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    one = np.load(tmp_path / "one.npz")
    for i in range(2):
        two = np.load(tmp_path / f"w{i}.npz")
        for key in one.files:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-3, atol=1e-4)
    untrained_gap = max(float(np.abs(one[k]).max()) for k in one.files)
    assert untrained_gap > 0


def _chromium() -> str:
    """Debian's chromium, installed the first time (as root) like the Vulkan driver set-up."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed and apt-get cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        if proc.returncode != 0:
            text = (proc.stdout + proc.stderr).lower()
            if any(w in text for w in ("temporary failure resolving", "could not resolve",
                                       "network is unreachable", "connection timed out")):
                pytest.skip("the Debian archive cannot be reached to install chromium")
            raise AssertionError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    return shutil.which("chromium")


@pytest.mark.slow
def test_the_html_report_renders_in_a_real_browser(searched, tmp_path):
    _, out, _ = searched
    browser = _chromium()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={tmp_path / 'profile'}"]
    page = (out / "report.html").as_uri()
    dom = subprocess.run([*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page],
                         capture_output=True, text=True, timeout=180, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert dom.stdout.count("<svg") == 2 and dom.stdout.count(" chosen\"") == 2
    assert "class=\"point baseline\"" in dom.stdout and "int8-ptq" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", page],
                   capture_output=True, text=True, timeout=180, check=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.slow
def test_channel_candidates_on_a_model_whose_convolution_feeds_a_custom_layer(digits, tmp_path):
    """No channel group can be cut (the conv feeds a custom layer): said, not a crash."""
    import keras

    from tflight.optimization import optimize

    class Scaled(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 16), initializer="glorot_uniform")

        def call(self, x):
            return keras.ops.relu(keras.ops.matmul(x, self.w)) * 0.5

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    model = keras.Model(inp, keras.layers.Dense(10)(Scaled()(h)))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=2, verbose=0)
    result = optimize(model, (digits.x_train, digits.y_train), (digits.x_test, digits.y_test),
                      test_data=(digits.x_train[:100], digits.y_train[:100]), max_drop=50.0,
                      techniques=("int8", "channels60-int8"), epochs=1, measure_host=False,
                      output_dir=tmp_path)
    channels = next(c for c in result.candidates if c.name == "channels60-int8")
    assert channels.status in ("skipped", "failed") and "no channel group" in channels.reason
    assert result.met and result.winner.name == "int8"
