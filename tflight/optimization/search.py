"""`optimize`: the search loop, with a time budget, progress, a resumable cache, honest selection.

Cheap candidates come first (PTQ), then the mixed-precision search, then the
training candidates, each trained only if its untrained structure -- whose
size and estimated latency training does not change -- can beat the best
candidate found so far. Candidates are compared on the validation split only;
the chosen one is measured once on the test split at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tflight.optimization import candidates as C
from tflight.optimization import measure, training
from tflight.optimization.cache import Cache, search_key
from tflight.optimization.inputs import OptimizeError, prepare, resolve_device
from tflight.optimization.result import CandidateResult, OptimizeResult

__all__ = ["optimize"]

_OBJECTIVES = ("latency", "size")


def optimize(
    model: Any,
    train_data: Any,
    validation_data: Any = None,
    *,
    test_data: Any = None,
    device: str = "pixel4",
    max_drop: float = 0.5,
    objective: str = "latency",
    size_budget: int | None = None,
    latency_budget_ms: float | None = None,
    time_budget: float | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    holdout: float = 0.2,
    test_fraction: float = 0.2,
    confidence: float = 0.95,
    epochs: int | None = None,
    techniques: Sequence[str] | None = None,
    strategy: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    measure_host: bool = True,
    custom_objects: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> OptimizeResult:
    """Finds the smallest or fastest verified `.tflite` of a classifier within an accuracy budget.

    Args:
      model: a Keras 3 classifier (one input, one output of class scores) or
        the path of its `.keras` / `.h5` file.
      train_data: `(x, y)` or an `.npz` path (arrays `x`, `y`).
      validation_data: `(x, y)` or `.npz` for selection; None holds `holdout`
        of the training data out.
      test_data: `(x, y)` or `.npz` measured once, after selection; None holds
        `test_fraction` of the training data back from the start.
      device: a key of `tflight.optimization.DEVICES` (pixel4, pixel3, cortex-a53,
        edgetpu, gpu, npu).
      max_drop: accuracy budget in points: a candidate counts only if the
        one-sided bound at `confidence` on its paired drop against the fp32
        baseline, on the validation split, is within it.
      objective: "latency" (the device profile's estimate) or "size" (raw bytes).
      size_budget: bytes the chosen model must not exceed.
      latency_budget_ms: estimated milliseconds it must not exceed.
      time_budget: seconds; no candidate starts after it, and a training
        candidate whose expected time does not fit is skipped.
      output_dir: where the chosen `model.tflite`, the Pareto front's files,
        `report.json`, `report.html` and the data splits go (None: nothing written).
      holdout, test_fraction: shares held out when the splits are not given.
      confidence: confidence of the drop bounds.
      epochs: fine-tuning epochs (default: scaled to the training set).
      techniques: candidate names to try (default: all that apply).
      strategy: a `tf.distribute.Strategy` for the plain fine-tuning candidates;
        TF-MOT candidates are then skipped with the reason.
      cache_dir: cache folder (default: `output_dir/.cache`); a re-run with the
        same model, data and settings reuses every finished candidate.
      measure_host: also measure each candidate's latency on this host.
      custom_objects: for loading a model file with custom layers.
      progress: called with one line per candidate, stage and epoch.
      seed: seed of the splits and the training.

    Returns:
      An `OptimizeResult`; `met` is False (and `winner` None) if no candidate
      meets every budget: `best_missed` and `verdict` then say by how much.

    Raises:
      OptimizeError: bad inputs, found before any training.
    """
    say = progress or (lambda _m: None)
    dev = resolve_device(device)
    if objective not in _OBJECTIVES:
        raise OptimizeError(f"Unknown objective {objective!r}; choose latency or size.",
                            option="objective", kind="bad_objective")
    for name, value in (("size_budget", size_budget), ("latency_budget_ms", latency_budget_ms),
                        ("time_budget", time_budget)):
        if value is not None and not value > 0:
            raise OptimizeError(f"{name} must be positive, got {value!r}.", option=name,
                                kind="bad_budget")
    if epochs is not None and epochs < 1:
        raise OptimizeError(f"epochs must be at least 1, got {epochs!r}.", option="epochs")
    out = None if output_dir is None else os.fspath(output_dir)
    created = out is not None and not os.path.exists(out)
    try:
        d = prepare(model, train_data, validation_data, test_data, holdout=holdout,
                    test_fraction=test_fraction, max_drop=max_drop, confidence=confidence,
                    output_dir=out, custom_objects=custom_objects, seed=seed)
    except BaseException:
        # The folder was made to prove it takes files; a refused input leaves nothing behind.
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
        raise
    start = time.perf_counter()
    ctx = C.Context(d, dev, objective, max_drop, confidence,
                    epochs or training.default_epochs(len(d.x_train)), strategy, seed, progress)
    specs = C.plan(ctx, tuple(techniques) if techniques is not None else None)
    known = {s.name for s in C.plan(ctx)}
    if techniques is not None and set(techniques) - known:
        raise OptimizeError(f"Unknown or inapplicable techniques {sorted(set(techniques) - known)}"
                            f"; these apply here: {sorted(known)}.", option="techniques")
    say(f"{len(d.x_train)} training, {len(d.x_val)} validation, {len(d.x_test)} test samples; "
        f"{len(specs)} candidates for {dev.name} ({objective})")

    settings = {"device": dev.name, "objective": objective, "max_drop": max_drop,
                "confidence": confidence, "epochs": ctx.epochs, "seed": seed,
                "strategy": type(strategy).__name__ if strategy is not None else None}
    cache = None
    if cache_dir is not None or out is not None:
        key = search_key(d.model, [d.x_train, d.y_train, d.x_val, d.y_val], settings)
        cache = Cache(cache_dir if cache_dir is not None else os.path.join(out, ".cache"), key)

    say("baseline: converting to fp32 and verifying in LiteRT ...")
    base_content = _fp32_cpu(d.model, d.x_val)
    base_val = measure.correct(base_content, d.x_val, d.y_val)
    baseline = _measure(C.Spec("fp32", "baseline: fp32 conversion", "ptq", "fp32"),
                        base_content, ctx, base_val, measure_host, device_rule=False)
    baseline.meets = False

    results: list[CandidateResult] = []
    contents: dict[str, bytes] = {}
    per_epoch: list[float] = []
    stopped = False
    for i, spec in enumerate(specs):
        tag = f"[{i + 1}/{len(specs)}] {spec.name}"
        elapsed = time.perf_counter() - start
        if time_budget is not None and elapsed >= time_budget:
            stopped = True
            results.append(CandidateResult(spec.to_dict(), "skipped",
                                           f"time budget ({time_budget:.0f} s) spent"))
            continue
        hit = cache.get(spec.name) if cache is not None else None
        if hit is not None:
            content, record = hit
            r = CandidateResult.from_dict(record)
            r.cached = True
            results.append(r)
            if content is not None:
                contents[spec.name] = content
            say(f"{tag}: from the cache ({r.status})")
            continue
        best = _best(results, objective)
        t0 = time.perf_counter()
        if spec.kind == "train":
            skip = _why_skip_training(spec, ctx, best, objective, per_epoch, time_budget,
                                      elapsed, say, tag)
            if skip:
                r = CandidateResult(spec.to_dict(), "skipped", skip)
                results.append(r)
                if cache is not None and "time budget" not in skip:
                    cache.put(spec.name, None, r.to_dict())
                say(f"{tag}: skipped, {skip}")
                continue
        say(f"{tag}: building ({spec.technique}) ...")
        try:
            built = C.build(spec, ctx)
        except Exception as e:  # noqa: BLE001 - a failed candidate is reported, not fatal
            if not _is_library_error(e):
                raise
            r = CandidateResult(spec.to_dict(), "failed", _one_line(e),
                                seconds=time.perf_counter() - t0)
            results.append(r)
            if cache is not None and getattr(e, "kind", None) != "strategy_unsupported":
                cache.put(spec.name, None, r.to_dict())
            say(f"{tag}: failed, {r.reason}")
            continue
        if built.train_seconds and ctx.epochs:
            per_epoch.append(built.train_seconds / ctx.epochs)
        r = _measure(spec, built.flatbuffer, ctx, base_val, False)
        r.layers, r.kept_float, r.notes = built.layers, built.kept_float, built.notes
        r.train_seconds, r.seconds = built.train_seconds, time.perf_counter() - t0
        _judge(r, max_drop, size_budget, latency_budget_ms, objective)
        results.append(r)
        contents[spec.name] = built.flatbuffer
        if cache is not None:
            cache.put(spec.name, built.flatbuffer, r.to_dict())
        say(f"{tag}: {r.size:,} bytes, {r.estimated_ms:.3f} ms estimated, validation "
            f"{r.validation.accuracy:.2%} (drop <= {r.validation.drop_bound_pt:.2f} pt)"
            f"{'' if r.meets else ' - does not count: ' + r.reason}")

    for r in results:  # the verdict of cached records under this run's budgets
        if r.status == "measured":
            _judge(r, max_drop, size_budget, latency_budget_ms, objective)
    _mark_pareto(results, objective)
    winner = _best(results, objective)
    best_missed = None if winner is not None else _closest(results)
    chosen = winner or best_missed
    if measure_host:
        # A measurement takes seconds (a child process each): the baseline, plain
        # int8 PTQ, the Pareto front and the chosen candidate get one.
        say("measuring host latency of the baseline, int8 PTQ and the Pareto front ...")
        for r in results:
            if r.host_ms is None and r.name in contents and (
                    r.pareto or r is chosen or r.name == "int8"):
                r.host_ms = measure.host_ms(contents[r.name])
    test = None
    if chosen is not None:
        # The only place the test split is read: once, for the chosen candidate.
        base_test = measure.correct(base_content, d.x_test, d.y_test)
        test = measure.paired(contents[chosen.name], d.x_test, d.y_test, base_test,
                              split="test", confidence=confidence)
    verdict = _verdict(winner, best_missed, baseline, max_drop, size_budget, latency_budget_ms,
                       objective, dev.name)
    result = OptimizeResult(
        device=dev.name, device_rule=dev.rule, objective=objective, max_drop_pt=max_drop,
        confidence=confidence, size_budget=size_budget, latency_budget_ms=latency_budget_ms,
        baseline=baseline, candidates=results, winner=winner, best_missed=best_missed,
        met=winner is not None, verdict=verdict, test=test,
        validation_source=d.validation_source, test_source=d.test_source,
        search_seconds=time.perf_counter() - start,
        train_seconds=sum(r.train_seconds for r in results if not r.cached),
        output_dir=out, time_budget_s=time_budget, stopped_by_time=stopped, epochs=ctx.epochs,
    )
    if out is not None:
        from tflight.optimization.files import write_outputs

        write_outputs(result, d, contents, base_content, say)
    return result


def _fp32_cpu(model: Any, x: np.ndarray) -> bytes:
    import converters

    return converters.convert(model, "fp32", sample_data=x[:32]).flatbuffer


def _is_library_error(e: BaseException) -> bool:
    import converters
    from tflight.errors import TflightError

    return isinstance(e, (TflightError, converters.ConversionError))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _measure(spec: C.Spec, content: bytes, ctx: C.Context, base_val: np.ndarray,
             measure_host: bool, *, device_rule: bool = True) -> CandidateResult:
    d = ctx.data
    est, label = measure.estimated_ms(content, ctx.device.profile)
    val = measure.paired(content, d.x_val, d.y_val, base_val, split="validation",
                         confidence=ctx.confidence)
    dev = measure.device_check(content, spec.storage, ctx.device) if device_rule else {}
    return CandidateResult(spec.to_dict(), "measured", size=len(content), estimated_ms=est,
                           estimate_label=label,
                           host_ms=measure.host_ms(content) if measure_host else None,
                           validation=val, device=dev)


def _judge(r: CandidateResult, max_drop: float, size_budget: int | None,
           latency_budget_ms: float | None, objective: str) -> None:
    reasons = []
    if r.device and not r.device.get("eligible", True):
        reasons.append(f"device rule: {r.device.get('reason')}")
    if r.validation.drop_bound_pt > max_drop:
        reasons.append(f"drop bound {r.validation.drop_bound_pt:.2f} pt > max_drop "
                       f"{max_drop:g} pt")
    if size_budget is not None and r.size > size_budget:
        reasons.append(f"{r.size:,} bytes > size budget {size_budget:,}")
    if latency_budget_ms is not None and r.estimated_ms > latency_budget_ms:
        reasons.append(f"{r.estimated_ms:.3f} ms estimated > latency budget "
                       f"{latency_budget_ms:g} ms")
    r.meets = not reasons
    r.reason = "; ".join(reasons)


def _best(results: list[CandidateResult], objective: str) -> CandidateResult | None:
    ok = [r for r in results if r.status == "measured" and r.meets]
    if not ok:
        return None
    return min(ok, key=lambda r: (r.cost(objective), r.validation.drop_bound_pt, r.size))


def _closest(results: list[CandidateResult]) -> CandidateResult | None:
    """When nothing meets: the measured candidate with the lowest drop bound (device rule first)."""
    measured = [r for r in results if r.status == "measured"]
    if not measured:
        return None
    return min(measured, key=lambda r: (not r.device.get("eligible", True),
                                        r.validation.drop_bound_pt, r.size))


def _why_skip_training(spec: C.Spec, ctx: C.Context, best: CandidateResult | None,
                       objective: str, per_epoch: list[float], time_budget: float | None,
                       elapsed: float, say: Callable[[str], None], tag: str) -> str:
    if time_budget is not None and per_epoch:
        expected = float(np.median(per_epoch)) * ctx.epochs
        if elapsed + expected > time_budget:
            return (f"time budget: about {expected:.0f} s of training would not fit in the "
                    f"{time_budget - elapsed:.0f} s left")
    if best is None:
        return ""
    say(f"{tag}: predicting its size and latency from the untrained structure ...")
    try:
        shape = C.shape_of(spec, ctx)
    except Exception as e:  # noqa: BLE001 - reported as the candidate's failure later
        if not _is_library_error(e):
            raise
        return f"its structure could not be built: {_one_line(e)}"
    if shape is None:
        return ""
    predicted = (measure.estimated_ms(shape, ctx.device.profile)[0] if objective == "latency"
                 else len(shape))
    if predicted >= best.cost(objective):
        if objective == "latency":
            mine, theirs = f"{predicted:.3f} ms estimated", f"{best.cost(objective):.3f} ms"
        else:
            mine, theirs = f"{predicted:,.0f} bytes", f"{best.cost(objective):,.0f}"
        return (f"cannot beat the best so far: its structure gives {mine}, {best.name} "
                f"already has {theirs} within budget")
    return ""


def _mark_pareto(results: list[CandidateResult], objective: str) -> None:
    pts = [r for r in results if r.status == "measured" and r.device.get("eligible", True)]
    for r in pts:
        r.pareto = not any(
            o is not r and o.validation.accuracy >= r.validation.accuracy
            and o.cost(objective) <= r.cost(objective)
            and (o.validation.accuracy > r.validation.accuracy
                 or o.cost(objective) < r.cost(objective))
            for o in pts
        )


def _verdict(winner: CandidateResult | None, missed: CandidateResult | None,
             baseline: CandidateResult, max_drop: float, size_budget: int | None,
             latency_budget_ms: float | None, objective: str, device: str) -> str:
    if winner is not None:
        gain = (f"{baseline.estimated_ms / winner.estimated_ms:.2f}x faster (estimated, "
                f"{device})" if objective == "latency"
                else f"{baseline.size / winner.size:.2f}x smaller")
        return (f"MET: {winner.name} ({winner.spec['technique']}) is {gain} than fp32, drop "
                f"<= {winner.validation.drop_bound_pt:.2f} pt on validation (max_drop "
                f"{max_drop:g}).")
    if missed is None:
        return "MISSED: no candidate could be built and measured."
    parts = []
    if missed.validation.drop_bound_pt > max_drop:
        parts.append(f"its drop bound {missed.validation.drop_bound_pt:.2f} pt exceeds max_drop "
                     f"by {missed.validation.drop_bound_pt - max_drop:.2f} pt")
    if size_budget is not None and missed.size > size_budget:
        parts.append(f"{missed.size - size_budget:,} bytes over the size budget")
    if latency_budget_ms is not None and missed.estimated_ms > latency_budget_ms:
        parts.append(f"{missed.estimated_ms - latency_budget_ms:.3f} ms over the latency budget")
    if missed.device and not missed.device.get("eligible", True):
        parts.append(f"the device rule fails: {missed.device.get('reason')}")
    return (f"MISSED: no candidate meets the budgets; the closest is {missed.name} "
            f"({missed.spec['technique']}): {'; '.join(parts) or missed.reason}. It is not "
            "written as the chosen model.")
