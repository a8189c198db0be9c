"""The Markdown report (reads as a pull-request comment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooftop.report.text import headers, kinds_lines, not_kept, pass_rows, summary_lines, top_headers, top_rows

if TYPE_CHECKING:
    from rooftop.pipeline import Report


def markdown(report: Report) -> str:
    from rooftop.report.verdict import lines as verdict_lines
    from rooftop.report.verdict import outcome

    lines = [f"# Rooftop report: `{report.model_path or 'model'}`", "", "## Verdict", ""]
    lines += [f"- {v}" for v in verdict_lines(outcome(report))]
    lines += ["", "## Summary", "", f"Target `{report.target}`.", ""]
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
        lines += [
            "",
            "## Top memory-bound operators (after)",
            "",
            "| " + " | ".join(top_headers(report)) + " |",
            "|" + "---|" * len(top_headers(report)),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in top]
    rb = not_kept(report)
    if rb:
        lines += ["", "## Not kept", ""] + [f"- `{r.name}` {r.status.value}: {r.reason}" for r in rb]
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    return "\n".join(lines) + "\n"
