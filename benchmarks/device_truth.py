"""How good are the device estimates? Family-held-out error against published latencies.

Every profile of `tflight.devices.profiles` is fitted to published latencies of real
devices (`tflight/devices/data/published_latency.csv`, each row named by its source);
the ARM CPU profiles share their coefficients across a pool of devices, one
speed factor per device and arithmetic. This benchmark reports, per profile,
the error on figures **left out of the fit**:

- family-held-out (the headline): every width, resolution and precision of a
  family (MobileNetV1, MobileNetV2, MobileNetV3, EfficientNet-Lite, Inception,
  ResNet, VGG, NASNet) is removed from every device of the pool at once, and
  that family's figures are predicted by the fit to the rest;
- per model (leave-one-architecture-out, weaker: a held-out model's
  near-twins stay in the fit), beside it;
- on devices no profile is fitted to (Pixel 2 / Pixel 3 single core, iPhone
  XS, the Edge TPU USB Accelerator, the iPhone XS GPU): the error of the named
  profile's estimate and its rank correlation.

It needs no conversion (the models' work is cached in
`tflight/devices/data/model_work.json`; `benchmarks/device_models.py` rebuilds it).

Headline:
  family_heldout_median_pct   {profile: median |est / published - 1|, "pooled": ...}
                              (target <= 15 % on pixel3 and pixel4)
  spearman_min                lowest family-held-out Spearman over profiles with
                              >= 3 figures (target >= 0.95)
  heldout_median_abs_err_pct  per-model (leave-one-architecture-out) median, pooled
  heldout_rank_corr           lowest per-model Spearman
  int8_speedup_median_abs_err_pct  per-model error of the fp32/int8 speed-up
  family_int8_speedup_median_pct   family-held-out error of the fp32/int8 speed-up

    python benchmarks/device_truth.py [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_FIELDS = ("method", "rows", "unpredicted", "median_abs_err_pct", "worst_abs_err_pct",
           "rank_corr", "int8_speedup_median_abs_err_pct")


def _unfitted() -> dict:
    """Error of each reference profile on the devices no profile is fitted to."""
    from scipy.stats import spearmanr

    from tflight.devices.profiles import PROFILES, UNFITTED_DEVICES, features_from_totals
    from tflight.devices.published import published_rows

    out = {}
    for dev, ref in UNFITTED_DEVICES.items():
        prof = PROFILES[ref]
        rows = [r for r in published_rows() if r.device == dev]
        preds = [(r.model, r.precision, r.ms, prof.cost(features_from_totals(r.totals, prof.kind)) * 1e3)
                 for r in rows]
        errs = [abs(e / p - 1) * 100 for _, _, p, e in preds]
        ratio = [e / p for _, _, p, e in preds]
        out[dev] = {
            "profile": ref,
            "rows": len(preds),
            "sources": sorted({r.source for r in rows}),
            "median_abs_err_pct": float(np.median(errs)),
            # Devices differ in speed: how far one speed factor would take the estimate.
            "median_estimate_over_published": float(np.median(ratio)),
            "rank_corr": float(spearmanr([p[2] for p in preds], [p[3] for p in preds]).statistic)
            if len(preds) >= 3 else None,
            "predictions": [list(p) for p in preds],
        }
    return out
from converters.files import write_json  # noqa: E402


def run() -> dict:
    from tflight.devices.profiles import PROFILES

    per_profile = {}
    fam_err, model_err, speed, model_speed = [], [], [], []
    for name in PROFILES:
        p = PROFILES[name]
        v, m = p.validation, p.model_validation
        per_profile[name] = {
            "description": p.description,
            "kind": p.kind,
            "threads": p.threads,
            "calibration": p.calibration,
            "coefficients": dict(p.coefficients),
            "family_heldout": v.to_dict(),
            "per_model": {k: getattr(m, k) for k in _FIELDS},
        }
        fam_err += [abs(est / pub - 1) * 100 for _, _, pub, est in v.predictions]
        model_err += [abs(est / pub - 1) * 100 for _, _, pub, est in m.predictions]
        for val, out in ((v, speed), (m, model_speed)):
            by = {(mo, prec): (pub, est) for mo, prec, pub, est in val.predictions}
            for (mo, prec), (pub, est) in by.items():
                if prec == "int8" and (mo, "fp32") in by:
                    pf, ef = by[(mo, "fp32")]
                    out.append(abs((ef / est) / (pf / pub) - 1) * 100)
    fam_corr = {n: d["family_heldout"]["rank_corr"] for n, d in per_profile.items()
                if d["family_heldout"]["rank_corr"] is not None}
    model_corr = {n: d["per_model"]["rank_corr"] for n, d in per_profile.items()
                  if d["per_model"]["rank_corr"] is not None}
    fam_median = {n: d["family_heldout"]["median_abs_err_pct"] for n, d in per_profile.items()}
    fam_median["pooled"] = float(np.median(fam_err))
    headline = {
        "method": "family-held-out cross-validation: every size and precision of a family is "
        "removed from every device of the pool before the fit that estimates it",
        "family_heldout_rows": len(fam_err),
        "family_heldout_median_pct": fam_median,
        "family_heldout_worst_pct": float(np.max(fam_err)),
        "spearman_min": float(min(fam_corr.values())),
        "spearman_by_profile": fam_corr,
        "heldout_rows": len(model_err),
        "heldout_median_abs_err_pct": float(np.median(model_err)),
        "heldout_worst_abs_err_pct": float(np.max(model_err)),
        "heldout_rank_corr": float(min(model_corr.values())),
        "heldout_rank_corr_by_profile": model_corr,
        "int8_speedup_pairs": len(model_speed),
        "int8_speedup_median_abs_err_pct": float(np.median(model_speed)) if model_speed else None,
        "family_int8_speedup_median_pct": float(np.median(speed)) if speed else None,
        "targets": {"family_heldout_median_pct": {"pixel3": 15, "pixel4": 15},
                    "spearman_min": 0.95, "int8_speedup_median_abs_err_pct": 20},
        "met": {
            "family_heldout_median_pct": all(fam_median[n] <= 15 for n in ("pixel3", "pixel4")),
            "spearman_min": all(fam_corr[n] >= 0.95 for n in
                                ("pixel3", "pixel4", "cortex-a53", "edgetpu")),
        },
    }
    return {"headline": headline, "profiles": per_profile, "unfitted_devices": _unfitted()}


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def render(result: dict, print_fn=print) -> None:
    h = result["headline"]
    print_fn("Held-out error of the device profiles (estimates from fits that never saw the "
             "model's family / the model)")
    print_fn(f"{'profile':<14}{'rows':>5}{'family %':>10}{'worst %':>9}{'Spearman':>10}"
             f"{'speed-up %':>12}{'| per-model %':>14}{'Spearman':>10}")
    for name, d in result["profiles"].items():
        f, m = d["family_heldout"], d["per_model"]
        print_fn(f"{name:<14}{f['rows']:>5}{f['median_abs_err_pct']:>10.1f}"
                 f"{f['worst_abs_err_pct']:>9.1f}{_fmt(f['rank_corr'], '.3f'):>10}"
                 f"{_fmt(f['int8_speedup_median_abs_err_pct'], '.1f'):>12}"
                 f"{m['median_abs_err_pct']:>14.1f}{_fmt(m['rank_corr'], '.3f'):>10}")
    print_fn(f"{'pooled':<14}{h['family_heldout_rows']:>5}"
             f"{h['family_heldout_median_pct']['pooled']:>10.1f}{h['family_heldout_worst_pct']:>9.1f}"
             f"{h['spearman_min']:>10.3f}{_fmt(h['family_int8_speedup_median_pct'], '.1f'):>12}"
             f"{h['heldout_median_abs_err_pct']:>14.1f}{h['heldout_rank_corr']:>10.3f}")
    print_fn("(pooled Spearman: the lowest per-profile value; targets: family median <= 15 % on "
             f"pixel3 and pixel4 ({'met' if h['met']['family_heldout_median_pct'] else 'MISSED'}), "
             f"Spearman >= 0.95 on every profile ({'met' if h['met']['spearman_min'] else 'MISSED'}))")
    print_fn("")
    print_fn("Devices no profile is fitted to: the named profile's estimate against their figures")
    print_fn(f"{'device':<16}{'profile':<14}{'rows':>5}{'median err %':>14}{'est/published':>15}"
             f"{'Spearman':>10}")
    for dev, d in result["unfitted_devices"].items():
        print_fn(f"{dev:<16}{d['profile']:<14}{d['rows']:>5}{d['median_abs_err_pct']:>14.1f}"
                 f"{d['median_estimate_over_published']:>15.2f}{_fmt(d['rank_corr'], '.3f'):>10}")
    print_fn("")
    print_fn(f"{'profile':<14}{'model':<36}{'prec':<6}{'published ms':>13}{'family-out est.':>16}"
             f"{'err %':>8}")
    for name, d in result["profiles"].items():
        for m, prec, pub, est in d["family_heldout"]["predictions"]:
            print_fn(f"{name:<14}{m:<36}{prec:<6}{pub:>13.1f}{est:>16.1f}"
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
