"""The HTML report: one self-contained file (inline SVG from matplotlib, no scripts, no links out).

Sections: summary, passes, the roofline plot (every costed operator a point at its
arithmetic intensity and attained FLOP/s — measured where onnxruntime's profiler
timed it, else predicted — before in grey and after in blue, under the profile's
compute and bandwidth roofs with the ridge point marked), predicted vs measured
time per operator, the top operators by measured time, and what was verified.
The plotted point groups carry ids (``roofline-before``, ``roofline-after``) so a
test can count one point per operator.
"""

from __future__ import annotations

import html
import io
from typing import Any

from rooftop.report.text import TOP_HEADERS, correlation, headers, not_kept, pass_rows, summary_lines, top_rows


def _points(rl) -> list[tuple[float, float, str]]:
    pts = []
    for r in rl.rows:
        ops = r.flops + r.int_ops
        if r.bound in ("meta", "unknown") or ops <= 0 or not r.intensity or r.intensity == float("inf"):
            continue
        t = r.measured_s if r.measured_s else r.predicted_s
        if not t:
            continue
        pts.append((r.intensity, ops / t, r.name))
    return pts


def roofline_svg(report: Any) -> tuple[str, int, int]:
    """The roofline plot as an SVG string, and the number of points before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hw = report.hardware
    before, after = report.before, report.after
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=100)
    pb = _points(before) if before is not None else []
    pa = _points(after) if after is not None else []
    xs = [p[0] for p in pb + pa] or [1.0]
    lo, hi = max(min(xs) / 3, 1e-3), max(max(xs) * 3, hw.ridge() * 10 if hw else 10)
    if hw is not None:
        import numpy as np

        grid = np.logspace(np.log10(lo), np.log10(hi), 200)
        peak, bw = hw.peak("fp32"), hw.bandwidth
        ax.plot(
            grid,
            np.minimum(peak, grid * bw),
            color="black",
            lw=1.5,
            label=f"roof: {peak / 1e9:.3g} GFLOP/s, {bw / 1e9:.3g} GB/s",
        )
        ax.axvline(hw.ridge(), color="red", ls=":", lw=1)
        ax.annotate(
            f"ridge {hw.ridge():.1f} FLOP/B",
            (hw.ridge(), peak),
            textcoords="offset points",
            xytext=(5, -12),
            color="red",
            fontsize=8,
        )
    if pb:
        sc = ax.scatter(
            [p[0] for p in pb], [p[1] for p in pb], s=14, c="#999999", alpha=0.6, label=f"before ({len(pb)} ops)"
        )
        sc.set_gid("roofline-before")
    if pa:
        sc = ax.scatter(
            [p[0] for p in pa], [p[1] for p in pa], s=14, c="#1f77b4", alpha=0.8, label=f"after ({len(pa)} ops)"
        )
        sc.set_gid("roofline-after")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("attained FLOP/s (measured where profiled, else predicted)")
    ax.set_title(f"Roofline on {hw.name if hw else '?'} ({hw.kind if hw else ''} figures)")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return _strip_header(buf.getvalue()), len(pb), len(pa)


def scatter_svg(report: Any) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    after = report.after
    if after is None:
        return None
    pts = [(r.predicted_s, r.measured_s) for r in after.rows if r.predicted_s and r.measured_s and r.bound != "meta"]
    if len(pts) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
    sc = ax.scatter([p[0] * 1e6 for p in pts], [m * 1e6 for _, m in pts], s=12, c="#1f77b4", alpha=0.7)
    sc.set_gid("predicted-vs-measured")
    lim = [min(min(p) for p in pts) * 1e6 / 2, max(max(p) for p in pts) * 1e6 * 2]
    ax.plot(lim, lim, color="black", lw=0.8, ls="--", label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted µs")
    ax.set_ylabel("measured µs (onnxruntime profiler)")
    rho, n = correlation(after)
    ax.set_title(f"per operator, after ({n} ops, Spearman {rho:.2f})" if rho is not None else "per operator, after")
    ax.legend(fontsize=8)
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return _strip_header(buf.getvalue())


def _strip_header(svg: str) -> str:
    i = svg.find("<svg")
    return svg[i:] if i >= 0 else svg


def _table(headers, rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def top_measured(report: Any, k: int = 15) -> list[list[str]]:
    after = report.after
    if after is None:
        return []
    rows = sorted((r for r in after.rows if r.measured_s), key=lambda r: r.measured_s, reverse=True)[:k]
    return [
        [
            r.name,
            r.op_type,
            r.bound,
            f"{r.measured_s * 1e6:.1f}",
            "-" if r.predicted_s is None else f"{r.predicted_s * 1e6:.1f}",
        ]
        for r in rows
    ]


def html_page(report: Any) -> str:
    e = html.escape
    svg, nb, na = roofline_svg(report) if report.hardware is not None else ("<p>No cost analysis.</p>", 0, 0)
    sc = scatter_svg(report)
    summary = "".join(f"<li>{e(s)}</li>" for s in summary_lines(report))
    from rooftop.report.verdict import lines, outcome

    verdict = "".join(f"<li>{e(v)}</li>" for v in lines(outcome(report)))
    warn = "".join(f"<li>{e(w)}</li>" for w in report.warnings)
    rb = "".join(f"<li><code>{e(r.name)}</code> {e(r.status.value)}: {e(r.reason)}</li>" for r in not_kept(report))
    hw = report.hardware
    verified = e(report.verification)
    if report.final_check is not None and not report.final_check.skipped:
        verified += f"; final max abs error {report.final_check.max_abs_error:.3g}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Rooftop report: {e(report.model_path or "model")}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){{text-align:left}}
th{{background:#f3f3f3}} .plots{{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}}
code{{background:#f3f3f3;padding:0 3px}}
</style></head><body>
<h1>Rooftop report: <code>{e(report.model_path or "model")}</code></h1>
<section id="verdict" style="border:2px solid #333;padding:0.5em 1em;margin:1em 0"><h2>Verdict</h2><ul>{
        verdict
    }</ul></section>
<p>Target <code>{e(report.target)}</code>; pipeline {e(", ".join(report.pipeline))}; {report.seconds:.1f} s.
Hardware profile: {e(hw.name if hw else "-")} — {e(hw.source if hw else "")}</p>
<h2>Summary</h2><ul>{summary}</ul>
<h2>Passes</h2>{_table(headers(report), pass_rows(report))}
{("<h3>Not kept</h3><ul>" + rb + "</ul>") if rb else ""}
<h2>Roofline</h2>
<p>{nb} operators before, {na} after. Each point is one operator at its arithmetic intensity and attained FLOP/s.</p>
<div class="plots"><div id="roofline">{svg}</div>{('<div id="scatter">' + sc + "</div>") if sc else ""}</div>
<h2>Top memory-bound operators (after)</h2>{_table(TOP_HEADERS, top_rows(report, 15))}
<h2>Top operators by measured time (after)</h2>{
        _table(["operator", "op", "bound", "measured µs", "predicted µs"], top_measured(report))
    }
<h2>Verification</h2><p>{verified}. Outputs compared in onnxruntime with its graph optimizations disabled.</p>
{("<h2>Warnings</h2><ul>" + warn + "</ul>") if warn else ""}
</body></html>
"""
