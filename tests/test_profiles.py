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


# --- the fit is judged on families it did not see -----------------------------


@pytest.mark.parametrize("name", ["pixel3", "pixel4"])
def test_family_heldout_error_is_reported_on_phone_profiles(name):
    v = PROFILES[name].validation
    m = PROFILES[name].model_validation
    assert "leave-one-family-out" in v.method and "leave-one-architecture-out" in m.method
    assert v.rows >= 10 and v.unpredicted == 0
    # The figures the README reports (benchmarks/device_truth.py); an honest
    # regression of the cost model is allowed to fail this.
    assert v.median_abs_err_pct <= 15.0
    assert v.rank_corr >= 0.95
    # Holding out whole families is harder than holding out one model.
    assert v.median_abs_err_pct > m.median_abs_err_pct


def test_family_holdout_never_trains_on_a_member_of_the_held_out_family():
    """Every fit behind a family-held-out estimate lacks every row of that family, on every device."""
    from tflight.devices.fit import cross_validate, fit_pool, pool_rows, profile_from
    from tflight.devices.published import model_family

    pool = ("pixel3", "pixel4", "cortex-a53", "pixel1-1core")
    rows = pool_rows(pool)
    seen: list[set[str]] = []

    def fit(train):
        seen.append({model_family(r.model) for r in train})
        assert {r.device for r in train} <= set(pool)
        return profile_from(fit_pool(train, kind="cpu"), "pixel4", description="t",
                            threads=4, fallback=None)

    v = cross_validate("pixel4", rows, fit, by="family")
    mine = {model_family(r.model) for r in rows if r.device == "pixel4"}
    assert len(seen) == len(mine) >= 4
    for held, families in zip(sorted(mine), seen, strict=True):
        assert held not in families, held
        # The rest of the pool stays: only the held-out family is missing.
        assert families == {model_family(r.model) for r in rows} - {held}
    assert v.rows == sum(r.device == "pixel4" for r in rows)
    # The named profile's stored estimates are those of the same fits.
    stored = {(mo, p): e for mo, p, _, e in PROFILES["pixel4"].validation.predictions}
    for mo, p, _, e in v.predictions:
        assert e == pytest.approx(stored[(mo, p)], rel=1e-9)
    with pytest.raises(ValueError, match="`by`"):
        cross_validate("pixel4", rows, fit, by="device")


def test_heldout_predictions_come_from_fits_without_the_family():
    """Refit the pool without MobileNetV2 by hand: the stored estimate is that fit's."""
    from tflight.devices.fit import fit_pool, pool_rows
    from tflight.devices.profiles import features_from_totals
    from tflight.devices.published import model_family

    rows = pool_rows(("pixel3", "pixel4", "cortex-a53", "pixel1-1core"))
    train = [r for r in rows if model_family(r.model) != "mobilenet_v2"]
    fit = fit_pool(train, kind="cpu")
    coef, _ = fit.coefficients("pixel3")
    prof = DeviceProfile("t", "pixel3 without MobileNetV2", "cpu", coef)
    stored = {(m, p): est for m, p, _, est in PROFILES["pixel3"].validation.predictions}
    held = [r for r in rows if r.device == "pixel3" and model_family(r.model) == "mobilenet_v2"]
    assert held
    for r in held:
        est = prof.cost(features_from_totals(r.totals, "cpu")) * 1e3
        assert est == pytest.approx(stored[(r.model, r.precision)], rel=1e-9)
    # The full-data profile differs: the shipped fit did use MobileNetV2.
    full = PROFILES["pixel3"].coefficients
    assert any(abs(full[k] - prof.coefficients[k]) > 1e-15 for k in full)


def test_every_published_row_names_a_source_described_in_the_header():
    from tflight.devices.published import published_latency_path, published_rows

    header = "".join(ln for ln in published_latency_path().read_text().splitlines(True)
                      if ln.startswith("#"))
    rows = published_rows()
    assert len(rows) >= 130
    for r in rows:
        assert r.source and f"{r.source}:" in header, r
    assert {r.device for r in rows} >= {"pixel3", "pixel4", "pixel2-1core", "iphone-xs",
                                         "edgetpu-usb", "pixel3-gpu"}


def test_calibrate_refuses_too_few_figures():
    with pytest.raises(ValueError, match="at least 2"):
        calibrate([({"conv/fp32": [1, 1, 1, 1, 1]}, 1.0)], name="t", description="t")


def test_estimate_label_says_estimated_and_names_profile_and_error(cnn):
    fp32 = estimate_latency(cnn["fp32"], "pixel4")
    int8 = estimate_latency(cnn["int8"], "pixel4")
    assert fp32.label.startswith("estimated on pixel4; family-held-out error median ")
    assert "published figures" in fp32.label
    # The tiny CNN is far below the smallest published figure: the label says so.
    lo, _ = PROFILES["pixel4"].published_range_ms
    assert fp32.ms < lo and "extrapolated" in fp32.label
    # At a few microseconds per-op costs dominate: no claim on which precision wins.
    assert int8.ms > 0 and "extrapolated" in int8.label
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
    k8 = {k.split(":")[1]: v for k, v in prof.coefficients.items() if k.startswith("int8:")}
    expect = (k8["conv"] * c.macs + k8["conv_out"] * c.elements
              + prof.coefficients["fp32:light"] * c.elements + k8["act_bytes"] * c.bytes
              + k8["weight_bytes"] * c.weight_bytes + k8["mac_ops"])
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


# --- GPU delegate profiles -----------------------------------------------------


def test_gpu_estimate_follows_partitions_and_flags_fragmentation():
    import converters

    keras = _keras()
    inp = keras.Input((16, 16, 8), batch_size=1)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    x = keras.layers.Activation("elu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Activation("elu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(10)(x))
    work = model_work(converters.convert(model, "fp32", validate=False).flatbuffer)
    names = [o.op_name for o in work.ops]
    whole = estimate_latency(work, "pixel4-gpu")
    assert whole.partitions == ((len(names), 0),) and not whole.fragmented
    assert not whole.unsupported_ops and "FRAGMENTED" not in whole.label
    # As if a GPU run had refused ELU (converters.gpu.GpuRun.fallback names it so).
    split = estimate_latency(work, "pixel4-gpu", gpu_fallback=["ELU: not supported"])
    assert [p for p in split.partitions] == [(1, 1), (1, 1), (3, 0)]
    assert split.fragmented and "FRAGMENTED" in split.label and "3 GPU partitions" in split.label
    assert [u.split("#")[0] for u in split.unsupported_ops] == ["ELU", "ELU"]
    # The refused ops cost what they cost on the phone's CPU, plus the copies.
    cpu = estimate_latency(work, "pixel4")
    k = names.index("ELU")
    assert split.per_op_ms[k] > cpu.per_op_ms[k]
    # The convolution after the refused op pays the copy back to the GPU.
    assert split.per_op_ms[k + 1] > whole.per_op_ms[k + 1]
    assert split.to_dict()["fragmented"] is True


def test_gpu_rule_keeps_control_flow_on_the_cpu(grus):
    work = model_work(grus[10])
    est = estimate_latency(work, "pixel3-gpu")
    assert any(u.startswith("WHILE#") for u in est.unsupported_ops)
    assert any("GPU placement by rule" in n for n in est.notes)


def test_devices_checked_as_unfitted_are_in_no_pool():
    from tflight.devices.profiles import _POOLS, UNFITTED_DEVICES
    from tflight.devices.published import published_rows

    pooled = {d for devs in _POOLS.values() for d in devs}
    assert not pooled & set(UNFITTED_DEVICES)
    assert set(UNFITTED_DEVICES.values()) <= set(PROFILES)
    have = {r.device for r in published_rows()}
    assert set(UNFITTED_DEVICES) <= have
    # Every device of the table is either fitted in a pool or checked as unfitted.
    assert have <= pooled | set(UNFITTED_DEVICES)
