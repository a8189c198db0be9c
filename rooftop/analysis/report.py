"""Renderers for an optimize run: terminal table (rich), JSON (stable schema), Markdown, HTML."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rooftop.analysis.costs import human

SCHEMA_VERSION = 1


def _num(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def _clean(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if not str(k).startswith("_")}
    if isinstance(d, list):
        return [_clean(v) for v in d]
    return _num(d)


def _side(rl: Any) -> dict | None:
    if rl is None:
        return None
    return {
        "totals": _clean(rl.totals()),
        "shape_source": rl.shape_source,
        "unknown": rl.unknown,
        "by_op_type": _clean(rl.by_op_type),
        "nodes": [_clean(r.as_dict()) for r in rl.rows],
    }


def correlation(rl: Any) -> tuple[float | None, int]:
    """Spearman rank correlation of predicted and measured time over operators with both."""
    from rooftop.analysis.timing import spearman

    if rl is None:
        return None, 0
    pairs = [(r.predicted_s, r.measured_s) for r in rl.rows if r.predicted_s is not None and r.measured_s is not None and r.bound != "meta"]
    if not pairs:
        return None, 0
    return spearman([p for p, _ in pairs], [m for _, m in pairs]), len(pairs)


def report_dict(report: Any) -> dict[str, Any]:
    """The stable JSON shape of a report (documented in the README; fields are only ever added)."""
    passes = []
    for r in report.passes:
        d = {
            "name": r.name,
            "iteration": r.iteration,
            "status": r.status,
            "rewrites": r.rewrites,
            "nodes_before": r.nodes_before,
            "nodes_after": r.nodes_after,
            "seconds": round(r.seconds, 6),
            "verified": r.verified,
            "max_abs_error": _num(r.max_abs_error),
            "reason": r.reason,
            "notes": [n for n in r.notes if "Traceback" not in n],
        }
        for k in ("flops_before", "flops_after", "int_ops_before", "int_ops_after", "bytes_before", "bytes_after",
                  "predicted_s_before", "predicted_s_after", "latency_ms_before", "latency_ms_after", "latency_spread",
                  "latency_ratio", "latency_verdict", "ort_level"):
            d[k] = _clean(r.extra.get(k))
        passes.append(d)
    hw = report.extra.get("_hardware")
    before, after = report.extra.get("_before"), report.extra.get("_after")
    rho_b, n_b = correlation(before)
    rho_a, n_a = correlation(after)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": {"path": report.model_path, "nodes": report.nodes_before, "params": report.params_before},
        "output": {"paths": report.output_paths, "nodes": report.nodes_after, "params": report.params_after},
        "target": report.target,
        "pipeline": report.pipeline,
        "hardware": None if hw is None else {
            "name": hw.name,
            "peak_flops": hw.peak_flops,
            "bandwidth_bytes_per_s": hw.bandwidth,
            "ridge_flops_per_byte": hw.ridge(),
            "channel_multiple": hw.channel_multiple,
            "overhead_s": hw.overhead_s,
            "kind": hw.kind,
            "source": hw.source,
        },
        "verification": {
            "description": report.verification,
            "ok": None if report.final_check is None else report.final_check.ok,
            "max_abs_error": None if report.final_check is None else _num(report.final_check.max_abs_error),
        },
        "passes": passes,
        "before": _side(before),
        "after": _side(after),
        "latency": _clean(report.extra.get("latency")),
        "prediction_vs_measurement": {
            "spearman_before": rho_b, "operators_before": n_b, "spearman_after": rho_a, "operators_after": n_a,
        },
        "warnings": report.warnings,
        "seconds": round(report.seconds, 3),
    }
    return out


def _err(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.1e}" if x else "0"


def _delta(a: Any, b: Any, fmt) -> str:
    if a is None or b is None:
        return "-"
    if a == b:
        return fmt(b)
    return f"{fmt(a)}→{fmt(b)}"


def _mb(x: float) -> str:
    return f"{x / 1e6:.3g}MB"


def _ms(x: float) -> str:
    return f"{x * 1e3:.3g}ms"


def _lat(e: dict) -> str:
    if "latency_ms_after" not in e or e.get("latency_ms_after") is None:
        return "-"
    q1, q3 = e.get("latency_spread") or (None, None)
    mark = {"faster": "", "slower": " slower", "noise": " (noise)"}.get(e.get("latency_verdict", ""), "")
    return f"{e['latency_ms_before']:.3g}→{e['latency_ms_after']:.3g}ms ×{e['latency_ratio']:.2f} [{q1:.2f}-{q3:.2f}]{mark}"


HEADERS = ["pass", "status", "rewrites", "nodes", "FLOPs", "traffic", "predicted", "measured (ORT_DISABLE_ALL)", "max error", "s"]


def pass_rows(report: Any) -> list[list[str]]:
    rows = []
    for r in report.passes:
        e = r.extra
        status = r.status if r.status != "rolled back" else "ROLLED BACK"
        rows.append(
            [
                r.name + (f" #{r.iteration}" if r.iteration > 1 else ""),
                status,
                str(r.rewrites),
                f"{r.nodes_before}→{r.nodes_after}" if r.nodes_before != r.nodes_after else str(r.nodes_after),
                _delta(e.get("flops_before"), e.get("flops_after"), lambda v: human(v)) if r.status == "applied" else "",
                _delta(e.get("bytes_before"), e.get("bytes_after"), _mb) if r.status == "applied" else "",
                _delta(e.get("predicted_s_before"), e.get("predicted_s_after"), _ms) if r.status == "applied" else "",
                _lat(e) if r.status == "applied" else "",
                _err(r.max_abs_error) if r.verified else ("-" if r.status != "applied" else "unverified"),
                f"{r.seconds:.2f}",
            ]
        )
    return rows


def summary_lines(report: Any) -> list[str]:
    lines = []
    hw = report.extra.get("_hardware")
    before, after = report.extra.get("_before"), report.extra.get("_after")
    lines.append(
        f"nodes {report.nodes_before} → {report.nodes_after}, parameters {report.params_before:,} → {report.params_after:,}; "
        f"{report.verification}"
    )
    if before is not None and after is not None and hw is not None:
        saved = before.bytes - after.bytes
        pct = 100 * saved / before.bytes if before.bytes else 0.0
        lines.append(
            f"memory traffic {_mb(before.bytes)} → {_mb(after.bytes)} ({f'{pct:.1f}% saved' if pct >= 0 else f'{-pct:.1f}% more'}), FLOPs {human(before.flops)} → {human(after.flops)}"
            + (f", int ops {human(before.int_ops)} → {human(after.int_ops)}" if before.int_ops or after.int_ops else "")
            + f", peak activations {_mb(before.peak_activation_bytes)} → {_mb(after.peak_activation_bytes)}"
        )
        lines.append(
            f"predicted on {hw.name} ({hw.kind} figures: {human(hw.peak('fp32'), 'FLOP/s')}, {human(hw.bandwidth, 'B/s')}, "
            f"ridge {hw.ridge():.1f} FLOP/B): {_ms(before.predicted_s)} → {_ms(after.predicted_s)}"
        )
        if after.unknown:
            lines.append(f"{len(after.unknown)} operators could not be costed: " + "; ".join(after.unknown[:3]) + (" ..." if len(after.unknown) > 3 else ""))
    lat = report.extra.get("latency") or {}
    for level in ("disable", "all"):
        e = lat.get(level)
        if e and "latency_ms_after" in e:
            lines.append(f"measured {e['ort_level']} ({e['threads']} threads, {e['latency_rounds']} interleaved rounds): {_lat(e)}")
        elif e and "latency_error" in e:
            lines.append(f"timing at {level} failed: {e['latency_error']}")
    rho, n = correlation(after)
    if rho is not None:
        lines.append(f"predicted vs measured per-operator time: Spearman rank correlation {rho:.2f} over {n} operators")
    return lines


def top_rows(report: Any, k: int = 8) -> list[list[str]]:
    after = report.extra.get("_after")
    if after is None:
        return []
    rows = []
    for r in after.top_memory_bound(k):
        rows.append([r.name, r.op_type, f"{r.intensity:.2f}" if r.intensity not in (None, float("inf")) else "-",
                     _mb(r.bytes_read + r.bytes_written), _ms(r.predicted_s or 0.0), "-" if r.measured_s is None else _ms(r.measured_s)])
    return rows


TOP_HEADERS = ["operator", "op", "FLOP/B", "traffic", "predicted", "measured"]


def print_terminal(report: Any, console: Console | None = None) -> None:
    console = console or Console()
    title = f"Rooftop: {report.model_path or 'model'}  ({report.target} target)"
    t = Table(title=title, title_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("pass", "status") else "right")
    for row in pass_rows(report):
        t.add_row(*row)
    console.print(t)
    for line in summary_lines(report):
        console.print(line, highlight=False)
    top = top_rows(report)
    if top:
        tt = Table(title="top memory-bound operators after optimization", title_justify="left")
        for h in TOP_HEADERS:
            tt.add_column(h, justify="left" if h in ("operator", "op") else "right")
        for row in top:
            tt.add_row(*row)
        console.print(tt)
    for r in report.passes:
        if r.status == "rolled back":
            console.print(f"  {r.name}: rolled back — {r.reason}", highlight=False)
    if report.output_paths:
        console.print("wrote " + ", ".join(report.output_paths), highlight=False)


def markdown(report: Any) -> str:
    lines = [f"# Rooftop report: `{report.model_path or 'model'}`", "", f"Target `{report.target}`.", ""]
    lines += [f"- {s}" for s in summary_lines(report)]
    lines += ["", "## Passes", "", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in pass_rows(report):
        lines.append("| " + " | ".join(row) + " |")
    top = top_rows(report)
    if top:
        lines += ["", "## Top memory-bound operators (after)", "", "| " + " | ".join(TOP_HEADERS) + " |", "|" + "---|" * len(TOP_HEADERS)]
        lines += ["| " + " | ".join(r) + " |" for r in top]
    rb = [r for r in report.passes if r.status == "rolled back"]
    if rb:
        lines += ["", "## Rolled back", ""] + [f"- `{r.name}`: {r.reason}" for r in rb]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def write_report(report: Any, path: str | os.PathLike[str]) -> None:
    """Write a report file; the format follows the extension (.json, .md, .html)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".json":
        text = json.dumps(report_dict(report), indent=1, allow_nan=False, default=str) + "\n"
    elif ext in (".md", ".markdown"):
        text = markdown(report)
    elif ext in (".html", ".htm"):
        from rooftop.analysis.html import html_page

        text = html_page(report)
    else:  # validated by the CLI before the run
        raise ValueError(f"unknown report format '{ext}'")
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)

