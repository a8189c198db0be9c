"""The audit's reports: terminal table, JSON (``Audit.as_dict`` under ``"audit"``), Markdown that
reads as a pull-request comment."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from rooftop.audit import Audit, Finding

HEADERS = ["kind", "nodes", "traffic", "predicted", "measured", "who fixes it"]


def _nodes(f: Finding, k: int = 3) -> str:
    more = f" +{len(f.nodes) - k}" if len(f.nodes) > k else ""
    return ", ".join(f.nodes[:k]) + more if f.nodes else "-"


def _fix(f: Finding) -> str:
    return f"pass {f.fixed_by}" if f.fixed_by else f"author: {f.author_fix}"


def rows(a: Audit) -> list[list[str]]:
    return [
        [
            f.kind,
            _nodes(f),
            f"{f.bytes / 1e6:.3g} MB",
            f"{f.predicted_ms:.3g} ms",
            "-" if f.measured_ms is None else f"{f.measured_ms:.3g} ms",
            _fix(f),
        ]
        for f in a.findings
    ]


def summary(a: Audit) -> list[str]:
    by_kind: dict[str, int] = {}
    for f in a.findings:
        by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
    lines = [
        f"{len(a.findings)} findings ({', '.join(f'{k} {v}' for k, v in by_kind.items()) or 'none'}); "
        f"{sum(1 for f in a.findings if f.fixed_by)} fixed by a pass, "
        f"{sum(1 for f in a.findings if not f.fixed_by)} for the author",
        f"{a.nodes} nodes, memory traffic {a.traffic_bytes / 1e6:.3g} "
        f"MB, predicted {a.predicted_ms:.3g} ms on {a.hardware}: "
        f"{100 * a.memory_bound_share:.0f}% of it memory-bound; the passes recover {a.recoverable_ms:.3g} ms",
    ]
    if a.latency:
        lat = a.latency
        lines.append(
            f"measured at {lat['level']}: {lat['median_ms']:.3g} ms (quartiles {lat['q1_ms']:.3g}–{lat['q3_ms']:.3g}, "
            f"best block median {lat['best_ms']:.3g} ms, {lat['runs']} runs)"
        )
    lines += [f"GATE FAILED: {x}" for x in a.failures]
    return lines


def print_audit(a: Audit, console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"Rooftop audit: {a.model_path}", title_justify="left", box=box.SIMPLE_HEAD)
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("kind", "nodes", "who fixes it") else "right", overflow="fold")
    for r in rows(a):
        t.add_row(*r)
    console.print(t)
    for line in summary(a):
        console.print(line, highlight=False)


def markdown(a: Audit) -> str:
    out = [f"### Rooftop audit: `{a.model_path}`", ""] + [f"- {s}" for s in summary(a)] + [""]
    if a.findings:
        out += ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows(a)]
        out += ["", "<details><summary>what each finding says</summary>", ""]
        out += [f"- `{f.kind}` {f.message}" for f in a.findings] + ["", "</details>"]
    return "\n".join(out) + "\n"


def write_audit(a: Audit, path: str | os.PathLike[str]) -> None:
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".json":
        text = json.dumps({"audit": a.as_dict()}, indent=1, default=str) + "\n"
    elif ext in (".md", ".markdown"):
        text = markdown(a)
    elif ext in (".html", ".htm"):
        import html

        text = f"<!doctype html><meta charset='utf-8'><pre>{html.escape(markdown(a))}</pre>\n"
    else:
        raise ValueError(f"unknown report format '{ext}'")
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
