"""How good are the device estimates? Held-out error against published latencies.

Every profile of `tflight.profiles` is fitted to published latencies of a real
device (`tflight/data/published_latency.csv`). This benchmark reports, per
profile, the error on models **left out of the fit**: leave-one-architecture-out
cross-validation (each architecture, fp32 and int8 together, is predicted by a
fit to the other architectures of that device), so no figure is checked
against the fit that saw it. It needs no conversion (the models' work is
cached in `tflight/data/model_work.json`; `benchmarks/device_models.py`
rebuilds it).

Headline (pooled over all profiles' held-out predictions):
  heldout_median_abs_err_pct        median |estimate / published - 1|  (target <= 20 %)
  heldout_rank_corr                 the lowest per-profile Spearman correlation
                                    (target >= 0.95)
  int8_speedup_median_abs_err_pct   median error of the fp32/int8 speed-up over
                                    architectures published in both (target <= 20 %)

    python benchmarks/device_truth.py [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.files import write_json  # noqa: E402


def run() -> dict:
    from tflight.devices.profiles import PROFILES, _fit_device, cross_validate, published_rows

    per_profile = {}
    all_err, speed = [], []
    for name in PROFILES:
        p = PROFILES[name]
        v = p.validation
        per_profile[name] = {
            "description": p.description,
            "threads": p.threads,
            "calibration": p.calibration,
            "coefficients": dict(p.coefficients),
            **v.to_dict(),
        }
        # Stricter: hold out whole families (all MobileNetV1 sizes at once, ...).
        rows = [r for r in published_rows() if r.device == name]
        fam = cross_validate(rows, lambda train, n=name: _fit_device(n, train), by="family")
        per_profile[name]["family_heldout"] = {
            k: getattr(fam, k) for k in ("method", "rows", "median_abs_err_pct",
                                         "worst_abs_err_pct", "rank_corr",
                                         "int8_speedup_median_abs_err_pct")
        }
        all_err += [abs(est / pub - 1) * 100 for _, _, pub, est in v.predictions]
        by = {(m, prec): (pub, est) for m, prec, pub, est in v.predictions}
        for (m, prec), (pub, est) in by.items():
            if prec == "int8" and (m, "fp32") in by:
                pf, ef = by[(m, "fp32")]
                speed.append(abs((ef / est) / (pf / pub) - 1) * 100)
    corrs = {n: d["rank_corr"] for n, d in per_profile.items() if d["rank_corr"] is not None}
    headline = {
        "method": "leave-one-architecture-out cross-validation per profile; estimates are "
        "from fits that did not see the model",
        "heldout_rows": len(all_err),
        "heldout_median_abs_err_pct": float(np.median(all_err)),
        "heldout_worst_abs_err_pct": float(np.max(all_err)),
        "heldout_rank_corr": float(min(corrs.values())),
        "heldout_rank_corr_by_profile": corrs,
        "int8_speedup_pairs": len(speed),
        "int8_speedup_median_abs_err_pct": float(np.median(speed)) if speed else None,
        "targets": {"heldout_median_abs_err_pct": 20, "heldout_rank_corr": 0.95,
                    "int8_speedup_median_abs_err_pct": 20},
    }
    return {"headline": headline, "profiles": per_profile}


def render(result: dict, print_fn=print) -> None:
    h = result["headline"]
    print_fn("Held-out error of the device profiles (leave-one-architecture-out; estimates "
             "from fits that did not see the model)")
    print_fn(f"{'profile':<12}{'rows':>5}{'median %':>10}{'worst %':>9}{'Spearman':>10}"
             f"{'int8 speed-up err %':>21}")
    for name, d in result["profiles"].items():
        sp = d["int8_speedup_median_abs_err_pct"]
        rc = d["rank_corr"]
        print_fn(f"{name:<12}{d['rows']:>5}{d['median_abs_err_pct']:>10.1f}"
                 f"{d['worst_abs_err_pct']:>9.1f}{(f'{rc:.3f}' if rc is not None else '-'):>10}"
                 f"{(f'{sp:.1f}' if sp is not None else '-'):>21}")
    print_fn(f"{'all':<12}{h['heldout_rows']:>5}{h['heldout_median_abs_err_pct']:>10.1f}"
             f"{h['heldout_worst_abs_err_pct']:>9.1f}{h['heldout_rank_corr']:>10.3f}"
             f"{(h['int8_speedup_median_abs_err_pct'] or float('nan')):>21.1f}")
    print_fn("(all: Spearman is the lowest per-profile value; targets: median <= 20 %, "
             "Spearman >= 0.95, speed-up <= 20 %)")
    print_fn("")
    print_fn("Stricter: leave-one-family-out (every size of a family held out at once)")
    for name, d in result["profiles"].items():
        f = d["family_heldout"]
        rc, sp = f["rank_corr"], f["int8_speedup_median_abs_err_pct"]
        print_fn(f"{name:<12}{f['rows']:>5}{f['median_abs_err_pct']:>10.1f}"
                 f"{f['worst_abs_err_pct']:>9.1f}{(f'{rc:.3f}' if rc is not None else '-'):>10}"
                 f"{(f'{sp:.1f}' if sp is not None else '-'):>21}")
    print_fn("")
    print_fn(f"{'profile':<12}{'model':<24}{'prec':<6}{'published ms':>13}{'held-out est.':>14}"
             f"{'err %':>8}")
    for name, d in result["profiles"].items():
        for m, prec, pub, est in d["predictions"]:
            print_fn(f"{name:<12}{m:<24}{prec:<6}{pub:>13.1f}{est:>14.1f}"
                     f"{(est / pub - 1) * 100:>+8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)
    result = run()
    render(result)
    if args.json:
        write_json(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
