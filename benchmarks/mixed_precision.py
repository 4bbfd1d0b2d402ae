"""Mixed precision and int4 weights, side by side, measured through LiteRT.

Trains two small models on scikit-learn's bundled digits (fixed seeds): a CNN
on the 8x8 images, and a transformer block (Dense embedding + positions,
MultiHeadAttention, LayerNormalization, feed-forward) reading each digit as a
sequence of 8 rows. For each: the fp32 file, uniform int8 (TFLite converter),
int4 weights where LiteRT has int4 kernels (litert-quantizer, int8 elsewhere),
int4 blockwise weights everywhere, and the mixed-precision search at a 0.5 pt
budget (by size and by estimated latency). Then the CNN is pruned, clustered (16
clusters) and quantization-aware trained (PCQAT) and stored as int8 and as int4.

The search's budget is a claim about new data: it accepts a configuration only
if the one-sided 95% upper bound on its drop (exact binomial on the samples the
float model gets right and the candidate wrong) is within 0.5 pt. With n
search samples that bound is at least 1 - 0.05^(1/n), so 0.5 pt needs >= 598
of them; the benchmark therefore gives the search 700 validation digits. The
size search runs twice, guided by each sensitivity view ("alone", the default:
a layer quantized in a float model; "kept-float": a layer kept float in a
quantized model), and each view's estimate is scored (Spearman) against the
output error measured on every configuration the search evaluated.

Data: the models train on 647 training digits; the search measures its drops on
the other 700 training digits (validation), calibration uses 300 of the 647;
every accuracy below is measured in LiteRT on the 450 held-out test digits, which
neither training, calibration nor the search saw. Latency is the `pixel4`
device profile's estimate (labelled estimated), not a measurement.

Usage:
  python benchmarks/mixed_precision.py [--json PATH] [--profile pixel4]

Targets (printed as PASS/FAIL at the end):
  * the searched CNN >= 5x smaller raw than fp32 at <= 0.5 pt accuracy loss;
  * PCQAT with int4 storage >= 1.7x smaller raw than PCQAT int8.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import converters  # noqa: E402
import tflight  # noqa: E402
from converters.files import write_json  # noqa: E402
from tflight.devices.profiles import estimate_latency  # noqa: E402
from tflight.precision.int4 import quantize_int4  # noqa: E402
from tflight.precision.model import list_layers  # noqa: E402
from tflight.precision.recipes import quantize_layers  # noqa: E402
from tflight.precision.search import search  # noqa: E402

SEED = 0
N_VAL = 700
N_CAL = 300


@dataclasses.dataclass
class Row:
    model: str
    variant: str
    size: int
    gzip_size: int
    accuracy: float
    accuracy_drop_pt: float
    estimated_latency_ms: float
    size_ratio: float
    gzip_ratio: float
    search_seconds: float | None = None
    assignment: dict | None = None


def _gzip(b: bytes) -> int:
    return len(gzip.compress(b, compresslevel=9, mtime=0))


def _accuracy(content: bytes, x, y) -> float:
    out = converters.TFLiteModel(content).predict(x, batch_size=64)
    return float(np.mean(np.argmax(out, -1) == y))


def cnn(keras):
    # Sequential: the PCQAT pipeline below refuses the InputLayer of a
    # Functional model in its QAT stage.
    keras.utils.set_random_seed(SEED)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ], name="digits_cnn")


def transformer(keras):
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8, 8))  # 8 rows of 8 pixels: a sequence of 8 tokens
    h = keras.layers.Dense(64, name="embed")(inp)
    pos = keras.layers.Embedding(8, 64, name="positions")(np.arange(8)[None])
    h = h + pos
    a = keras.layers.MultiHeadAttention(4, 16, name="mha")(h, h)
    h = keras.layers.LayerNormalization(name="ln1")(h + a)
    f = keras.layers.Dense(128, activation="relu", name="ffn1")(h)
    f = keras.layers.Dense(64, name="ffn2")(f)
    h = keras.layers.LayerNormalization(name="ln2")(h + f)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(10, name="logits")(h)
    return keras.Model(inp, out, name="digits_transformer")


def run_model(name, model, data, profile, rows, args):
    (x_tr, y_tr), (x_val, y_val), (x_te, y_te), cal = data
    t = time.perf_counter()
    fp32 = converters.convert(model, "fp32").flatbuffer
    float_acc = _accuracy(fp32, x_te, y_te)
    print(f"[{name}] fp32 {len(fp32):,} B, test accuracy {float_acc:.2%}", flush=True)

    def add(variant, content, *, seconds=None, assignment=None):
        acc = _accuracy(content, x_te, y_te)
        row = Row(
            model=name,
            variant=variant,
            size=len(content),
            gzip_size=_gzip(content),
            accuracy=acc,
            accuracy_drop_pt=100 * (float_acc - acc),
            estimated_latency_ms=estimate_latency(content, profile).ms,
            size_ratio=len(fp32) / len(content),
            gzip_ratio=_gzip(fp32) / _gzip(content),
            search_seconds=seconds,
            assignment=assignment,
        )
        rows.append(row)
        print(f"[{name}] {variant:<22} {row.size:>9,} B  {row.size_ratio:5.2f}x  "
              f"acc {acc:.2%} ({row.accuracy_drop_pt:+.2f} pt)", flush=True)
        return row

    add("fp32", fp32)
    add("int8 (converter)", converters.convert(model, "int8", representative_data=cal).flatbuffer)
    add("int4 where kernels", quantize_int4(fp32, calibration_data=cal).flatbuffer)
    # Blockwise int4 where litert-quantizer can (FULLY_CONNECTED with input dims
    # divisible by 32), per-channel int4 on other FC/CONV_2D layers, int8 elsewhere.
    blockwise = {}
    for layer in list_layers(fp32):
        choice = "int4" if layer.op in ("FULLY_CONNECTED", "CONV_2D") else "int8"
        try:
            trial = quantize_layers(fp32, {layer.name: "int4-block"}, calibration_data=cal)
            if not trial.not_as_assigned:
                choice = "int4-block"
        except tflight.errors.PrecisionError:
            pass
        blockwise[layer.name] = choice
    q = quantize_layers(fp32, blockwise, calibration_data=cal, other="int8")
    add("int4-block where able", q.flatbuffer, assignment=blockwise)
    out = {}
    for key, objective, guide in (("size", "size", "alone"),
                                  ("latency", "latency", "alone"),
                                  ("size_kept_float", "size", "kept-float")):
        try:
            res = search(fp32, x_val, y_val, max_drop=args.max_drop, calibration_data=cal,
                         test_data=(x_te, y_te), objective=objective, profile=profile,
                         guide=guide)
        except tflight.errors.PrecisionBudgetError as e:
            res = e.best
            print(f"[{name}] search ({objective}, {guide}): {e}")
        row = add(f"searched ({objective}, {guide})", res.model.flatbuffer,
                  seconds=res.seconds,
                  assignment={k: v.value for k, v in res.assignment.items()})
        print(f"[{name}]   claim: {res.claim}", flush=True)
        out[key] = {"row": row, "result": res}
    print(f"[{name}] done in {time.perf_counter() - t:.0f} s", flush=True)
    return fp32, float_acc, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--profile", default="pixel4", help="device profile for the estimates")
    parser.add_argument("--max-drop", type=float, default=0.5, help="search budget, points")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import keras

    d = tflight.load_digits(seed=SEED)
    x_tr, y_tr = d.x_train[:-N_VAL], d.y_train[:-N_VAL]
    x_val, y_val = d.x_train[-N_VAL:], d.y_train[-N_VAL:]
    x_te, y_te = d.x_test, d.y_test
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rows: list[Row] = []

    m = cnn(keras)
    m.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    m.fit(x_tr, y_tr, epochs=args.epochs, batch_size=32, verbose=0)
    cal = x_tr[:N_CAL]
    data = ((x_tr, y_tr), (x_val, y_val), (x_te, y_te), cal)
    cnn_fp32, cnn_acc, cnn_search = run_model("cnn", m, data, args.profile, rows, args)

    t = transformer(keras)
    t.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    seq = lambda a: a.reshape(len(a), 8, 8)  # noqa: E731
    t.fit(seq(x_tr), y_tr, epochs=args.epochs, batch_size=32, verbose=0)
    tdata = ((seq(x_tr), y_tr), (seq(x_val), y_val), (seq(x_te), y_te), seq(cal))
    _, _, tr_search = run_model("transformer", t, tdata, args.profile, rows, args)

    # PCQAT on the trained CNN, then int8 (converter, QAT ranges) vs int4 storage.
    steps = -(-len(x_tr) // 32)
    pc = tflight.Pipeline([
        tflight.Prune(sparsity=tflight.PolynomialDecay(0.8, end_step=4 * steps)),
        tflight.Cluster(n_clusters=16),
        tflight.QAT(),
    ]).fit(m, x_tr, y_tr, epochs=6, batch_size=32, verbose=0,
           compile={"optimizer": keras.optimizers.Adam(1e-4), "loss": loss})
    pc8 = converters.convert(pc.model, "int8", representative_data=cal).flatbuffer
    pc4 = quantize_int4(pc.model, calibration_data=cal).flatbuffer
    for variant, content in (("pcqat int8", pc8), ("pcqat int4 storage", pc4)):
        acc = _accuracy(content, x_te, y_te)
        rows.append(Row("cnn", variant, len(content), _gzip(content), acc,
                        100 * (cnn_acc - acc), estimate_latency(content, args.profile).ms,
                        len(cnn_fp32) / len(content), _gzip(cnn_fp32) / _gzip(content)))
        print(f"[cnn] {variant:<22} {len(content):>9,} B  acc {acc:.2%}", flush=True)

    print()
    head = (f"{'model':<12} {'variant':<22} {'raw':>9} {'ratio':>6} {'gzip':>9} {'ratio':>6} "
            f"{'accuracy':>8} {'drop':>7} {f'{args.profile} (est.)':>16} {'search':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        s = "" if r.search_seconds is None else f"{r.search_seconds:.1f}s"
        print(f"{r.model:<12} {r.variant:<22} {r.size:>9,} {r.size_ratio:>5.2f}x "
              f"{r.gzip_size:>9,} {r.gzip_ratio:>5.2f}x {r.accuracy:>8.2%} "
              f"{r.accuracy_drop_pt:>+6.2f}p {r.estimated_latency_ms:>13.4f} ms {s:>7}")
    print(f"accuracy: LiteRT on the {len(x_te)} held-out test digits; drop vs the fp32 file; "
          f"latency: {args.profile} profile estimate, not measured.")

    guides = {}
    print()
    print("Which sensitivity view guides the size search better (same budget, same data):")
    for mname, res in (("cnn", cnn_search), ("transformer", tr_search)):
        guides[mname] = {}
        for key, guide in (("size", "alone"), ("size_kept_float", "kept-float")):
            r, row = res[key]["result"], res[key]["row"]
            guides[mname][guide] = {
                "size": row.size, "evaluations": r.evaluations, "met_budget": r.met_budget,
                "validation_drop_bound_pt": r.search_drop_bound_pt,
                "test_drop_pt": row.accuracy_drop_pt,
                "spearman_fit_on_evaluated_configurations": dict(r.guide_fit),
            }
            fit = ", ".join(f"{k} {v:+.2f}" for k, v in r.guide_fit.items())  # nan: too few
            print(f"  {mname:<12} {guide:<11} {row.size:>9,} B  {r.evaluations:>3} models  "
                  f"bound {r.search_drop_bound_pt:.2f} pt  test drop {row.accuracy_drop_pt:+.2f} pt"
                  f"  fit of each view to the {len(r.steps)} configurations: {fit}")

    searched = cnn_search["size"]
    tsearched = tr_search["size"]
    pcqat_ratio = len(pc8) / len(pc4)
    headline = {
        "searched_raw_size_ratio": searched["row"].size_ratio,
        "searched_accuracy_drop_pt": searched["row"].accuracy_drop_pt,
        "pcqat_int4_vs_int8_raw_ratio": pcqat_ratio,
        "searched_met_budget": searched["result"].met_budget,
        "searched_validation_drop_pt": searched["result"].search_drop_pt,
        "searched_validation_drop_bound_pt": searched["result"].search_drop_bound_pt,
        "transformer_searched_raw_size_ratio": tsearched["row"].size_ratio,
        "transformer_searched_accuracy_drop_pt": tsearched["row"].accuracy_drop_pt,
        "transformer_searched_test_drop_pt": tsearched["row"].accuracy_drop_pt,
        "transformer_searched_met_budget": tsearched["result"].met_budget,
        "transformer_searched_validation_drop_bound_pt": tsearched["result"].search_drop_bound_pt,
        "budget_pt": args.max_drop,
        "confidence": searched["result"].confidence,
        "search_samples": searched["result"].search_samples,
        "test_samples": len(x_te),
        "accuracy_data": f"LiteRT on {len(x_te)} held-out test digits (sklearn digits)",
    }
    targets = {
        "searched >= 5x smaller raw at <= 0.5 pt": headline["searched_raw_size_ratio"] >= 5
        and headline["searched_accuracy_drop_pt"] <= 0.5,
        "pcqat int4 >= 1.7x smaller raw than pcqat int8": pcqat_ratio >= 1.7,
    }
    print()
    print(f"searched CNN: {headline['searched_raw_size_ratio']:.2f}x smaller raw than fp32, "
          f"{headline['searched_accuracy_drop_pt']:+.2f} pt on the test digits "
          f"({searched['result'].claim})")
    print(f"searched transformer: {headline['transformer_searched_raw_size_ratio']:.2f}x smaller "
          f"raw, {headline['transformer_searched_test_drop_pt']:+.2f} pt on the test digits "
          f"({tsearched['result'].claim})")
    print(f"PCQAT int4 storage vs PCQAT int8: {pcqat_ratio:.2f}x smaller raw")
    for k, ok in targets.items():
        print(f"{'PASS' if ok else 'FAIL'}: {k}")
    print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        payload = {
            "headline": headline,
            "targets": targets,
            "profile": args.profile,
            "latency": "estimated by the device profile, not measured",
            "rows": [dataclasses.asdict(r) for r in rows],
            "searches": {
                name: res["result"].to_dict()
                for name, res in (("cnn_size", cnn_search["size"]),
                                  ("cnn_latency", cnn_search["latency"]),
                                  ("cnn_size_kept_float", cnn_search["size_kept_float"]),
                                  ("transformer_size", tr_search["size"]),
                                  ("transformer_latency", tr_search["latency"]),
                                  ("transformer_size_kept_float",
                                   tr_search["size_kept_float"]))
            },
            "guide_comparison": guides,
            "seconds": time.perf_counter() - start,
        }
        write_json(args.json, payload, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
