"""The HTML report: one self-contained file (inline SVG from matplotlib, no scripts, no links out).

Sections: the verdict, what was written, summary, passes, the roofline plot (every costed
operator a point at its arithmetic intensity and attained FLOP/s, filled where onnxruntime's
profiler measured it and hollow where predicted, before in orange and after in blue, arrows
from before to after for the operators that moved most, under the profile's compute and
bandwidth roofs with the ridge in the legend), predicted vs measured time per operator, the op
types before and after, the top operators (with their module in the author's code where the
exporter recorded it) and what was verified. Tables with no rows are left out. The plotted
point groups carry ids (``roofline-before``, ``roofline-after``) so a test can count one point
per operator.
"""

from __future__ import annotations

import html
import io
import os
from typing import Any

from rooftop.report.text import (
    correlation,
    headers,
    module_of,
    not_kept,
    pass_rows,
    summary_lines,
    top_headers,
    top_rows,
)

BEFORE, AFTER = "#e6550d", "#1f77b4"
MAX_ARROWS = 40  # the operators whose point moved most get an arrow from before to after


def _points(rl) -> list[tuple[float, float, str, bool]]:
    """(intensity, attained FLOP/s, node, measured) of every costed operator."""
    pts = []
    for r in rl.rows:
        ops = r.flops + r.int_ops
        if r.bound in ("meta", "unknown") or ops <= 0 or not r.intensity or r.intensity == float("inf"):
            continue
        t = r.measured_s if r.measured_s else r.predicted_s
        if not t:
            continue
        pts.append((r.intensity, ops / t, r.name, bool(r.measured_s)))
    return pts


def _scatter(ax, pts, color: str, gid: str) -> None:
    """One point an operator: filled where measured, hollow where predicted."""
    sc = ax.scatter(
        [p[0] for p in pts],
        [p[1] for p in pts],
        s=16,
        facecolors=[color if p[3] else "none" for p in pts],
        edgecolors=color,
        linewidths=0.9,
        alpha=0.85,
    )
    sc.set_gid(gid)


def _moves(ax, pb, pa) -> int:
    """Arrows from an operator's point before to its point after, for those that moved most."""
    import math

    before = {p[2]: p for p in pb}
    moved = []
    for p in pa:
        q = before.get(p[2])
        if q is not None and (q[0], q[1]) != (p[0], p[1]):
            moved.append((abs(math.log(p[0] / q[0])) + abs(math.log(p[1] / q[1])), q, p))
    moved.sort(key=lambda m: -m[0])
    for _, q, p in moved[:MAX_ARROWS]:
        ax.annotate(
            "",
            xy=(p[0], p[1]),
            xytext=(q[0], q[1]),
            arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.7, "alpha": 0.7},
            gid="roofline-move",
        )
    return min(len(moved), MAX_ARROWS)


def roofline_svg(report: Any) -> tuple[str, int, int]:
    """The roofline plot as an SVG string, and the number of points before and after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    hw = report.hardware
    before, after = report.before, report.after
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=100)
    pb = _points(before) if before is not None else []
    pa = _points(after) if after is not None else []
    xs = [p[0] for p in pb + pa] or [1.0]
    lo, hi = max(min(xs) / 3, 1e-3), max(max(xs) * 3, hw.ridge() * 10 if hw else 10)
    handles = []
    if hw is not None:
        import numpy as np

        grid = np.logspace(np.log10(lo), np.log10(hi), 200)
        peak, bw = hw.peak("fp32"), hw.bandwidth
        (roof,) = ax.plot(grid, np.minimum(peak, grid * bw), color="black", lw=1.5)
        roof.set_label(f"roof: {peak / 1e9:.3g} GFLOP/s, {bw / 1e9:.3g} GB/s")
        ridge = ax.axvline(hw.ridge(), color="red", ls=":", lw=1)
        ridge.set_label(f"ridge: {hw.ridge():.1f} FLOP/B")
        handles += [roof, ridge]
    if pb:
        _scatter(ax, pb, BEFORE, "roofline-before")
    if pa:
        _scatter(ax, pa, AFTER, "roofline-after")
    arrows = _moves(ax, pb, pa)

    def dot(color, filled, label):
        return Line2D([], [], ls="", marker="o", color=color, markerfacecolor=color if filled else "none", label=label)

    handles += [dot(BEFORE, True, f"before ({len(pb)} ops)"), dot(AFTER, True, f"after ({len(pa)} ops)")]
    handles += [dot("#555555", True, "measured (profiled)"), dot("#555555", False, "predicted (not profiled)")]
    if arrows:
        handles.append(Line2D([], [], color="#555555", lw=0.7, label=f"moved: before → after ({arrows} ops)"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per byte moved)")
    ax.set_ylabel("attained FLOP/s")
    where = f"{hw.name} ({hw.kind} profile)" if hw else "?"
    measured = sum(p[3] for p in pb + pa)
    ax.set_title(
        f"Roofline on {where}: {measured} points measured, {len(pb) + len(pa) - measured} predicted", fontsize=10
    )
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
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
        + ([module_of(report, r.name)] if report.sources else [])
        for r in rows
    ]


def op_rows(report: Any) -> list[list[str]]:
    """Op types before → after: those whose count changed first, then the rest."""
    a, b = report.ops_before, report.ops_after
    ops = sorted(set(a) | set(b), key=lambda o: (a.get(o, 0) == b.get(o, 0), -max(a.get(o, 0), b.get(o, 0)), o))
    return [[o, str(a.get(o, 0)), str(b.get(o, 0)), f"{b.get(o, 0) - a.get(o, 0):+d}"] for o in ops]


def _section(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """A table under its heading; nothing when it has no rows."""
    return f"<h2>{html.escape(title)}</h2>{_table(headers, rows)}" if rows else ""


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
    where = (
        "in onnxruntime with its graph optimizations disabled"
        if report.runtime == "onnxruntime"
        else f"in {report.runtime}"
    )
    written = "".join(
        f"<li><code>{e(p)}</code>, {os.path.getsize(p) / 1e6:.3f} MB</li>"
        for p in report.output_paths
        if os.path.exists(p)
    )
    measured_heads = ["operator", "op", "bound", "measured µs", "predicted µs"] + (
        ["module (class, source)"] if report.sources else []
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Rooftop report: {e(report.model_path or "model")}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:13px;max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,th:first-child,td:nth-child(2),th:nth-child(2){{text-align:left}}
td:first-child{{overflow-wrap:anywhere}}
th{{background:#f3f3f3}} .plots{{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}}
.plots svg{{max-width:100%;height:auto}} code{{background:#f3f3f3;padding:0 3px;overflow-wrap:anywhere}}
#verdict{{border:2px solid #333;padding:0.5em 1em;margin:1em 0}}
</style></head><body>
<h1>Rooftop report: <code>{e(report.model_path or "model")}</code></h1>
<section id="verdict"><h2>Verdict</h2><ul>{verdict}</ul></section>
{("<p>Written:</p><ul>" + written + "</ul>") if written else "<p>No model written.</p>"}
<p>Target <code>{e(report.target)}</code>; pipeline {e(", ".join(report.pipeline))}; {report.seconds:.1f} s.
Hardware profile: {e(hw.name if hw else "-")} — {e(hw.source if hw else "")}</p>
<h2>Summary</h2><ul>{summary}</ul>
<h2>Passes</h2>{_table(headers(report), pass_rows(report))}
{("<h3>Not kept</h3><ul>" + rb + "</ul>") if rb else ""}
<h2>Roofline</h2>
<p>{nb} operators before, {na} after: each point one operator at its arithmetic intensity and attained
FLOP/s, filled where onnxruntime's profiler measured it, hollow where it is predicted; arrows join an
operator's point before to its point after where a pass moved it.</p>
<div class="plots"><div id="roofline">{svg}</div>{('<div id="scatter">' + sc + "</div>") if sc else ""}
<div id="op-types">{_table(["op type", "before", "after", "change"], op_rows(report))}</div></div>
{_section("Top memory-bound operators (after)", top_headers(report), top_rows(report, 15))}
{_section("Top operators by measured time (after)", measured_heads, top_measured(report))}
<h2>Verification</h2><p>{verified}. Outputs compared {e(where)}.</p>
{("<h2>Warnings</h2><ul>" + warn + "</ul>") if warn else ""}
</body></html>
"""
