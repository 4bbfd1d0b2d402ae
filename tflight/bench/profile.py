"""The per-op profile of a benchmark, estimated by timing model prefixes.

LiteRT's Python API has no per-op profiler, so each prefix of the model (its
first k ops, cut by `converters.analysis.prefix_models`) is timed in one clean
child and the differences of the medians are attributed to the ops; when that
fails, the pixel4 device profile's estimate stands in, and says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tflight.bench._runner import run_child
from tflight.bench.results import BenchmarkConfig, OpProfile, OpTiming
from tflight.devices.profiles import estimate_latency, model_work
from tflight.errors import BenchmarkError

__all__ = ["delegated_ops", "measure_profile"]


def delegated_ops(ops: list[dict]) -> dict[int, bool] | None:
    """Which original ops ran inside a delegate partition (from DELEGATE nodes)."""
    if not ops:
        return None
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {t: o["index"] for o in originals for t in o["outputs"]}
    by_index = {o["index"]: o for o in originals}
    inside: set[int] = set()
    for d in delegates:
        stop = set(d["inputs"])
        stack = [producer[t] for t in d["outputs"] if t in producer]
        while stack:
            i = stack.pop()
            if i in inside:
                continue
            inside.add(i)
            for t in by_index[i]["inputs"]:
                if t >= 0 and t not in stop and t in producer:
                    stack.append(producer[t])
    return {o["index"]: o["index"] in inside for o in originals}


_PREFIX_METHOD = (
    "estimated by timing model prefixes: the median latency of the first k ops minus that "
    "of the first k-1, each prefix timed in one clean process (LiteRT's Python API has no "
    "per-op profiler); op 0 includes the per-invoke overhead; noisy for ops under a "
    "microsecond, and fusion across op boundaries is attributed to the later op"
)


def measure_profile(
    path: str, content: bytes, cfg: BenchmarkConfig, ops_seen: list[dict]
) -> OpProfile:
    from converters.analysis import op_sequence, prefix_models

    delegated = delegated_ops(ops_seen) or {}
    names = op_sequence(content)
    with tempfile.TemporaryDirectory(prefix="tflight-prefix-") as tmp:
        try:
            prefixes = []
            for k, blob in enumerate(prefix_models(content), start=1):
                p = Path(tmp) / f"prefix_{k:04d}.tflite"
                p.write_bytes(blob)
                prefixes.append(str(p))
        except Exception as e:  # noqa: BLE001 - fall back to the estimate below
            prefixes = []
            reason = f"{type(e).__name__}: {e}"
        if prefixes:
            try:
                out = run_child(
                    {
                        "prefix_models": prefixes,
                        "threads": cfg.threads,
                        "xnnpack": cfg.xnnpack,
                        "runs": max(10, min(cfg.runs, 50)),
                        "min_time": 0.05,
                        "seed": cfg.seed,
                    },
                    timeout=cfg.timeout,
                    label=f"the per-op profile of {path}",
                )
                med = out["prefix_medians_ms"]
                times = [max(med[0], 0.0)] + [
                    max(med[k] - med[k - 1], 0.0) for k in range(1, len(med))
                ]
                total = sum(times) or 1.0
                return OpProfile(
                    ops=tuple(
                        OpTiming(
                            index=k,
                            op_name=names[k] if k < len(names) else "?",
                            delegated=delegated.get(k),
                            ms=t,
                            share=t / total,
                        )
                        for k, t in enumerate(times)
                    ),
                    method=_PREFIX_METHOD,
                    estimated=True,
                )
            except BenchmarkError as e:
                reason = str(e)
    est = estimate_latency(model_work(content), "pixel4")
    total = sum(est.per_op_ms) or 1.0
    work_ops = model_work(content).ops
    return OpProfile(
        ops=tuple(
            OpTiming(o.index, o.op_name, delegated.get(o.index), t, t / total)
            for o, t in zip(work_ops, est.per_op_ms, strict=True)
        ),
        method=(
            f"not measured on this host: the pixel4 device profile's estimate, in pixel4 ms "
            f"(timing model prefixes failed: {reason})"
        ),
        estimated=True,
        device="pixel4",
    )

