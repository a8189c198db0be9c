"""The audit's reports: terminal tables, JSON (``Audit.as_dict`` under ``"audit"``), Markdown short
enough for a pull-request comment (under 4 KB on any model: the kinds and the modules most at
stake; the full list stays in the JSON and the HTML), and an HTML page with every finding under
its kind, and the findings by module of the author's code."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from rooftop.audit import Audit, Finding, Group, groups

COMMENT_BYTES = 4000  # a PR comment stays under 4 KB
KIND_HEADERS = ["kind", "findings", "traffic", "predicted", "measured", "who fixes it"]
MODULE_HEADERS = ["module", "class", "source", "findings", "kinds", "traffic", "predicted"]
FINDING_HEADERS = ["node", "module", "class", "source", "traffic", "predicted", "measured", "what"]


def _mb(x: float) -> str:
    return f"{x / 1e6:.3g} MB"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g} ms"


def _fix(g: Group) -> str:
    fixers = sorted({f.fixed_by for f in g.findings if f.fixed_by})
    authors = [f for f in g.findings if not f.fixed_by]
    parts = [f"pass {', '.join(fixers)}"] if fixers else []
    if authors:
        parts.append(f"author ({len(authors)}): {authors[0].author_fix}")
    return "; ".join(parts)


def kind_rows(a: Audit) -> list[list[str]]:
    return [
        [g.key, str(len(g.findings)), _mb(g.bytes), _ms(g.predicted_ms), _ms(g.measured_ms), _fix(g)]
        for g in groups(a.findings, "kind")
    ]


def module_rows(a: Audit, k: int | None = None) -> list[list[str]]:
    gs = groups(a.findings, "module")
    return [
        [
            g.key or "(top module)",
            g.findings[0].module_class or "-",
            g.findings[0].source or "-",
            str(len(g.findings)),
            ", ".join(sorted({f.kind for f in g.findings})),
            _mb(g.bytes),
            _ms(g.predicted_ms),
        ]
        for g in gs[:k]
    ]


def finding_row(f: Finding) -> list[str]:
    node = f.nodes[0] + (f" +{len(f.nodes) - 1}" if len(f.nodes) > 1 else "") if f.nodes else "-"
    return [
        node,
        f.module or "-",
        f.module_class or "-",
        f.source or "-",
        _mb(f.bytes),
        _ms(f.predicted_ms),
        _ms(f.measured_ms),
        f.message,
    ]


def summary(a: Audit) -> list[str]:
    n, fixed = len(a.findings), sum(1 for f in a.findings if f.fixed_by)
    kinds = len({f.kind for f in a.findings})
    lines = [
        f"{n} findings of {kinds} kinds: {fixed} fixed by a pass, {n - fixed} for the author",
        f"{a.nodes} nodes, memory traffic {_mb(a.traffic_bytes)}, predicted {a.predicted_ms:.3g} ms on "
        f"{a.hardware} ({100 * a.memory_bound_share:.0f}% memory-bound); the passes recover {a.recoverable_ms:.3g} ms",
    ]
    if a.latency:
        lat = a.latency
        lines.append(
            f"measured at {lat['level']}: {lat['median_ms']:.3g} ms (quartiles {lat['q1_ms']:.3g}–{lat['q3_ms']:.3g}, "
            f"best block median {lat['best_ms']:.3g} ms, {lat['runs']} runs)"
        )
    lines += [f"GATE FAILED: {x}" for x in a.failures]
    return lines


def _rich_table(title: str, heads: list[str], rows: list[list[str]], left: set[str]) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for h in heads:
        t.add_column(h, justify="left" if h in left else "right", overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t


def print_audit(a: Audit, console: Console | None = None) -> None:
    console = console or Console()
    for line in summary(a):
        console.print(line, highlight=False)
    if a.findings:
        left = {"kind", "who fixes it", "module", "class", "source", "kinds"}
        console.print(_rich_table(f"Rooftop audit: {a.model_path}", KIND_HEADERS, kind_rows(a), left))
        mods = module_rows(a, 10)
        if mods:
            console.print(_rich_table("where, in the model's code (most at stake first)", MODULE_HEADERS, mods, left))


def _md_table(heads: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + [
        "| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows
    ]


def markdown(a: Audit) -> str:
    """The PR comment: the summary, one row a kind, the modules most at stake; under COMMENT_BYTES."""
    head = [f"### Rooftop audit: `{a.model_path}`", ""] + [f"- {s}" for s in summary(a)]
    kinds = _md_table(KIND_HEADERS, kind_rows(a)) if a.findings else []
    all_modules = module_rows(a)
    for k in (10, 6, 3, 0):
        mods = all_modules[:k]
        body = head + ([""] + kinds if kinds else [])
        if mods:
            body += ["", "**Where, in the model's code**", ""] + _md_table(MODULE_HEADERS, mods)
        left = len(all_modules) - len(mods)
        if left or a.findings:
            body += ["", f"_{len(a.findings)} findings in all" + (f", {left} more modules" if left else "")]
            body[-1] += ": every node in the JSON and HTML report._"
        text = "\n".join(body) + "\n"
        if len(text.encode()) <= COMMENT_BYTES:
            return text
    cut = text.encode()[: COMMENT_BYTES - 80].decode(errors="ignore").rsplit("\n", 1)[0]
    return cut + "\n\n_(cut to fit a comment: the JSON and HTML report have it all)_\n"


def _html_table(heads: list[str], rows: list[list[str]], cls: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(a: Audit) -> str:
    e = html.escape
    parts = [f"<li>{e(s)}</li>" for s in summary(a)]
    sections = []
    for g in groups(a.findings, "kind"):
        rows = [finding_row(f) for f in g.findings]
        sections.append(
            f"<details><summary><b>{e(g.key)}</b>: {len(g.findings)} findings, {e(_mb(g.bytes))}, "
            f"{e(_ms(g.predicted_ms))} predicted; {e(_fix(g))}</summary>"
            f"{_html_table(FINDING_HEADERS, rows, 'findings')}</details>"
        )
    mods = module_rows(a)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Rooftop audit: {e(str(a.model_path))}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0 1em;font-size:13px;max-width:100%}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;overflow-wrap:anywhere}}
th{{background:#f3f3f3}} details{{margin:0.4em 0}} summary{{cursor:pointer}}
#verdict{{border:2px solid #333;padding:0.5em 1em;margin:1em 0}}
</style></head><body>
<h1>Rooftop audit: <code>{e(str(a.model_path))}</code></h1>
<section id="verdict"><h2>Summary</h2><ul>{"".join(parts)}</ul></section>
<h2>By kind</h2>{_html_table(KIND_HEADERS, kind_rows(a), "kinds") if a.findings else "<p>No findings.</p>"}
{("<h2>Where, in the model's code</h2>" + _html_table(MODULE_HEADERS, mods, "modules")) if mods else ""}
{("<h2>Every finding, by kind</h2>" + "".join(sections)) if sections else ""}
{("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in a.notes) + "</ul>") if a.notes else ""}
</body></html>
"""


def write_audit(a: Audit, path: str | os.PathLike[str]) -> None:
    p = Path(path)
    ext = p.suffix.lower()
    if ext == ".json":
        text = json.dumps({"audit": a.as_dict()}, indent=1, default=str) + "\n"
    elif ext in (".md", ".markdown"):
        text = markdown(a)
    elif ext in (".html", ".htm"):
        text = html_page(a)
    else:
        raise ValueError(f"unknown report format '{ext}'")
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
