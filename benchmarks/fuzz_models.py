"""Random models through every technique: the failure classes a generator finds.

Each model of `benchmarks/modelgen.py` (tiny, random, valid Keras 3 models)
goes through sampled techniques and modes — prune, QAT, cluster, PQAT,
PCQAT, channel pruning, low rank, fp32 / fp16 / dynamic / int8 / 16x8
conversion, mixed precision — and every cell is classified:

- `working`: it worked and its checks held (sparsity reached on the pruned
  layers, at most 8 values per clustered kernel, quantize wrappers on the
  quantized layers, every layer with a kernel either compressed or listed
  with a reason, the `.tflite` run in LiteRT and agreeing with Keras on
  held-out inputs calibration never saw, within the converter's thresholds,
  integer modes computing in integers);
- `refused`: a documented tflight/converters error (one that is not a
  pass-through of the TFLite converter's own message);
- `converter_failed`: a converters error that only relays the TFLite
  converter's message;
- `raw_error`: any other exception, or a native crash of the converter;
- `unrunnable_tflite`: a file was produced that LiteRT could not run;
- `silent_float`: a layer or op left float (or dense) without being reported;
- `check_failed`: the call returned, but its result does not hold up.

The conversions share one converter child process (the converters package
starts one per Python process and reuses it).

Usage:
    .venv/bin/python benchmarks/fuzz_models.py --models 150 [--per-model 3] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import modelgen  # noqa: E402

COMPRESS = ("prune", "qat", "cluster", "pqat", "pcqat")
SHRINK = ("channels", "lowrank")
CONVERT = ("fp32", "fp16", "dynamic", "int8", "int16x8")
TECHNIQUES = (*COMPRESS, *SHRINK, *CONVERT, "mixed")
CLASSES = ("working", "refused", "converter_failed", "raw_error", "unrunnable_tflite",
           "silent_float", "check_failed")
N_CLUSTERS = 8
SPARSITY = 0.5


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (model, technique) outcome."""

    model: str
    seed: int
    technique: str
    outcome: str  # one of CLASSES
    reason: str
    seconds: float
    features: tuple[str, ...] = ()


class SilentFloat(AssertionError):
    """A layer or op left float (or dense) and not reported as such."""


# --------------------------------------------------------------------------
# Classification.


def classify(e: BaseException) -> str:
    """The outcome class of an exception a cell ended in."""
    import converters.errors
    import tflight.errors

    message = str(e)
    if isinstance(e, SilentFloat):
        return "silent_float"
    if isinstance(e, AssertionError):
        return "check_failed"
    if isinstance(e, converters.errors.PartialConversionError):
        return classify(next(iter(e.failures.values())))
    if isinstance(e, converters.errors.ConversionError):
        if "in LiteRT for validation failed" in message:
            return "unrunnable_tflite"
        if "converter process" in message and (
            "crashed" in message or "killed" in message or "could not start" in message
            or "exited" in message
        ):
            return "raw_error"
        if message.startswith("The TFLite converter failed on") and not e.layer:
            return "converter_failed"  # relays the converter, names no layer of the model
        return "refused"
    if isinstance(e, tflight.errors.TflightError):
        return "refused"
    return "raw_error"


# --------------------------------------------------------------------------
# Checks.


def _kernel_layers(model: Any) -> list[Any]:
    from tflight.compress._kernels import has_kernel

    out = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if has_kernel(inner):
            out.append(inner)
    return out


def _check_reported(model: Any, rep: Any) -> None:
    """Every layer with a kernel was compressed, or is listed with a reason."""
    accounted = set(rep.wrapped) | {n for n, _ in rep.skipped} | {n for n, _ in rep.kept_float}
    accounted |= set(rep.frozen)
    silent = [layer.name for layer in _kernel_layers(model) if layer.name not in accounted]
    if silent:
        raise SilentFloat(f"{rep.technique}: layers left as they were, unreported: {silent[:4]}")


def _held_out_int8(gen: modelgen.Generated, model: Any) -> str:
    """Converts a QAT model to int8 and checks it runs and agrees on held-out inputs."""
    import converters

    cal, held = gen.split()
    result = converters.convert(model, "int8", representative_data=cal, validation_data=held)
    _check_integer(result)
    return f"int8 {result.validation.short()}"


def _check_integer(result: Any) -> None:
    """An integer mode computes in integers, or its notes name the ops left float."""
    from converters.analysis import float_ops

    floats = float_ops(result.stats)
    said = any("compute in float" in n or "kept float" in n for n in result.notes)
    if floats and not said:
        raise SilentFloat(f"{result.mode.value}: ops left float, unreported: {sorted(floats)[:5]}")


def _compress(gen: modelgen.Generated, technique: str) -> str:
    import tflight

    prune = tflight.Prune(sparsity=SPARSITY, unsupported="skip")
    cluster = tflight.Cluster(n_clusters=N_CLUSTERS, unsupported="skip")
    qat = tflight.QAT(unsupported="keep_float")
    steps = {"prune": [prune], "qat": [qat], "cluster": [cluster], "pqat": [prune, qat],
             "pcqat": [prune, cluster, qat]}[technique]
    x, _ = gen.split()
    out = tflight.Pipeline(steps).fit(
        gen.model, x, gen.train_y(), compile={"optimizer": "adam", "loss": gen.loss},
        epochs=1, batch_size=16, verbose=0,
    )
    model = out.model
    reports = {r.technique: r for r in out.reports}
    notes = []
    for rep in out.reports:
        _check_reported(model, rep)
    if "prune" in reports:
        wrapped = set(reports["prune"].wrapped)
        rows = [r for r in tflight.sparsity_report(model).layers if r.layer in wrapped]
        short = [f"{r.layer} {r.sparsity:.0%}" for r in rows if r.sparsity < SPARSITY - 0.05]
        if not rows:
            raise SilentFloat(f"prune wrapped {sorted(wrapped)[:4]} but no weight is sparse")
        if short:
            raise AssertionError(f"pruned layers below {SPARSITY - 0.05:.0%}: {short[:4]}")
        notes.append(f"{len(rows)} weights >= {SPARSITY - 0.05:.0%} sparse")
    if "cluster" in reports and "qat" not in reports:
        from tflight.compress.clustering import unique_weights

        counts = unique_weights(model)
        over = [n for n in reports["cluster"].wrapped if counts.get(n, 0) > N_CLUSTERS]
        if over:
            raise AssertionError(f"clustered kernels with more than {N_CLUSTERS} values: {over}")
        notes.append(f"{len(reports['cluster'].wrapped)} kernels <= {N_CLUSTERS} values")
    if "qat" in reports:
        rep = reports["qat"]
        wrappers = {
            getattr(layer, "layer", layer).name
            for layer in model.layers
            if type(layer).__name__.startswith("QuantizeWrapper")
        }
        missing = [n for n in rep.wrapped if n not in wrappers
                   and type(model.get_layer(n)).__name__ != "BatchNormalization"]
        if missing:
            raise SilentFloat(f"QAT reports {missing[:4]} wrapped, but they have no wrapper")
        notes.append(f"{len(wrappers)} quantize wrappers, {len(rep.kept_float)} kept float")
        notes.append(_held_out_int8(gen, model))
    return "; ".join(notes)


def _predict(model: Any, x: Any) -> list[np.ndarray]:
    y = model(x, training=False)
    ys = y if isinstance(y, (list, tuple)) else [y]
    return [np.asarray(v, dtype=np.float32) for v in ys]


def _shrink(gen: modelgen.Generated, technique: str) -> str:
    import tflight

    _, held = gen.split()
    if technique == "channels":
        cut = tflight.prune_channels(gen.model, flops_target=0.5)
        before, after = cut.macs_before, cut.macs_after
    else:
        cut = tflight.factorize(gen.model, macs_target=0.5)
        before, after = cut.macs_before, cut.macs_after
    ys = _predict(cut.model, held)
    ref = _predict(gen.model, held)
    if [y.shape for y in ys] != [r.shape for r in ref]:
        raise AssertionError(f"output shapes changed: {[r.shape for r in ref]} -> {[y.shape for y in ys]}")
    if not all(np.isfinite(y).all() for y in ys):
        raise AssertionError("the smaller model outputs NaN or inf")
    if after > before:
        raise AssertionError(f"MACs grew: {before} -> {after}")
    return f"MACs {before} -> {after}"


def _convert(gen: modelgen.Generated, mode: str) -> str:
    import converters

    cal, held = gen.split()
    result = converters.convert(
        gen.model, mode,
        representative_data=cal if mode in ("int8", "int16x8") else None,
        validation_data=held,
    )
    v = result.validation
    if v is None or not v.passed or v.sample_source != "validation_data":
        raise AssertionError(f"not validated on held-out inputs: {v and v.short()}")
    if mode in ("int8", "int16x8"):
        _check_integer(result)
    notes = f"; {len(result.notes)} note(s)" if result.notes else ""
    return f"{result.size} bytes, {v.short()}{notes}"


def _mixed(gen: modelgen.Generated) -> str:
    import converters
    import tflight

    if isinstance(gen.y, list):
        raise_multi = "several outputs"
    else:
        raise_multi = None
    cal, held = gen.split()
    fp32 = converters.convert(gen.model, "fp32", validation_data=held)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        path = fp32.save(Path(tmp) / "model.tflite")
        y = gen.y[0] if raise_multi else gen.y
        found = tflight.search_precision(
            str(path), held, y[modelgen.N_CALIBRATION:], max_drop=30.0, calibration_data=cal,
            output=0 if raise_multi else None,
        )
    mix = collections.Counter(p.value for p in found.model.assignment.values())
    return f"precision mix {dict(mix)} within the 30 pt budget"


def run_cell(gen: modelgen.Generated, technique: str) -> Cell:
    """Runs one technique on one generated model and classifies the outcome."""
    start = time.perf_counter()
    # tflight's warnings (e.g. "converted a float32 twin of a mixed_float16
    # model") are part of a working cell's outcome, not failures, even where a
    # test run turns warnings into errors.
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        try:
            if technique in COMPRESS:
                what = _compress(gen, technique)
            elif technique in SHRINK:
                what = _shrink(gen, technique)
            elif technique in CONVERT:
                what = _convert(gen, technique)
            else:
                what = _mixed(gen)
            outcome = "working"
        except Exception as e:  # noqa: BLE001 - every failure is a cell outcome
            outcome, what = _failed(e)
    ours = sorted({
        str(w.message)[:80] for w in said
        if w.category.__module__.startswith(("tflight", "converters"))
    })
    if ours and outcome == "working":
        what = f"{what}; warned: {'; '.join(ours)[:200]}"
    return Cell(gen.name, gen.seed, technique, outcome, what, time.perf_counter() - start,
                gen.features)


def _failed(e: BaseException) -> tuple[str, str]:
    """A failed cell's outcome class and one-line description."""
    outcome = classify(e)
    what = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    if outcome == "raw_error" and os.environ.get("FUZZ_TRACE"):
        traceback.print_exc()
    return outcome, what


def sample_techniques(seed: int, k: int) -> list[str]:
    """The `k` techniques model `seed` goes through (all when k >= len(TECHNIQUES))."""
    if k >= len(TECHNIQUES):
        return list(TECHNIQUES)
    return random.Random(seed * 7919 + 1).sample(TECHNIQUES, k)


# --------------------------------------------------------------------------
# The benchmark.


def headline(cells: list[Cell], models: int, generator_failures: int = 0) -> dict[str, int]:
    count = collections.Counter(c.outcome for c in cells)
    return {
        "models": models,
        "generator_failures": generator_failures,
        "cells": len(cells),
        "cells_ok": count["working"] + count["refused"],
        "cells_working": count["working"],
        "cells_refused": count["refused"],
        "raw_errors": count["raw_error"],
        "unrunnable_tflite": count["unrunnable_tflite"],
        "silent_float": count["silent_float"],
        "converter_failed": count["converter_failed"],
        "checks_failed": count["check_failed"],
    }


def failure_classes(cells: list[Cell]) -> dict[str, dict[str, Any]]:
    """Failures grouped by (outcome, technique, first words of the message), one example each."""
    groups: dict[str, dict[str, Any]] = {}
    for c in cells:
        if c.outcome == "working":
            continue
        key = f"{c.outcome} | {c.technique} | {' '.join(c.reason.split()[:7])}"
        g = groups.setdefault(key, {"count": 0, "example": dataclasses.asdict(c)})
        g["count"] += 1
    return dict(sorted(groups.items(), key=lambda kv: -kv[1]["count"]))


def _write(
    path: Path, cells: list[Cell], models: int, args: dict[str, Any], generator_failures: int
) -> None:
    payload = {
        "headline": headline(cells, models, generator_failures),
        "command": args,
        "failure_classes": failure_classes(cells),
        "cells": [dataclasses.asdict(c) for c in cells],
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def _command(args: argparse.Namespace, start: float) -> dict[str, Any]:
    return vars(args) | {"json": str(args.json), "seconds": round(time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=150, help="random models to generate")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--per-model", type=int, default=3,
                        help=f"techniques sampled per model ({len(TECHNIQUES)} = all)")
    parser.add_argument("--hub", action="store_true", help="add the keras-hub backbones")
    parser.add_argument("--json", type=Path, help="write the headline, classes and cells here")
    args = parser.parse_args(argv)
    cells: list[Cell] = []
    models = failed = 0
    start = time.perf_counter()
    jobs: list[tuple[Any, list[str]]] = [
        (seed, sample_techniques(seed, args.per_model))
        for seed in range(args.seed, args.seed + args.models)
    ]
    if args.hub:
        jobs += [(name, list(TECHNIQUES[:1] + CONVERT)) for name in modelgen.KERAS_HUB]
    for seed, techniques in jobs:
        try:
            gen = modelgen.hub_model(seed) if isinstance(seed, str) else modelgen.generate(seed)
        except Exception as e:  # noqa: BLE001 - a generator bug is a failure of ours
            print(f"seed {seed}: the generator failed: {type(e).__name__}: {e}", flush=True)
            failed += 1
            continue
        models += 1
        for technique in techniques:
            cell = run_cell(gen, technique)
            cells.append(cell)
            print(f"{gen.name:<12} {technique:<9} {cell.outcome:<17} {cell.reason[:150]}  "
                  f"({cell.seconds:.1f} s)", flush=True)
        if args.json:  # after every model: a long run can be read as it goes
            _write(args.json, cells, models, _command(args, start), failed)
    print("\nfailure classes (count, one example each):")
    for key, g in failure_classes(cells).items():
        ex = g["example"]
        print(f"  {g['count']:>3}  {key}\n        e.g. seed {ex['seed']} {ex['features']}: "
              f"{ex['reason'][:200]}")
    result = headline(cells, models, failed)
    print(f"\n{json.dumps(result)}  ({time.perf_counter() - start:.0f} s)")
    if args.json:
        _write(args.json, cells, models, _command(args, start), failed)
    return 0 if result["raw_errors"] == 0 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
