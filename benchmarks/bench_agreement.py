"""Does `tflight bench` report the same latency as LiteRT's own benchmark tool?

For MobileNetV2 (random weights; speed does not depend on them) converted to
fp32 and full int8, this script measures the median invoke latency with
`tflight.benchmark` (what `tflight bench` prints) and with
`python -m ai_edge_litert.tools.benchmark_litert_model` on the same file,
alternately, round after round, in one run, so that drifts of a shared
machine hit both alike. It reports:

* the ratio of the two medians per model (target: within 5 %), and the
  median of the per-round ratios ("paired");
* tflight's own per-invoke overhead: the median tflight reports for a model
  that does almost nothing (one element-wise op on one float), an upper bound
  of what its timing loop adds per invoke (target: <= 2 % of a 1 ms model);
* the spread of tflight's medians over the rounds ((max - min) / median);
* the ratio of the two tools' minimum latencies over all rounds: on a shared
  machine the medians move with the other jobs' load, the minimums much less,
  so this ratio tells whether both tools run the same kernels at all;
* the 1-minute load average before, during (per round) and after.

Both tools run with one CPU thread and XNNPACK. Usage:

    .venv/bin/python benchmarks/bench_agreement.py [--rounds 5] [--runs 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from converters.files import write_json  # noqa: E402


def _models(tmp: Path) -> dict[str, Path]:
    import keras
    import numpy as np

    import converters

    keras.utils.set_random_seed(0)
    net = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    data = np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32)
    out = {}
    res = converters.convert_many(net, ["fp32", "int8"], representative_data=data, validate=False)
    for mode, r in res.items():
        out[f"mobilenet_v2_{mode}"] = r.save(tmp / f"mobilenet_v2_{mode}.tflite")
    tiny = keras.Sequential([keras.Input((1,)), keras.layers.Rescaling(2.0)])
    out["trivial"] = converters.convert(tiny, "fp32", validate=False).save(tmp / "trivial.tflite")
    return out


def _litert_times(path: Path, runs: int, warmup: int) -> tuple[float, float]:
    """(median, min) in ms reported by benchmark_litert_model."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run(
            [
                sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model",
                "--model", str(path), "--num_runs", str(runs), "--warmup_runs", str(warmup),
                "--num_threads", "1", "--result_json", str(out),
            ],
            check=True, capture_output=True, text=True,
        )
        lat = json.loads(out.read_text())["latency"]
        return float(lat["median_ms"]), float(lat["min_ms"])


def _tflight_times(path: Path, runs: int, warmup: int) -> tuple[float, float]:
    """(median, min) in ms reported by tflight.benchmark with the same run counts."""
    from tflight.bench.run import BenchmarkConfig, benchmark

    cfg = BenchmarkConfig(runs=runs, min_time=0.0, warmup_runs=warmup, warmup_min_time=0.0,
                          threads=1, xnnpack=True)
    lat = benchmark(path, config=cfg, estimate=[]).latency
    return lat.median_ms, lat.min_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    from tflight.devices.profiles import estimate_latency

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-agreement-") as tmp:
        models = _models(Path(tmp))
        print(f"converted in {time.monotonic() - t0:.0f} s", flush=True)
        figures: dict = {"rounds": args.rounds, "runs": args.runs, "models": {},
                         "loadavg_start": os.getloadavg()[0]}
        for name in ("mobilenet_v2_fp32", "mobilenet_v2_int8"):
            path = models[name]
            ours, theirs, ours_min, theirs_min, loads = [], [], [], [], []
            for k in range(args.rounds):
                # Alternate which tool goes first so neither always gets the warmer machine.
                order = ("tflight", "litert") if k % 2 == 0 else ("litert", "tflight")
                for tool in order:
                    if tool == "tflight":
                        med, low = _tflight_times(path, args.runs, args.warmup)
                        ours.append(med)
                        ours_min.append(low)
                    else:
                        med, low = _litert_times(path, args.runs, args.warmup)
                        theirs.append(med)
                        theirs_min.append(low)
                loads.append(os.getloadavg()[0])
                print(f"{name} round {k + 1}: tflight {ours[-1]:.3f} ms, "
                      f"benchmark_litert_model {theirs[-1]:.3f} ms (load {loads[-1]:.2f})",
                      flush=True)
            m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
            per_round = [a / b for a, b in zip(ours, theirs, strict=True)]
            figures["models"][name] = {
                "size_bytes": path.stat().st_size,
                "tflight_medians_ms": ours,
                "litert_medians_ms": theirs,
                "tflight_median_ms": m_ours,
                "litert_median_ms": m_theirs,
                "ratio": m_ours / m_theirs,
                "per_round_ratio_median": statistics.median(per_round),
                "within_5_percent": abs(m_ours / m_theirs - 1) <= 0.05,
                "tflight_spread": (max(ours) - min(ours)) / m_ours,
                "tflight_mins_ms": ours_min,
                "litert_mins_ms": theirs_min,
                "min_ratio": min(ours_min) / min(theirs_min),
                "loadavg_per_round": loads,
                "pixel4_estimate_ms": estimate_latency(path, "pixel4").ms,
            }
        trivial = [_tflight_times(models["trivial"], 2000, 100)[0] for _ in range(args.rounds)]
        overhead_ms = statistics.median(trivial)
        figures["overhead"] = {
            "trivial_model_median_ms": trivial,
            "per_invoke_overhead_us": overhead_ms * 1e3,
            "share_of_1ms_model": overhead_ms / 1.0,
            "within_2_percent": overhead_ms / 1.0 <= 0.02,
        }
    figures["seconds"] = time.monotonic() - t0
    figures["loadavg_end"] = os.getloadavg()[0]

    print()
    print(f"{'model':<20} {'tflight ms':>11} {'litert ms':>10} {'ratio':>7} {'<=5%':>5} "
          f"{'paired':>7} {'spread':>7} {'min ratio':>9} {'pixel4 ms (est.)':>17}")
    for name, f in figures["models"].items():
        print(f"{name:<20} {f['tflight_median_ms']:>11.3f} {f['litert_median_ms']:>10.3f} "
              f"{f['ratio']:>7.3f} {'yes' if f['within_5_percent'] else 'NO':>5} "
              f"{f['per_round_ratio_median']:>7.3f} {f['tflight_spread']:>6.1%} "
              f"{f['min_ratio']:>9.3f} "
              f"{f['pixel4_estimate_ms']:>17.2f}")
    o = figures["overhead"]
    print(f"per-invoke overhead (upper bound, trivial model): {o['per_invoke_overhead_us']:.2f} us "
          f"= {o['share_of_1ms_model']:.2%} of a 1 ms model "
          f"({'within' if o['within_2_percent'] else 'OVER'} the 2 % target)")
    loads = [x for f in figures["models"].values() for x in f["loadavg_per_round"]]
    print(f"1-min load average ({os.cpu_count()} CPUs): {figures['loadavg_start']:.2f} at start, "
          f"{min(loads):.2f}-{max(loads):.2f} during the rounds, "
          f"{figures['loadavg_end']:.2f} at the end")
    if args.json:
        write_json(args.json, figures)
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
