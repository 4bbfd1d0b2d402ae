"""The child of `tflight.lm.bench`: runs an LM file for a few rounds, replies with medians.

Imports numpy, `ai_edge_litert` and `tflight.lm.generate` only (no TensorFlow),
so its peak memory is the runtime's and the model's.
"""

from __future__ import annotations

import resource
import statistics
import sys
from typing import Any

import numpy as np

from converters import _child


def _peak_mb() -> float:
    """Peak resident memory of this process image.

    `VmHWM` is reset by exec; `ru_maxrss` is not on Linux (a child forked from a
    large parent reports the parent's peak), so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    from tflight.errors import TflightError
    from tflight.lm.generate import LiteRTLM

    try:
        lm = LiteRTLM(req["path"], num_threads=req["threads"])
        if req["prompt_tokens"] is None:
            req["prompt_tokens"] = min(32, lm.max_length // 4)
        if req["new_tokens"] is None:
            req["new_tokens"] = min(128, lm.max_length - req["prompt_tokens"])
        prompt = np.random.default_rng(0).integers(0, min(lm.vocabulary_size, 256),
                                                   size=req["prompt_tokens"]).tolist()
        lm._check(prompt, req["new_tokens"] - 1)
    except (TflightError, ValueError) as e:
        raise _child.ChildError("BenchmarkError", str(e)) from e
    lm.generate(prompt, min(4, req["new_tokens"]))  # warm-up: allocation, XNNPACK packing
    pre, dec = [], []
    for _ in range(req["rounds"]):
        r = lm.generate(prompt, req["new_tokens"])
        pre.append(r.prefill_seconds)
        dec.append(r.decode_tokens_per_second)
    ttft = statistics.median(pre)
    return {"prompt_tokens": len(prompt), "new_tokens": req["new_tokens"],
            "prefill_tokens_per_second": len(prompt) / ttft,
            "decode_tokens_per_second": statistics.median(dec),
            "time_to_first_token_ms": 1000 * ttft,
            "peak_memory_mb": _peak_mb(),
            "rounds": req["rounds"], "threads": req["threads"]}


if __name__ == "__main__":
    sys.exit(_child.serve(_handle, sys.argv, what="the LM benchmark"))
