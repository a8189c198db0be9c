"""Renderers for an optimize run: terminal table (rich), JSON, Markdown, HTML."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SCHEMA_VERSION = 1


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    return x


def report_dict(report: Any) -> dict[str, Any]:
    """The stable JSON shape of a report (documented in the README)."""
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
        d.update({k: v for k, v in r.extra.items() if not k.startswith("_")})
        passes.append(d)
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "model": {
            "path": report.model_path,
            "nodes": report.nodes_before,
            "params": report.params_before,
        },
        "output": {
            "paths": report.output_paths,
            "nodes": report.nodes_after,
            "params": report.params_after,
        },
        "target": report.target,
        "pipeline": report.pipeline,
        "verification": {
            "description": report.verification,
            "ok": None if report.final_check is None else report.final_check.ok,
            "max_abs_error": None if report.final_check is None else _num(report.final_check.max_abs_error),
        },
        "passes": passes,
        "warnings": report.warnings,
        "seconds": round(report.seconds, 3),
    }
    out.update({k: v for k, v in report.extra.items() if not k.startswith("_")})
    return out


def _err(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.1e}" if x else "0"


def pass_rows(report: Any) -> list[list[str]]:
    rows = []
    for r in report.passes:
        status = r.status if r.status != "rolled back" else "ROLLED BACK"
        rows.append(
            [
                r.name + (f" #{r.iteration}" if r.iteration > 1 else ""),
                status,
                str(r.rewrites),
                f"{r.nodes_before}→{r.nodes_after}",
                f"{r.seconds:.2f}",
                _err(r.max_abs_error) if r.verified else ("-" if r.status != "applied" else "unverified"),
            ]
        )
    return rows


HEADERS = ["pass", "status", "rewrites", "nodes", "seconds", "max error"]


def print_terminal(report: Any, console: Console | None = None) -> None:
    console = console or Console()
    title = f"Rooftop: {report.model_path or 'model'}  ({report.target} target)"
    t = Table(title=title, title_justify="left")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("pass", "status") else "right")
    for row in pass_rows(report):
        t.add_row(*row)
    console.print(t)
    console.print(
        f"nodes {report.nodes_before} → {report.nodes_after}, parameters {report.params_before:,} → {report.params_after:,}; "
        f"{report.verification}; {report.seconds:.1f} s"
    )
    for r in report.passes:
        if r.status == "rolled back":
            console.print(f"  {r.name}: rolled back — {r.reason}")
    if report.output_paths:
        console.print("wrote " + ", ".join(report.output_paths))


def markdown(report: Any) -> str:
    lines = [f"# Rooftop report: {report.model_path or 'model'}", ""]
    lines.append(
        f"Target `{report.target}`; nodes {report.nodes_before} → {report.nodes_after}; "
        f"parameters {report.params_before:,} → {report.params_after:,}; {report.verification}."
    )
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in pass_rows(report):
        lines.append("| " + " | ".join(row) + " |")
    rb = [r for r in report.passes if r.status == "rolled back"]
    if rb:
        lines += ["", "Rolled back:", ""] + [f"- `{r.name}`: {r.reason}" for r in rb]
    if report.warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"


def html_page(report: Any) -> str:
    e = html.escape
    rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in pass_rows(report))
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    warn = "".join(f"<li>{e(w)}</li>" for w in report.warnings)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Rooftop report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>Rooftop report: {e(report.model_path or 'model')}</h1>
<p>Target <code>{e(report.target)}</code>; nodes {report.nodes_before} → {report.nodes_after};
parameters {report.params_before:,} → {report.params_after:,}; {e(report.verification)}.</p>
<h2>Passes</h2>
<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
{('<h2>Warnings</h2><ul>' + warn + '</ul>') if warn else ''}
</body></html>
"""


def write_report(report: Any, path: str | os.PathLike[str]) -> None:
    """Write a report file; the format follows the extension (.json, .md, .html)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".json":
        text = json.dumps(report_dict(report), indent=2, allow_nan=False, default=str) + "\n"
    elif ext in (".md", ".markdown"):
        text = markdown(report)
    elif ext in (".html", ".htm"):
        text = html_page(report)
    else:  # validated by the CLI before the run
        raise ValueError(f"unknown report format '{ext}'")
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
