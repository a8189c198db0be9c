"""Renderers for an optimize run: terminal table (rich), JSON (stable schema), Markdown, HTML."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table

from rooftop.analysis.costs import human
from rooftop.records import ORT_LEVEL_NAMES, Cause, CostDelta, Latency, PassRecord, Status, Verdict

if TYPE_CHECKING:
    from rooftop.pipeline import Report

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


def _latency_dict(lat: Latency | None) -> dict[str, Any]:
    if lat is None:
        return {}
    return {
        "latency_ms_before": round(lat.ms_before, 4),
        "latency_ms_after": round(lat.ms_after, 4),
        "latency_ratio": round(lat.ratio, 4),
        "latency_ci": [round(lat.ci[0], 4), round(lat.ci[1], 4)],
        "latency_spread": [round(lat.iqr[0], 4), round(lat.iqr[1], 4)],
        "latency_verdict": lat.verdict.value,
        "latency_rounds": lat.rounds,
        "ort_level": lat.level_name,
        "threads": lat.threads,
    }


_PASS_LATENCY_KEYS = ("latency_ms_before", "latency_ms_after", "latency_spread", "latency_ci", "latency_ratio", "latency_verdict", "ort_level")


def _cost_dict(cost: CostDelta | None) -> dict[str, Any]:
    if cost is None:
        return {k: None for k in ("flops_before", "flops_after", "int_ops_before", "int_ops_after", "bytes_before",
                                  "bytes_after", "predicted_s_before", "predicted_s_after")}
    b, a = cost.before, cost.after
    return {
        "flops_before": b.flops, "flops_after": a.flops, "int_ops_before": b.int_ops, "int_ops_after": a.int_ops,
        "bytes_before": b.bytes, "bytes_after": a.bytes, "predicted_s_before": b.predicted_s, "predicted_s_after": a.predicted_s,
    }


def _pass_dict(r: PassRecord) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": r.name,
        "iteration": r.iteration,
        "status": r.status.value,
        "cause": None if r.cause is None else r.cause.value,
        "rewrites": r.rewrites,
        "nodes_before": r.nodes_before,
        "nodes_after": r.nodes_after,
        "seconds": round(r.seconds, 6),
        "verified": r.verified,
        "max_abs_error": _num(r.max_abs_error),
        "reason": r.reason,
        "notes": [n for n in r.notes if "Traceback" not in n],
        "counts": dict(r.counts),
        "refusals": {why: len(nodes) for why, nodes in r.refusals.items()},
        "refused_nodes": {why: list(nodes) for why, nodes in r.refusals.items()},
    }
    d.update(_cost_dict(r.cost))
    lat = _latency_dict(r.latency)
    d.update({k: lat.get(k) for k in _PASS_LATENCY_KEYS})
    return _clean(d)


def _hardware_dict(hw: Any) -> dict[str, Any] | None:
    if hw is None:
        return None
    return {
        "name": hw.name,
        "peak_flops": hw.peak_flops,
        "bandwidth_bytes_per_s": hw.bandwidth,
        "ridge_flops_per_byte": hw.ridge(),
        "channel_multiple": hw.channel_multiple,
        "overhead_s": hw.overhead_s,
        "kind": hw.kind,
        "source": hw.source,
    }


def report_dict(report: Report) -> dict[str, Any]:
    """The stable JSON shape of a report (documented in the README; fields are only ever added)."""
    rho_b, n_b = correlation(report.before)
    rho_a, n_a = correlation(report.after)
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {"path": report.model_path, "nodes": report.nodes_before, "params": report.params_before},
        "output": {"paths": report.output_paths, "nodes": report.nodes_after, "params": report.params_after},
        "target": report.target,
        "pipeline": report.pipeline,
        "deploy_level": ORT_LEVEL_NAMES[report.deploy_level],
        "measured": report.measured,
        "hardware": _hardware_dict(report.hardware),
        "verification": {
            "description": report.verification,
            "ok": None if report.final_check is None else report.final_check.ok,
            "max_abs_error": None if report.final_check is None else _num(report.final_check.max_abs_error),
        },
        "passes": [_pass_dict(r) for r in report.passes],
        "backed_off": report.backed_off,
        "reverted": report.reverted,
        "before": _side(report.before),
        "after": _side(report.after),
        "latency": {level: _clean(_latency_dict(lat)) for level, lat in report.latency.items()},
        "disagreement": report.disagreement or None,
        "prediction_vs_measurement": {
            "spearman_before": rho_b, "operators_before": n_b, "spearman_after": rho_a, "operators_after": n_a,
        },
        "warnings": report.warnings,
        "seconds": round(report.seconds, 3),
    }


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


def _lat(lat: Latency | None) -> str:
    if lat is None:
        return "-"
    mark = {"faster": "", "slower": " slower", "noise": " (noise)"}[lat.verdict.value]
    return f"{lat.ms_before:.3g}→{lat.ms_after:.3g}ms {lat.describe()}{mark}"


def headers(report: Report) -> list[str]:
    return ["pass", "status", "rewrites", "nodes", "FLOPs", "traffic", "predicted",
            f"measured ({ORT_LEVEL_NAMES[report.deploy_level]})", "max error", "s"]


def _shown(r: PassRecord) -> bool:
    """Cost and latency columns are shown for passes that changed the model or were rejected for it."""
    return r.status in (Status.APPLIED, Status.REJECTED)


def pass_rows(report: Report) -> list[list[str]]:
    rows = []
    for r in report.passes:
        c = r.cost if _shown(r) else None
        status = r.status.value.upper() if r.status in (Status.ROLLED_BACK, Status.REJECTED) else r.status.value
        rows.append(
            [
                r.name + (f" #{r.iteration}" if r.iteration > 1 else ""),
                status,
                str(r.rewrites),
                f"{r.nodes_before}→{r.nodes_after}" if r.nodes_before != r.nodes_after else str(r.nodes_after),
                _delta(c.before.flops, c.after.flops, lambda v: human(v)) if c else "",
                _delta(c.before.bytes, c.after.bytes, _mb) if c else "",
                _delta(c.before.predicted_s, c.after.predicted_s, _ms) if c else "",
                _lat(r.latency) if _shown(r) else "",
                _err(r.max_abs_error) if r.verified else ("-" if r.status is not Status.APPLIED else "unverified"),
                f"{r.seconds:.2f}",
            ]
        )
    return rows


def summary_lines(report: Report) -> list[str]:
    lines = []
    hw, before, after = report.hardware, report.before, report.after
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
    for level, lat in report.latency.items():
        deploy = " (deploy level)" if level == report.deploy_level else ""
        lines.append(f"measured {lat.level_name}{deploy}, {lat.threads} threads, {lat.rounds} interleaved rounds: {_lat(lat)} "
                     "(median of per-round ratios after/before [95% CI])")
    if report.backed_off:
        what = "the original graph is written unchanged" if report.reverted else "dropped " + ", ".join(report.backed_off)
        lines.append(f"backed off (the optimized model measured slower than the original): {what}")
    if report.disagreement:
        lines.append(f"prediction and measurement disagree: {report.disagreement}")
    rho, n = correlation(after)
    if rho is not None:
        lines.append(f"predicted vs measured per-operator time: Spearman rank correlation {rho:.2f} over {n} operators")
    return lines


def top_rows(report: Report, k: int = 8) -> list[list[str]]:
    after = report.after
    if after is None:
        return []
    rows = []
    for r in after.top_memory_bound(k):
        rows.append([r.name, r.op_type, f"{r.intensity:.2f}" if r.intensity not in (None, float("inf")) else "-",
                     _mb(r.bytes_read + r.bytes_written), _ms(r.predicted_s or 0.0), "-" if r.measured_s is None else _ms(r.measured_s)])
    return rows


TOP_HEADERS = ["operator", "op", "FLOP/B", "traffic", "predicted", "measured"]


def projected_line(report: Report) -> str:
    """``--check``: what the passes would save, as one line."""
    before, after, hw = report.before, report.after, report.hardware
    if before is None or after is None or hw is None or not before.bytes:
        return ""
    saved = before.bytes - after.bytes
    verb = "saved" if saved >= 0 else "added"
    return (f"projected: memory traffic {_mb(before.bytes)} → {_mb(after.bytes)} ({_mb(abs(saved))} {verb}, "
            f"{100 * abs(saved) / before.bytes:.1f}%), predicted time {_ms(before.predicted_s)} → {_ms(after.predicted_s)} on {hw.name}")


def kinds_lines(report: Report) -> list[str]:
    """Per pass that did or refused something: rewrites by kind, refusals by reason (counts)."""
    lines = []
    for r in report.passes:
        parts = []
        if r.counts and r.status is Status.APPLIED:
            parts.append(", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())))
        if r.refusals:
            parts.append("left: " + "; ".join(f"{why} ({len(n)})" for why, n in sorted(r.refusals.items())))
        if parts:
            lines.append(f"  {r.name}{f' #{r.iteration}' if r.iteration > 1 else ''}: " + " — ".join(parts))
    return lines


def explain_lines(report: Report, name: str) -> list[str]:
    """``--explain PASS``: what the pass rewrote, and every node it looked at and left, with the reason."""
    recs = [r for r in report.passes if r.name == name]
    if not recs:
        return [f"{name}: not in this run's pipeline ({', '.join(report.pipeline)})"]
    lines = []
    for r in recs:
        head = f"{r.name}{f' #{r.iteration}' if r.iteration > 1 else ''}: {r.status.value}, {r.rewrites} rewrites"
        lines.append(head + (f" ({', '.join(f'{k} {v}' for k, v in sorted(r.counts.items()))})" if r.counts else ""))
        if r.reason:
            lines.append(f"  reason: {r.reason}")
        for why, nodes in sorted(r.refusals.items()):
            lines.append(f"  left {len(nodes)}: {why}")
            lines += [f"    {n}" for n in nodes]
        if not r.refusals:
            lines.append("  no candidate was left")
    return lines


def not_kept(report: Report) -> list[PassRecord]:
    return [r for r in report.passes if r.status in (Status.ROLLED_BACK, Status.REJECTED) or r.cause is Cause.BACKED_OFF]


WIDE_TERMINAL = 140  # narrower consoles get the compact pass table


def narrow_rows(report: Report) -> list[list[str]]:
    """The pass table for narrow terminals: no FLOPs, predicted time or seconds (the summary and the
    JSON carry them), the measured ratio without the milliseconds."""
    rows = []
    for full, r in zip(pass_rows(report), report.passes):
        lat = r.latency if _shown(r) else None
        measured = "" if lat is None else f"{lat.describe()}{'' if lat.verdict is Verdict.FASTER else ' ' + lat.verdict.value}"
        rows.append([full[0], full[1], full[2], full[3], full[5], measured, full[8]])
    return rows


def _table(title: str, heads: list[str], rows: list[list[str]], left: tuple[str, ...], narrow: bool) -> Table:
    """A table that wraps a cell that does not fit instead of cutting it with an ellipsis."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, pad_edge=not narrow)
    for h in heads:
        t.add_column(h, justify="left" if h in left else "right", overflow="fold")
    for row in rows:
        t.add_row(*row)
    return t


def print_terminal(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    narrow = console.width < WIDE_TERMINAL
    title = f"Rooftop: {report.model_path or 'model'}  ({report.target} target)"
    if narrow:
        heads = ["pass", "status", "rw", "nodes", "traffic", f"measured ({ORT_LEVEL_NAMES[report.deploy_level]})", "error"]
        console.print(_table(title, heads, narrow_rows(report), ("pass", "status"), True))
    else:
        console.print(_table(title, headers(report), pass_rows(report), ("pass", "status"), False))
    for line in kinds_lines(report) + summary_lines(report):
        console.print(line, highlight=False)
    top = top_rows(report)
    if top:
        console.print(_table("top memory-bound operators after optimization", TOP_HEADERS, top, ("operator", "op"), narrow))
    for r in not_kept(report):
        console.print(f"  {r.name}: {r.status.value} — {r.reason}", highlight=False)
    if report.output_paths:
        console.print("wrote " + ", ".join(report.output_paths), highlight=False)


def markdown(report: Report) -> str:
    lines = [f"# Rooftop report: `{report.model_path or 'model'}`", "", f"Target `{report.target}`.", ""]
    lines += [f"- {s}" for s in summary_lines(report)]
    hs = headers(report)
    lines += ["", "## Passes", "", "| " + " | ".join(hs) + " |", "|" + "---|" * len(hs)]
    for row in pass_rows(report):
        lines.append("| " + " | ".join(row) + " |")
    kinds = kinds_lines(report)
    if kinds:
        lines += ["", "## Rewrites by kind, and what was left", ""] + [f"- {k.strip()}" for k in kinds]
    top = top_rows(report)
    if top:
        lines += ["", "## Top memory-bound operators (after)", "", "| " + " | ".join(TOP_HEADERS) + " |", "|" + "---|" * len(TOP_HEADERS)]
        lines += ["| " + " | ".join(r) + " |" for r in top]
    rb = not_kept(report)
    if rb:
        lines += ["", "## Not kept", ""] + [f"- `{r.name}` {r.status.value}: {r.reason}" for r in rb]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def write_report(report: Report, path: str | os.PathLike[str]) -> None:
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

