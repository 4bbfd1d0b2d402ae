"""`report.html`: one self-contained page (inline SVG, no scripts, no network) for a result.

Two Pareto plots (validation accuracy against the estimated latency and against
the size, the fp32 baseline and plain int8 PTQ marked), the table of every
candidate, the chosen candidate's layers, what was kept float and why, the
delegate partitions on GPU / NPU / Edge TPU targets, and the commands that
rebuild the chosen model with the individual tools.
"""

from __future__ import annotations

import html
import os
from typing import Any

from tflight.optimization.result import CandidateResult, OptimizeResult

__all__ = ["write_report_html", "render"]

_W, _H, _PAD = 460, 300, 48


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _plot(result: OptimizeResult, axis: str) -> str:
    """An SVG scatter of validation accuracy against `axis` ("latency" or "size")."""
    def x_of(c: CandidateResult) -> float | None:
        return c.estimated_ms if axis == "latency" else (c.size / 1024 if c.size else None)

    points = [c for c in [result.baseline, *result.candidates]
              if c.status == "measured" and x_of(c) is not None]
    if not points:
        return "<p>No candidate was measured.</p>"
    xs = [x_of(c) for c in points]
    ys = [100 * c.validation.accuracy for c in points]
    x0, x1 = 0.0, max(xs) * 1.08 or 1.0
    y0, y1 = min(ys) - 1.0, max(ys) + 1.0

    def px(v: float) -> float:
        return _PAD + (v - x0) / (x1 - x0) * (_W - 1.5 * _PAD)

    def py(v: float) -> float:
        return _H - _PAD - (v - y0) / (y1 - y0) * (_H - 1.6 * _PAD)

    label = ("estimated latency, ms (" + _e(result.baseline.estimate_label.split(":")[0]) + ")"
             if axis == "latency" else "size of the .tflite, KiB (measured)")
    parts = [f'<svg class="plot" role="img" width="{_W}" height="{_H}" '
             f'viewBox="0 0 {_W} {_H}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="0" y="0" width="{_W}" height="{_H}" fill="#fff"/>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD / 2}" y2="{_H - _PAD}" '
             'stroke="#333"/>',
             f'<line x1="{_PAD}" y1="{_PAD * 0.6}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#333"/>',
             f'<text x="{_W / 2}" y="{_H - 10}" text-anchor="middle" font-size="12">'
             f'{label}</text>',
             f'<text x="14" y="{_H / 2}" font-size="12" text-anchor="middle" '
             f'transform="rotate(-90 14 {_H / 2})">validation accuracy, % (measured)</text>']
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        yv = y0 + (y1 - y0) * k / 4
        parts.append(f'<text x="{px(xv):.1f}" y="{_H - _PAD + 14}" font-size="10" '
                     f'text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{_PAD - 4}" y="{py(yv) + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{yv:.1f}</text>')
    budget = 100 * result.baseline.validation.accuracy - result.max_drop_pt
    if y0 < budget < y1:
        parts.append(f'<line x1="{_PAD}" y1="{py(budget):.1f}" x2="{_W - _PAD / 2}" '
                     f'y2="{py(budget):.1f}" stroke="#c33" stroke-dasharray="4 3"/>'
                     f'<text x="{_W - _PAD / 2}" y="{py(budget) - 4:.1f}" font-size="10" '
                     'text-anchor="end" fill="#c33">baseline - max_drop</text>')
    front = sorted((c for c in points if c.pareto), key=x_of)
    if len(front) > 1:
        path = " ".join(f"{px(x_of(c)):.1f},{py(100 * c.validation.accuracy):.1f}"
                        for c in front)
        parts.append(f'<polyline points="{path}" fill="none" stroke="#6a6" '
                     'stroke-width="1.5"/>')
    for c in points:
        x, y = px(x_of(c)), py(100 * c.validation.accuracy)
        tip = (f"{c.name}: {c.size:,} bytes, {c.estimated_ms:.3f} ms estimated, validation "
               f"{c.validation.accuracy:.2%}")
        is_chosen = c is result.chosen
        if c is result.baseline:
            mark = (f'<rect class="point baseline" x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" '
                    f'height="10" fill="#555"/>')
            text = "fp32 baseline"
        elif c.name == "int8":
            mark = (f'<polygon class="point int8-ptq{" chosen" if is_chosen else ""}" '
                    f'points="{x:.1f},{y - 7:.1f} {x + 7:.1f},{y + 6:.1f} {x - 7:.1f},'
                    f'{y + 6:.1f}" fill="#d80" stroke="{"#000" if is_chosen else "none"}"/>')
            text = "plain int8 PTQ" + (" (chosen)" if is_chosen else "")
        else:
            chosen = is_chosen
            color = "#06c" if c.meets else "#aaa"
            r = 7 if chosen else 4
            mark = (f'<circle class="point{" chosen" if chosen else ""}" cx="{x:.1f}" '
                    f'cy="{y:.1f}" r="{r}" fill="{color}" '
                    f'stroke="{"#000" if chosen else "none"}"/>')
            text = c.name if chosen or c.pareto else ""
        parts.append(f"<g>{mark}<title>{_e(tip)}</title></g>")
        if text:  # labels right of the point, or left of it near the right edge
            left = x > 0.7 * _W
            parts.append(f'<text x="{x - 8 if left else x + 8:.1f}" y="{y - 6:.1f}" '
                         f'font-size="10" text-anchor="{"end" if left else "start"}">'
                         f"{_e(text)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _row(c: CandidateResult, result: OptimizeResult) -> str:
    if c.status != "measured":
        return (f"<tr class='{c.status}'><td>{_e(c.name)}</td><td>{_e(c.spec['technique'])}</td>"
                f"<td colspan='6'></td><td>{_e(c.status)}: {_e(c.reason)}</td></tr>")
    v = c.validation
    verdict = "chosen" if c is result.winner else ("meets" if c.meets else c.reason)
    host = "" if c.host_ms is None else f"{c.host_ms:.3f}"
    return (f"<tr class='{'chosen' if c is result.winner else ''}'><td>{_e(c.name)}"
            f"{' (cached)' if c.cached else ''}</td><td>{_e(c.spec['technique'])}</td>"
            f"<td>{c.size:,}</td><td>{c.estimated_ms:.3f}</td><td>{host}</td>"
            f"<td>{v.accuracy:.2%}</td><td>{v.drop_pt:+.2f}</td><td>{v.drop_bound_pt:.2f}</td>"
            f"<td>{_e(verdict)}</td></tr>")


def render(result: OptimizeResult) -> str:
    """The page as a string."""
    chosen = result.chosen
    b = result.baseline
    rows = "".join(_row(c, result) for c in [b, *result.candidates])
    head = ("<tr><th>candidate</th><th>technique</th><th>bytes (measured)</th>"
            "<th>ms (estimated)</th><th>host ms (measured)</th><th>val. accuracy</th>"
            "<th>drop pt</th><th>drop bound pt</th><th>verdict</th></tr>")
    body = [f"<h1>tflight optimize: {_e(result.device)}, objective {_e(result.objective)}</h1>",
            f"<p class='verdict {'met' if result.met else 'missed'}'>{_e(result.verdict)}</p>",
            f"<p>Device rule: {_e(result.device_rule)}. Budget: drop at most "
            f"{result.max_drop_pt:g} pt, by the one-sided exact bound at "
            f"{result.confidence:.0%} on the net paired drop (samples lost minus samples "
            "gained) against the fp32 baseline. "
            f"Selection used the validation split only ({_e(result.validation_source)}).</p>"]
    if result.test is not None:
        t = result.test
        body.append(f"<p>Test split ({_e(result.test_source)}), measured once after "
                    f"selection: accuracy {t.accuracy:.2%} vs baseline "
                    f"{t.baseline_accuracy:.2%}, drop {t.drop_pt:+.2f} pt, bound "
                    f"{t.drop_bound_pt:.2f} pt ({t.losses} lost, {t.gains} gained of "
                    f"{t.samples}).</p>")
    body.append("<h2>Pareto fronts</h2><div class='plots'>" + _plot(result, "latency")
                + _plot(result, "size") + "</div><p class='legend'>square: fp32 baseline; "
                "triangle: plain int8 PTQ; blue: meets the budgets; grey: does not; outlined: "
                "the chosen (or closest) candidate; green line: Pareto front of the objective."
                "</p>")
    body.append(f"<h2>Candidates</h2><table>{head}{rows}</table>")
    if chosen is not None:
        layer_rows = "".join(
            f"<tr><td>{_e(r['layer'])}</td><td>{_e(r.get('type', ''))}</td>"
            f"<td>{_e(r['precision'])}</td><td>{_e(_channels(r))}</td>"
            f"<td>{'' if r.get('sparsity') is None else format(r['sparsity'], '.1%')}</td></tr>"
            for r in chosen.layers)
        body.append(f"<h2>Layers of {_e(chosen.name)}</h2><table><tr><th>layer</th><th>type"
                    "</th><th>precision</th><th>output channels</th><th>kernel sparsity</th>"
                    f"</tr>{layer_rows}</table>")
        kept = "".join(f"<li><b>{_e(a)}</b>: {_e(w)}</li>" for a, w in chosen.kept_float)
        body.append("<h2>Layers kept float or skipped, and why</h2>"
                    + (f"<ul>{kept}</ul>" if kept else "<p>None: every layer with weights was "
                       "treated by the technique.</p>"))
        if chosen.device and chosen.device.get("partitions") is not None:
            parts = "".join(f"<li>{_e(g)} ops on the accelerator, {_e(c)} on the CPU</li>"
                            for g, c in chosen.device["partitions"])
            issues = "".join(f"<li>{_e(i)}</li>" for i in chosen.device.get("issues", []))
            body.append(f"<h2>Delegate partitions ({_e(result.device)})</h2><ul>{parts}</ul>"
                        + (f"<ul>{issues}</ul>" if issues else ""))
        if result.commands:
            cmds = _e("\n".join(result.commands))
            body.append("<h2>Reproduce with the individual tools</h2><pre>" + cmds + "</pre>"
                        "<p>These read the exact splits written to <code>data/</code>; the "
                        "tools seed their own training, so trained figures can differ "
                        "slightly.</p>")
        if result.reverified:
            rv = result.reverified
            body.append(f"<p>Re-verified from {_e(rv['file'])}: validation accuracy "
                        f"{rv['validation_accuracy']:.2%} (same as in the search: "
                        f"{rv['matches_search']}), top-1 agreement with the source Keras model "
                        f"{rv['top1_agreement_with_source_keras']:.2%}.</p>")
    body.append(f"<p>Search: {result.search_seconds:.0f} s wall time, of which training "
                f"{result.train_seconds:.0f} s.</p>")
    style = ("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "tr.chosen{background:#e6f0ff}tr.skipped,tr.failed{color:#777}.plots{display:flex;"
             "gap:16px;flex-wrap:wrap}.verdict.met{color:#060}.verdict.missed{color:#a00}"
             "pre{background:#f5f5f5;padding:8px;white-space:pre-wrap}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>tflight optimize report</title><style>{style}</style></head><body>"
            + "".join(body) + "</body></html>")


def _channels(r: dict[str, Any]) -> str:
    if r.get("channels_before") is None:
        return ""
    if r["channels_before"] == r["channels_after"]:
        return str(r["channels_after"])
    return f"{r['channels_before']} -> {r['channels_after']}"


def write_report_html(result: OptimizeResult, path: str | os.PathLike[str]) -> None:
    """Writes `render(result)` to `path` atomically."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render(result))
    os.replace(tmp, path)
