"""Device profiles: fitted to published latencies, judged on models left out of the fit."""

from __future__ import annotations

import pytest

from tflight.devices.profiles import (
    PROFILES,
    DeviceProfile,
    calibrate,
    estimate_latency,
    get_profile,
    model_work,
)
from tflight.errors import BenchmarkError


def _keras():
    import keras

    return keras


@pytest.fixture(scope="module")
def cnn(keras3_cnn, calib):
    """The trained tiny digits CNN as fp32 and full-int8 flatbuffers."""
    import converters

    return {
        "fp32": converters.convert(keras3_cnn, "fp32", validate=False).flatbuffer,
        "int8": converters.convert(
            keras3_cnn, "int8", representative_data=calib, input_dtype="int8",
            output_dtype="int8", validate=False,
        ).flatbuffer,
    }


def _gru(steps: int, units: int = 32):
    keras = _keras()
    inp = keras.Input((steps, 8), batch_size=1)
    x = keras.layers.GRU(units)(inp)
    return keras.Model(inp, keras.layers.Dense(4)(x))


# --- lookup and validation of arguments --------------------------------------


def test_unknown_profile_name_is_a_clear_error(cnn):
    assert set(PROFILES) >= {"pixel3", "pixel4", "cortex-a53", "edgetpu"}
    assert get_profile("pixel4") is PROFILES["pixel4"]
    with pytest.raises(BenchmarkError, match=r"unknown device profile 'iphone99'; known profiles: pixel3, pixel4"):
        estimate_latency(cnn["fp32"], "iphone99")
    with pytest.raises(BenchmarkError, match="4 thread"):
        estimate_latency(cnn["fp32"], "pixel4", threads=1)
    with pytest.raises(ValueError, match="unknown columns"):
        DeviceProfile("x", "x", "cpu", {"int4:conv": 1.0})
    with pytest.raises(ValueError, match="fallback"):
        DeviceProfile("x", "x", "edgetpu", {"tpu:macs": 1.0})


def test_model_work_counts_macs_of_the_tiny_cnn(cnn):
    work = model_work(cnn["fp32"])
    conv = next(o for o in work.ops if o.op_name == "CONV_2D")
    dense = next(o for o in work.ops if o.op_name == "FULLY_CONNECTED")
    assert (conv.op_class, conv.arith) == ("conv", "fp32")
    assert conv.macs == 8 * 8 * 8 * 3 * 3 * 1
    assert dense.macs == 10 * 128 and dense.op_class == "dense"
    int8 = model_work(cnn["int8"])
    assert {o.arith for o in int8.ops if o.macs} == {"int8"}
    assert int8.macs == work.macs


# --- the fit is judged on models it did not see --------------------------------


@pytest.mark.parametrize("name", ["pixel3", "pixel4"])
def test_heldout_error_is_within_target_on_phone_profiles(name):
    v = PROFILES[name].validation
    assert "leave-one-architecture-out" in v.method
    assert v.rows >= 10
    assert v.median_abs_err_pct <= 20.0
    assert v.rank_corr >= 0.95
    assert v.int8_speedup_median_abs_err_pct <= 20.0


def test_heldout_predictions_come_from_fits_without_the_model():
    """Refit pixel3 without MobileNetV2 by hand: the stored held-out estimate is that fit's."""
    from tflight.devices.profiles import features_from_totals, published_rows

    rows = [r for r in published_rows() if r.device == "pixel3"]
    held = "mobilenet_v2_1.0_224"
    train = [(r.totals, r.ms) for r in rows if r.model != held]
    prof = calibrate(train, name="t", description="pixel3 without MobileNetV2", threads=4)
    stored = {
        (m, p): est for m, p, _, est in PROFILES["pixel3"].validation.predictions if m == held
    }
    for r in rows:
        if r.model != held:
            continue
        est = prof.cost(features_from_totals(r.totals, "cpu")) * 1e3
        assert est == pytest.approx(stored[(held, r.precision)], rel=1e-9)
        # An honest miss is allowed to fail this: the model is not in the fit.
        assert abs(est / r.ms - 1) <= 0.3, (r.precision, est, r.ms)
    # The full-data profile differs from the held-out one: the fit did use the model.
    full = PROFILES["pixel3"].coefficients
    assert any(abs(full[k] - prof.coefficients[k]) > 1e-15 for k in full)


def test_calibrate_refuses_too_few_figures():
    with pytest.raises(ValueError, match="at least 2"):
        calibrate([({"conv/fp32": [1, 1, 1, 1, 1]}, 1.0)], name="t", description="t")


def test_estimate_label_says_estimated_and_names_profile_and_error(cnn):
    fp32 = estimate_latency(cnn["fp32"], "pixel4")
    int8 = estimate_latency(cnn["int8"], "pixel4")
    assert fp32.label.startswith("estimated on pixel4; held-out error median ")
    assert "published figures" in fp32.label
    # The tiny CNN is far below the smallest published figure: the label says so.
    lo, _ = PROFILES["pixel4"].published_range_ms
    assert fp32.ms < lo and "extrapolated" in fp32.label
    assert int8.ms < fp32.ms
    assert len(fp32.per_op_ms) == len(model_work(cnn["fp32"]).ops)
    assert fp32.to_dict()["estimated"] is True


# --- subgraphs, hybrid operators, the Edge TPU rule ----------------------------


@pytest.fixture(scope="module")
def grus():
    # TensorFlow's own converter keeps the recurrence as a WHILE loop (converters
    # unrolls fixed-length RNNs, which leaves no loop to cost).
    import tensorflow as tf

    return {n: tf.lite.TFLiteConverter.from_keras_model(_gru(n)).convert() for n in (10, 40)}


def test_while_body_is_costed_once_per_trip(grus):
    work = {n: model_work(fb) for n, fb in grus.items()}
    loop = {n: next(o for o in w.ops if o.op_name == "WHILE") for n, w in work.items()}
    assert loop[10].trips == 10 and loop[40].trips == 40 and loop[10].trips_known
    body = dict(zip(loop[10].child_roles, loop[10].children, strict=True))["body"]
    assert any(o.op_name == "FULLY_CONNECTED" for o in body)
    # The body's multiply-accumulates count once per time step.
    assert work[40].macs > 3.5 * work[10].macs > 0
    est = {n: estimate_latency(w, "pixel3") for n, w in work.items()}
    k = next(i for i, o in enumerate(work[10].ops) if o.op_name == "WHILE")
    assert est[10].per_op_ms[k] > 0.5 * est[10].ms
    assert est[40].per_op_ms[k] == pytest.approx(4 * est[10].per_op_ms[k], rel=0.01)


def test_dynamic_range_model_is_costed_as_hybrid():
    import converters

    keras = _keras()
    inp = keras.Input((16, 16, 8), batch_size=1)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    res = converters.convert_many(model, ["fp32", "dynamic"], validate=False)
    dyn = model_work(res["dynamic"].flatbuffer)
    convs = [o for o in dyn.ops if o.op_name == "CONV_2D"]
    assert convs and all(o.arith == "hybrid" for o in convs)
    e_dyn = estimate_latency(dyn, "pixel3")
    e_fp32 = estimate_latency(res["fp32"].flatbuffer, "pixel3")
    assert any("hybrid" in n for n in e_dyn.notes)
    # Hybrid MACs run at the int8 rate, plus an fp32 pass over the outputs.
    prof = PROFILES["pixel3"]
    c = convs[1]
    expect = (prof.coefficients["int8:conv"] * c.macs + prof.coefficients["fp32:light"] * c.elements
              + prof.coefficients["bytes"] * (c.bytes + c.weight_bytes) + prof.coefficients["ops"])
    k = next(i for i, o in enumerate(dyn.ops) if o is c)
    assert e_dyn.per_op_ms[k] == pytest.approx(expect * 1e3, rel=1e-9)
    assert e_dyn.ms != e_fp32.ms


def test_edgetpu_runs_everything_after_the_first_unsupported_op_on_the_cpu(calib):
    import converters

    keras = _keras()
    inp = keras.Input((8, 8, 1), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Activation("elu")(x)  # ELU: not on the Edge TPU's list
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    fb = converters.convert(
        model, "int8", representative_data=calib[:32], input_dtype="int8", output_dtype="int8",
        validate=False,
    ).flatbuffer
    work = model_work(fb)
    names = [o.op_name for o in work.ops]
    assert "ELU" in names, names
    cut = names.index("ELU")
    est = estimate_latency(work, "edgetpu")
    cpu = get_profile("cortex-a53")
    assert [u.split("#")[0] for u in est.unsupported_ops] == names[cut:]
    assert est.unsupported_ops[0].startswith("ELU#")
    assert "not supported by edgetpu, estimated on cortex-a53" in est.label
    # The second convolution is supported but comes after ELU: it runs on the CPU.
    k = names.index("CONV_2D", cut)
    cpu_alone = estimate_latency(work, cpu)
    assert est.per_op_ms[k] == pytest.approx(cpu_alone.per_op_ms[k], rel=1e-9)
    # The first convolution runs on the Edge TPU: its time is the TPU rates' time.
    tpu = get_profile("edgetpu").coefficients
    first = work.ops[0]
    assert first.op_name == "CONV_2D"
    expect = tpu["tpu:macs"] * first.macs + tpu["ops"]
    assert est.per_op_ms[0] == pytest.approx(expect * 1e3, rel=1e-9)
    assert est.per_op_ms[0] != pytest.approx(cpu_alone.per_op_ms[0], rel=1e-3)
    # A float model has no op the Edge TPU runs.
    fp32 = converters.convert(model, "fp32", validate=False).flatbuffer
    assert len(estimate_latency(fp32, "edgetpu").unsupported_ops) == len(model_work(fp32).ops)


def test_family_cross_validation_holds_out_whole_families():
    from tflight.devices.profiles import _fit_device, cross_validate, model_family, published_rows

    rows = [r for r in published_rows() if r.device == "pixel3"]
    seen: list[list[str]] = []

    def fit(train):
        seen.append(sorted({model_family(r.model) for r in train}))
        return _fit_device("pixel3", train)

    v = cross_validate(rows, fit, by="family")
    assert "family" in v.method and v.rows == len(rows)
    families = {model_family(r.model) for r in rows}
    assert len(seen) == len(families)
    # Each fit lacks exactly one family.
    assert all(len(s) == len(families) - 1 for s in seen)
    with pytest.raises(ValueError, match="`by`"):
        cross_validate(rows, fit, by="device")


def test_fp16_weights_are_costed_as_fp32_and_their_dequantize_is_free(keras3_cnn):
    import converters

    fb = converters.convert(keras3_cnn, "fp16", validate=False).flatbuffer
    work = model_work(fb)
    conv = next(o for o in work.ops if o.op_name == "CONV_2D")
    assert conv.arith == "fp16"
    deq = [o for o in work.ops if o.op_name == "DEQUANTIZE"]
    assert deq and all(o.op_class == "constant" for o in deq)
    est = estimate_latency(work, "pixel3")
    assert any(n.startswith("fp16 weights costed as fp32") for n in est.notes)
    k = work.ops.index(deq[0])
    assert est.per_op_ms[k] == 0.0
