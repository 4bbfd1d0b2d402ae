"""Mixed precision: sensitivity, the budgeted search, int4 storage, errors, CLI (real LiteRT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli
from tflight.errors import PrecisionBudgetError, PrecisionError
from tflight.precision.choices import OTHER_OPS, Precision
from tflight.precision.int4 import quantize_int4
from tflight.precision.layer_sensitivity import precision_sensitivity as sensitivity
from tflight.precision.model import list_layers
from tflight.precision.recipes import quantize_layers
from tflight.precision.search import search
from tflight.precision.stats import drop_bound_pt, samples_needed

_N_FIT = 600


@pytest.fixture(scope="module")
def fragile(models):
    return models[1]


@pytest.fixture(scope="module")
def plain(models):
    """The same model before its `fragile` layer got the huge weights."""
    return models[0]


@pytest.fixture(scope="module")
def models(digits):
    """A two-branch Functional model whose `fragile` Dense layer breaks under int8.

    Pixel (0, 0) is zero in every digit, so a huge weight on it changes nothing
    in float; but per-channel int8 scales then follow that weight and round every
    other weight of the layer to zero.
    """
    import keras

    import converters

    assert float(np.abs(digits.x_train[:, 0, 0, 0]).max()) == 0.0
    assert float(np.abs(digits.x_test[:, 0, 0, 0]).max()) == 0.0
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inp)
    a = keras.layers.MaxPooling2D(2)(a)
    a = keras.layers.Flatten()(a)
    b = keras.layers.Flatten()(inp)
    b = keras.layers.Dense(32, activation="relu", name="fragile")(b)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(32, activation="relu", name="hidden")(h)
    out = keras.layers.Dense(10, name="logits")(h)
    model = keras.Model(inp, out, name="two_branch")
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    # Trained on the first _N_FIT training digits only: the rest are validation data it never saw.
    model.fit(digits.x_train[:_N_FIT], digits.y_train[:_N_FIT], epochs=20, batch_size=32,
              verbose=0)
    plain = converters.convert(model, "fp32").flatbuffer
    layer = model.get_layer("fragile")
    kernel, bias = layer.get_weights()
    kernel[0, :] = 1e4
    layer.set_weights([kernel, bias])
    return plain, converters.convert(model, "fp32").flatbuffer


@pytest.fixture(scope="module")
def fragile_file(fragile, tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "two_branch.tflite"
    path.write_bytes(fragile)
    return path


def _name(layers, part):
    (name,) = [layer.name for layer in layers if part in layer.scope]
    return name


def test_layers_are_the_ops_with_weights(fragile):
    layers = list_layers(fragile)
    ops = sorted(layer.op for layer in layers)
    assert ops == ["CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED", "FULLY_CONNECTED"], layers
    assert {layer.params for layer in layers} >= {64 * 32, 72, 10 * 32}


def test_sensitivity_ranks_the_fragile_layer_first(fragile, digits):
    report = sensitivity(
        fragile, digits.x_test, digits.y_test,
        calibration_data=digits.x_train[:200], precisions=["fp16", "int8"],
    )
    fragile_name = _name(list_layers(fragile), "fragile")
    assert report.ranking[0] == fragile_name, report.table()
    # The other view: keeping `fragile` float in an all-int8 model gains the most.
    assert report.ranking_kept_float[0] == fragile_name, report.table()
    kept = report.get(fragile_name, "int8")
    assert kept.kept_float_snr_db > report.quantized_snr_db + 10
    assert kept.kept_float_drop_pt < report.quantized_drop_pt - 10
    assert np.isnan(report.get(fragile_name, "fp16").kept_float_snr_db)
    worst = report.get(fragile_name, "int8")
    assert worst.snr_db < 10 and worst.accuracy_drop_pt > 10, worst
    # fp16 keeps it (float compute, 1e4 is representable): not a precision-blind ranking.
    assert report.get(fragile_name, "fp16").accuracy_drop_pt < 1
    assert report.samples == len(digits.x_test)
    lines = []
    report.summary(print_fn=lines.append)
    assert "one layer quantized at a time" in lines[1] and "one layer kept float" in lines[1]
    assert fragile_name in lines[5] and "kept float" in lines[3]
    assert json.loads(json.dumps(report.to_dict()))["ranking"][0] == fragile_name


def test_search_meets_a_loose_budget_verified_on_held_out_samples(fragile, digits):
    x, y = digits.x_train[_N_FIT:], digits.y_train[_N_FIT:]
    result = search(fragile, x, y, calibration_data=digits.x_train[:200], max_drop=2.0)
    fragile_name = _name(list_layers(fragile), "fragile")
    # The claim is the bound on new data, not the drop on the samples searched.
    assert result.met_budget and result.search_drop_bound_pt <= 2.0
    assert result.search_drop_bound_pt == pytest.approx(
        drop_bound_pt(result.search_losses, result.search_samples, 0.95))
    assert result.search_drop_bound_pt > result.search_drop_pt
    assert "95% confidence" in result.claim and f"of {result.search_samples} search" in result.claim
    # Both sensitivity views are scored against the error measured on every configuration tried.
    assert set(result.guide_fit) == {"alone", "kept-float"} and result.guide.value == "alone"
    assert all(np.isnan(v) or -1 <= v <= 1 for v in result.guide_fit.values())
    assert all(np.isfinite(st.snr_db) for st in result.steps)
    # The int8/int4 versions of `fragile` cost > 10 pt: the search must keep it precise.
    assert result.assignment[fragile_name] in (Precision.FLOAT, Precision.FP16), result.assignment
    v = result.verification
    assert v.samples + result.search_samples == len(x) and "held-out" in v.data
    assert v.accuracy_drop_pt <= 2.0, v
    assert result.model.size < result.model.float_size / 2
    # The file it returns runs in LiteRT on its own.
    import converters

    probs = converters.TFLiteModel(result.model.flatbuffer).predict(digits.x_test)
    assert probs.shape == (len(digits.x_test), 10)
    lines = []
    result.summary(print_fn=lines.append)
    assert any("estimated, not measured" in line for line in lines)
    assert any(line.startswith("verified:") for line in lines)
    assert any(line.startswith("claim:") for line in lines)


def test_drop_bound_is_the_exact_binomial_bound():
    # No loss in n samples: 1 - (1 - c)^(1/n) (about 3/n at 95%, the "rule of three").
    assert drop_bound_pt(0, 300, 0.95) == pytest.approx(100 * (1 - 0.05 ** (1 / 300)))
    assert drop_bound_pt(0, 300, 0.95) > 0.99
    assert drop_bound_pt(3, 300, 0.95) > drop_bound_pt(2, 300, 0.95) > 100 * 2 / 300
    assert drop_bound_pt(0, 300, 0.99) > drop_bound_pt(0, 300, 0.9)
    n = samples_needed(0.5, 0.95)
    assert n == 598
    assert drop_bound_pt(0, n, 0.95) <= 0.5 < drop_bound_pt(0, n - 1, 0.95)
    assert samples_needed(0.0, 0.95) is None


def test_budget_the_samples_cannot_resolve_is_refused(fragile, digits):
    # 450 samples, a quarter held out for calibration, half of the rest for the re-check:
    # 169 searched, but a 0.5 pt bound at 95% needs 598.
    with pytest.raises(PrecisionError, match=r"more validation samples needed.*598 search "
                       r"samples.*about 1\d{3} validation samples") as info:
        search(fragile, digits.x_test, digits.y_test, max_drop=0.5)
    assert "169 samples" in str(info.value)
    with pytest.raises(PrecisionError, match="confidence"):
        search(fragile, digits.x_test, digits.y_test, max_drop=0.5, confidence=1.0)


def test_impossible_budget_says_so_with_the_best_configuration(fragile, digits):
    with pytest.raises(PrecisionBudgetError, match="the best found loses") as info:
        search(fragile, digits.x_train[_N_FIT:], digits.y_train[_N_FIT:],
               calibration_data=digits.x_train[:200], max_drop=1.0, choices=["int8"])
    best = info.value.best
    assert best is not None and not best.met_budget
    # int8 on `fragile` alone loses > 10 pt (see the sensitivity test).
    assert best.search_drop_pt > 10
    assert best.assignment[_name(list_layers(fragile), "fragile")] is Precision.INT8
    assert best.verification.samples > 0


def test_int4_file_is_smaller_raw_than_int8_and_runs(plain, digits):
    import converters

    cal = digits.x_train[:200]
    int8 = quantize_layers(plain, "int8", calibration_data=cal)
    int4 = quantize_int4(plain, calibration_data=cal, test_data=(digits.x_test, digits.y_test))
    # Packed two per byte: about half a byte saved per weight (the file also has
    # a fixed part, so the ratio of the whole file is smaller on a tiny model).
    weights = sum(layer.params for layer in list_layers(plain))
    assert int8.size - int4.size >= 0.45 * weights, (int4.size, int8.size, weights)
    assert int4.assignment[OTHER_OPS] is Precision.INT8
    assert int4.verification is not None and int4.verification.samples == len(digits.x_test)
    out = converters.TFLiteModel(int4.flatbuffer).predict(digits.x_test[:8])
    assert np.all(np.isfinite(out))


def test_int4_conv2d_runs_in_litert(plain, digits):
    import converters

    cal = digits.x_train[:200]
    conv = _name(list_layers(plain), "conv")
    m8 = quantize_layers(plain, {conv: "int8"}, calibration_data=cal)
    m4 = quantize_layers(plain, {conv: "int4"}, calibration_data=cal)
    assert m4.size < m8.size  # 72 weights: packed two per byte
    # Float inputs and outputs are kept.
    details = converters.TFLiteModel(m4.flatbuffer)
    assert details.input_details[0]["dtype"] == np.float32
    assert details.output_details[0]["dtype"] == np.float32
    mf = converters.TFLiteModel(plain).predict(digits.x_test)
    got = converters.TFLiteModel(m4.flatbuffer).predict(digits.x_test)
    assert np.mean(got.argmax(1) == mf.argmax(1)) > 0.9


@pytest.mark.slow
def test_pcqat_int4_storage_beats_int8_raw(digits):
    import keras

    import converters
    import tflight

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", loss)
    model.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    out = tflight.Pipeline([tflight.Prune(sparsity=0.5), tflight.Cluster(n_clusters=16),
                            tflight.QAT()]).fit(
        model, digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0,
        compile={"optimizer": keras.optimizers.Adam(1e-4), "loss": loss})
    cal = digits.x_train[:200]
    int8 = converters.convert(out.model, "int8", representative_data=cal)
    int4 = quantize_int4(out.model, calibration_data=cal, test_data=(digits.x_test, digits.y_test))
    assert int4.size * 1.5 < int8.size, (int4.size, int8.size)
    assert int4.verification.accuracy > 0.8, int4.verification


def test_bad_data_and_models_give_one_clear_error(fragile, digits, tmp_path):
    cal = digits.x_train[:100]
    with pytest.raises(PrecisionError, match=r"shape \(4, 4, 1\).*takes \(8, 8, 1\)"):
        sensitivity(fragile, digits.x_test[:, :4, :4], calibration_data=cal)
    with pytest.raises(PrecisionError, match="numeric array"):
        sensitivity(fragile, np.full((10, 8, 8, 1), "a"), calibration_data=cal)
    with pytest.raises(PrecisionError, match="labels"):
        sensitivity(fragile, digits.x_test, digits.y_test[:5], calibration_data=cal)
    with pytest.raises(PrecisionError, match="also in the validation data"):
        search(fragile, digits.x_test, digits.y_test, calibration_data=digits.x_test[:50])
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(PrecisionError, match="not a .tflite model"):
        sensitivity(str(bad), digits.x_test, calibration_data=cal)
    int8 = quantize_layers(fragile, "int8", calibration_data=cal).flatbuffer
    with pytest.raises(PrecisionError, match="already quantized"):
        search(int8, digits.x_test, digits.y_test, calibration_data=cal)
    with pytest.raises(PrecisionError, match="max_drop"):
        search(fragile, digits.x_test, digits.y_test, calibration_data=cal, max_drop=-1)
    with pytest.raises(PrecisionError, match="choices"):
        search(fragile, digits.x_test, digits.y_test, calibration_data=cal, choices=["int3"])


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_search_json_and_output(fragile_file, digits, tmp_path):
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x_train[_N_FIT:], y=digits.y_train[_N_FIT:])
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=digits.x_train[:200])
    out = tmp_path / "mixed.tflite"
    r = _run("quantize", fragile_file, "--data", data, "--calibration", cal,
             "--max-drop", "2", "--guide", "kept-float", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["met_budget"] and d["model"]["verification"]["accuracy_drop_pt"] <= 2.0
    assert d["search_drop_bound_pt"] <= 2.0 and d["confidence"] == 0.95
    assert d["guide"] == "kept-float" and set(d["guide_fit"]) == {"alone", "kept-float"}
    assert out.stat().st_size == d["model"]["size"]
    assert d["estimated_latency_ms"]["estimated"] is True

    png = tmp_path / "sensitivity.png"
    r = _run("quantize", fragile_file, "--data", data, "--calibration", cal, "--sensitivity-only",
             "--plot", png)
    assert r.exit_code == 0, r.output
    assert "rank" in r.output and "fragile" in r.output.splitlines()[5]
    assert "kept float" in r.output.splitlines()[3]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_errors_exit_2_without_traceback(fragile_file, digits, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=digits.x_test[:, :4, :4])
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(bad)])
    assert r.exit_code == 2 and "Error:" in r.output and "Traceback" not in r.output, r.output

    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x_test, y=digits.y_test)
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(data),
                                 "--max-drop", "0.5"])
    assert r.exit_code == 2 and "more validation samples needed" in r.output, r.output
    # The command's advice names its options, not the Python arguments.
    assert "--max-drop" in r.output and "--confidence" in r.output
    assert "--calibration" in r.output
    assert "test_data" not in r.output and "calibration_data" not in r.output
    assert "max_drop," not in r.output
    assert "Traceback" not in r.output
    big = tmp_path / "big.npz"
    np.savez(big, x=digits.x_train[_N_FIT:], y=digits.y_train[_N_FIT:])
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(big),
                                 "--max-drop", "1.5", "--choices", "int8"])
    assert r.exit_code == 2, r.output
    assert "Error: No configuration" in r.output and "best found loses" in r.output
    assert "Raise --max-drop, allow more precise --choices" in r.output

    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(data),
                                 "-o", str(fragile_file)])
    assert r.exit_code == 2 and "is the input" in r.output
    r = CliRunner().invoke(cli, ["quantize", str(tmp_path / "missing.tflite"),
                                 "--data", str(data)])
    assert r.exit_code == 2 and "Error:" in r.output


def test_attention_block_without_labels(digits):
    """A MultiHeadAttention + LayerNormalization block, digits rows as a sequence, no labels."""
    import keras

    import converters

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8))
    h = keras.layers.Dense(16, name="embed")(inp)
    a = keras.layers.MultiHeadAttention(2, 8, name="mha")(h, h)
    h = keras.layers.LayerNormalization(name="ln")(h + a)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(inp, keras.layers.Dense(10, name="logits")(h), name="attention")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x_train = digits.x_train.reshape(-1, 8, 8)
    model.fit(x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    fp32 = converters.convert(model, "fp32").flatbuffer
    layers = list_layers(fp32)
    assert len(layers) >= 5 and any("mha" in layer.name for layer in layers), layers
    x = digits.x_test.reshape(-1, 8, 8)
    report = sensitivity(fp32, x, calibration_data=x_train[:100], precisions=["int8"])
    assert report.float_accuracy is None and len(report.ranking) == len(layers) + 1
    result = search(fp32, x, calibration_data=x_train[:100], max_drop=5.0,
                    choices=["float", "int8", "int4"])
    # Without labels the drop is the top-1 disagreement with the float model.
    assert result.verification.accuracy is None
    assert result.verification.accuracy_drop_pt == pytest.approx(
        100 * (1 - result.verification.agreement))
    assert result.verification.accuracy_drop_pt <= 10.0
    assert result.model.size < result.model.float_size


def test_layers_not_stored_as_assigned_are_reported(digits):
    """litert-quantizer stores int4 DEPTHWISE_CONV_2D as int8 and has no blockwise CONV_2D."""
    import keras

    import converters

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", name="conv"),
        keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="fc"),
    ])
    fp32 = converters.convert(model, "fp32").flatbuffer
    names = {layer.op: layer.name for layer in list_layers(fp32)}
    conv, dw, fc = names["CONV_2D"], names["DEPTHWISE_CONV_2D"], names["FULLY_CONNECTED"]
    q = quantize_layers(fp32, {conv: "int4-block", dw: "int4", fc: "int4"},
                        calibration_data=digits.x_train[:64])
    # The blockwise recipe does not apply to CONV_2D, so the int8 recipe of the
    # other ops (int8 here, since int4 layers need int8 activations) stores it.
    assert dict(q.not_as_assigned) == {conv: "int8", dw: "int8"}
    alone = quantize_layers(fp32, {conv: "int4-block"}, calibration_data=digits.x_train[:64])
    assert dict(alone.not_as_assigned) == {conv: "float32"}
    assert json.loads(json.dumps(q.to_dict()))["not_stored_as_assigned"][dw] == "int8"


@pytest.fixture(scope="module")
def two_in_two_out(digits):
    """A Functional model with two inputs (image, row sums) and two outputs (digit, parity)."""
    import keras

    import converters

    keras.utils.set_random_seed(0)
    img = keras.Input((8, 8, 1), name="image")
    rows = keras.Input((8,), name="rows")
    a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(img)
    a = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(a))
    b = keras.layers.Dense(8, activation="relu", name="rows_fc")(rows)
    h = keras.layers.Dense(32, activation="relu", name="hidden")(
        keras.layers.Concatenate()([a, b]))
    digit = keras.layers.Dense(10, name="digit")(h)
    parity = keras.layers.Dense(2, name="parity")(h)
    model = keras.Model([img, rows], [digit, parity], name="two_in_two_out")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile("adam", [loss, loss])
    x = digits.x_train[:_N_FIT]
    model.fit([x, x.sum(axis=(2, 3))], [digits.y_train[:_N_FIT], digits.y_train[:_N_FIT] % 2],
              epochs=15, batch_size=32, verbose=0)
    return converters.convert(model, "fp32").flatbuffer


def test_multi_input_multi_output_model(two_in_two_out, digits):
    import converters

    m = converters.TFLiteModel(two_in_two_out)
    names, outputs = m.input_names, m.output_names
    assert len(names) == 2 and len(outputs) == 2
    x = digits.x_train[_N_FIT:]
    by_name = {"image": x, "rows": x.sum(axis=(2, 3))}
    inputs = {n: by_name["image" if len(m.input_details[i]["shape_signature"]) == 4 else "rows"]
              for i, n in enumerate(names)}
    as_list = [inputs[n] for n in names]
    cal = digits.x_train[:200]
    cal_inputs = {n: (cal if a.ndim == 4 else cal.sum(axis=(2, 3))) for n, a in inputs.items()}
    # Which output is the digit: the one with 10 values.
    digit_out = next(o for o, d in zip(outputs, m.output_details, strict=True)
                     if d["shape"][-1] == 10)
    parity_out = next(o for o in outputs if o != digit_out)
    y = digits.y_train[_N_FIT:]

    r_digit = sensitivity(two_in_two_out, inputs, y, calibration_data=cal_inputs,
                          precisions=["int8"], output=digit_out)
    r_parity = sensitivity(two_in_two_out, as_list, y % 2, calibration_data=cal_inputs,
                           precisions=["int8"], output=parity_out)
    assert r_digit.output == digit_out and r_parity.output == parity_out
    # Each output's own accuracy against its own labels.
    assert r_digit.float_accuracy > 0.8 and r_parity.float_accuracy > 0.8
    assert r_digit.float_accuracy != r_parity.float_accuracy
    assert {e.layer for e in r_digit.entries} == {e.layer for e in r_parity.entries}
    # Each output's own error: the SNRs differ.
    assert [e.snr_db for e in r_digit.entries] != [e.snr_db for e in r_parity.entries]
    lines = []
    r_digit.summary(print_fn=lines.append)
    assert f"output {digit_out!r}" in lines[0]

    result = search(two_in_two_out, as_list, y, calibration_data=cal_inputs, max_drop=3.0,
                    output=digit_out)
    assert result.met_budget and result.output == digit_out
    assert result.verification.output == digit_out
    both = converters.TFLiteModel(result.model.flatbuffer).predict(as_list)
    assert isinstance(both, list) and len(both) == 2

    with pytest.raises(PrecisionError, match=r"has the inputs"):
        sensitivity(two_in_two_out, {"image": x}, y, calibration_data=cal_inputs)
    with pytest.raises(PrecisionError, match=r"1 array\(s\).*2 inputs"):
        sensitivity(two_in_two_out, x, y, calibration_data=cal_inputs)
    with pytest.raises(PrecisionError, match=r"not an output.*its outputs are"):
        sensitivity(two_in_two_out, inputs, y, calibration_data=cal_inputs, output="nope")


def test_cli_reads_several_inputs_from_x0_x1(two_in_two_out, digits, tmp_path):
    import converters

    model = tmp_path / "two.tflite"
    model.write_bytes(two_in_two_out)
    m = converters.TFLiteModel(two_in_two_out)
    x = digits.x_train[_N_FIT:]
    arrays = {f"x{i}": (x if len(d["shape_signature"]) == 4 else x.sum(axis=(2, 3)))
              for i, d in enumerate(m.input_details)}
    digit = next(i for i, d in enumerate(m.output_details) if d["shape"][-1] == 10)
    data = tmp_path / "val.npz"
    np.savez(data, y=digits.y_train[_N_FIT:], **arrays)
    r = _run("quantize", model, "--data", data, "--sensitivity-only", "--choices", "int8",
             "--metric-output", digit, "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["output"] == m.output_names[digit] and d["float_accuracy"] > 0.8


def test_nested_backbone_with_a_new_head(digits):
    import keras

    import converters

    keras.utils.set_random_seed(0)
    backbone = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv1"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b_conv2"),
    ], name="backbone")
    inp = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(backbone(inp))
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h), name="with_head")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train[:_N_FIT], digits.y_train[:_N_FIT], epochs=10, batch_size=32,
              verbose=0)
    # The Keras model itself (converted to float inside).
    layers = list_layers(model)
    assert sorted(layer.op for layer in layers) == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED"]
    report = sensitivity(model, digits.x_test, digits.y_test,
                         calibration_data=digits.x_train[:200], precisions=["int8"])
    assert len(report.ranking) == 4 and len(report.ranking_kept_float) == 4
    q = quantize_layers(model, "int8", calibration_data=digits.x_train[:200],
                        test_data=(digits.x_test, digits.y_test))
    assert q.verification.accuracy_drop_pt < 5 and q.size < q.float_size
    assert converters.TFLiteModel(q.flatbuffer).predict(digits.x_test[:4]).shape == (4, 10)


def test_keras_hub_backbone_with_a_head(digits):
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    import converters

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2],
        block_type="basic_block",
        image_shape=(8, 8, 1),
    )
    inp = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(backbone(inp))
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(h))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train[:_N_FIT], digits.y_train[:_N_FIT], epochs=5, batch_size=32,
              verbose=0)
    fp32 = converters.convert(model, "fp32").flatbuffer
    layers = list_layers(fp32)
    assert sum(layer.op == "CONV_2D" for layer in layers) >= 4, layers
    report = sensitivity(fp32, digits.x_test, digits.y_test,
                         calibration_data=digits.x_train[:200], precisions=["int8"])
    assert report.float_accuracy > 0.5
    assert all(e.supported for e in report.entries), report.table()
    q = quantize_int4(fp32, calibration_data=digits.x_train[:200],
                      test_data=(digits.x_test, digits.y_test))
    assert q.size < len(fp32) / 4 and q.verification.samples == len(digits.x_test)


def test_labels_outside_the_models_classes_are_refused(fragile_file, digits, tmp_path):
    # y=42 or -1 for a 10-class model, or one-hot of the wrong width: one Error line, no file.
    x = digits.x_train[_N_FIT:]
    y = np.asarray(digits.y_train[_N_FIT:]).copy()
    with pytest.raises(PrecisionError, match="ids up to 42"):
        search(fragile_file, x, np.where(np.arange(len(y)) == 3, 42, y))
    out = tmp_path / "mixed.tflite"
    cases = {
        "y42": (np.where(np.arange(len(y)) == 3, 42, y), "ids up to 42"),
        "yneg": (np.where(np.arange(len(y)) == 3, -1, y), "negative class ids"),
        "onehot7": (np.eye(7)[y % 7], "7 columns"),
    }
    for name, (labels, message) in cases.items():
        data = tmp_path / f"{name}.npz"
        np.savez(data, x=x, y=labels)
        r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(data),
                                     "--max-drop", "2", "-o", str(out)])
        assert r.exit_code == 2, (name, r.output)
        assert "Error:" in r.output and message in r.output, (name, r.output)
        assert "Traceback" not in r.output and not out.exists(), name


def test_cli_checks_the_output_before_loading(fragile_file, tmp_path):
    import os

    # Links to the input are the input; the data is never read (it is not an .npz).
    bad_data = tmp_path / "notdata.npz"
    bad_data.write_text("not an npz")
    hard, soft = tmp_path / "hard.tflite", tmp_path / "soft.tflite"
    os.link(fragile_file, hard)
    soft.symlink_to(fragile_file)
    before = fragile_file.read_bytes()
    for out in (hard, soft):
        r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(bad_data),
                                     "-o", str(out)])
        assert r.exit_code == 2 and "is the input" in r.output, r.output
    assert fragile_file.read_bytes() == before
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(bad_data),
                                 "-o", str(blocker / "m.tflite")])
    assert r.exit_code == 2 and "is not a directory" in r.output, r.output
    assert "File exists" not in r.output and "notdata" not in r.output


def test_cli_loads_custom_layers_from_custom_objects(digits, tmp_path):
    from tests.test_shrink_cli import custom_layer_model

    model, py = custom_layer_model(tmp_path)
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x_test[:64], y=digits.y_test[:64])
    args = ["quantize", str(model), "--data", str(data), "--sensitivity-only",
            "--choices", "int8", "--json"]
    without = CliRunner().invoke(cli, args)
    assert without.exit_code == 2 and "Error:" in without.output, without.output
    r = CliRunner().invoke(cli, [*args, "--custom-objects", str(py)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert any(e["layer"].startswith("scaled") or "scaled" in e["layer"] for e in d["entries"])


def test_cli_refuses_a_budget_its_own_recheck_does_not_confirm(fragile_file, digits, tmp_path):
    # With int4/int8/float only, the search's bound meets 2 pt but the held-out re-check's
    # bound does not: no "budget met" claim, no file, one Error line naming both figures.
    x, y = digits.x_train[_N_FIT:], digits.y_train[_N_FIT:]
    cal_x = digits.x_train[:200]
    budget = 2.0
    result = search(fragile_file, x, y, max_drop=budget, calibration_data=cal_x,
                    choices=["int4", "int8", "float"])
    # The premise: the same search meets the budget, its re-check does not.
    assert result.search_drop_bound_pt <= budget < result.verification.drop_bound_pt
    lines = []
    result.summary(print_fn=lines.append)
    assert "WARNING: the re-check's bound" in lines[-1]
    data, cal = tmp_path / "val.npz", tmp_path / "cal.npz"
    np.savez(data, x=x, y=y)
    np.savez(cal, x=cal_x)
    out = tmp_path / "mixed.tflite"
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(data),
                                 "--calibration", str(cal), "--choices", "int4,int8,float",
                                 "--max-drop", str(budget), "-o", str(out)])
    assert r.exit_code == 2, r.output
    assert "Error: The held-out re-check bounds" in r.output and "Traceback" not in r.output
    # Said once in the summary (which does not call the budget met) and once as the error.
    assert "Warning:" not in r.output and r.output.count("WARNING: the re-check's bound") == 1
    assert "NOT by the held-out re-check" in r.output and "budget 2 pt met;" not in r.output
    assert f"({result.verification.losses} lost of" in r.output.splitlines()[-1]
    assert "--data" in r.output and "--max-drop" in r.output
    assert not out.exists()


def test_errors_carry_the_argument_and_the_fix(fragile_file, digits, tmp_path):
    # The fields a front end maps to its own options, set where the error is raised.
    with pytest.raises(PrecisionError) as info:
        search(fragile_file, digits.x_test, digits.y_test, max_drop=0.5)
    e = info.value
    assert (e.option, e.kind, e.details["samples_needed"]) == ("max_drop", "budget_unresolvable",
                                                               598)
    assert e.fix and str(e).endswith(e.fix) and str(e).startswith(e.details["reason"])
    with pytest.raises(PrecisionError) as info:
        quantize_layers(fragile_file, {"nope": "int8"}, calibration_data=digits.x_train[:50])
    e = info.value
    assert (e.option, e.layer, e.kind) == ("assignment", "nope", "unknown_layer")
    with pytest.raises(PrecisionError) as info:
        sensitivity(fragile_file, digits.x_test, digits.y_test,
                    calibration_data=digits.x_test[:50])
    assert (info.value.option, info.value.kind) == ("calibration_data", "calibration_overlap")
    # The command names its own option for an argument error.
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x_test[:64], y=digits.y_test[:64])
    r = CliRunner().invoke(cli, ["quantize", str(fragile_file), "--data", str(data),
                                 "--sensitivity-only", "--metric-output", "nope"])
    assert r.exit_code == 2 and "Error: Invalid value for --metric-output:" in r.output, r.output
    assert "Traceback" not in r.output


def test_net_drop_bound_credits_gains_and_covers_the_true_drop():
    """The net paired bound: exact at no change, ordered, and right at least 95 % of the time."""
    from tflight.precision.stats import net_drop_bound_pt, net_samples_needed

    assert net_drop_bound_pt(0, 0, 700, 0.95) == pytest.approx(100 * (1 - 0.025 ** (1 / 700)))
    assert net_drop_bound_pt(6, 0, 700, 0.95) > net_drop_bound_pt(5, 0, 700, 0.95)
    assert net_drop_bound_pt(5, 9, 700, 0.95) < net_drop_bound_pt(5, 0, 700, 0.95)
    assert net_drop_bound_pt(5, 40, 700, 0.95) < 0  # gains clearly outweigh the losses
    assert net_drop_bound_pt(30, 30, 2800, 0.95) < net_drop_bound_pt(30, 30, 700, 0.95)
    n = net_samples_needed(1.0, 0.95)
    assert net_drop_bound_pt(0, 0, n, 0.95) <= 1.0 < net_drop_bound_pt(0, 0, n - 1, 0.95)
    # Coverage: candidates that flip 6 % of 400 predictions, as many gained as lost
    # (true drop 0) and, separately, twice as many lost (true drop 2 pt).
    rng = np.random.default_rng(0)
    for p_loss, p_gain in ((0.03, 0.03), (0.04, 0.02)):
        truth = 100 * (p_loss - p_gain)
        draws = rng.multinomial(400, [p_loss, p_gain, 1 - p_loss - p_gain], size=1000)
        below = sum(net_drop_bound_pt(int(lo), int(ga), 400, 0.95) < truth for lo, ga, _ in draws)
        assert below <= 50, (p_loss, p_gain, below)
