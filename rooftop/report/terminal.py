"""The terminal report (rich): the pass table, wide or narrow by the console's width, then the summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from rooftop.report.text import (
    deploy_word,
    headers,
    kinds_lines,
    narrow_rows,
    not_kept,
    pass_rows,
    summary_lines,
    top_headers,
    top_rows,
    unchanged_line,
)

if TYPE_CHECKING:
    from rooftop.pipeline import Report


WIDE_TERMINAL = 140  # narrower consoles get the compact pass table


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
    from rooftop.report.verdict import lines, outcome

    for line in lines(outcome(report)):
        console.print(line, highlight=False)
    if narrow:
        heads = ["pass", "status", "rw", "nodes", "traffic", f"measured ({deploy_word(report)})", "error"]
        console.print(_table(title, heads, narrow_rows(report, collapsed=False), ("pass", "status"), True))
    else:
        console.print(_table(title, headers(report), pass_rows(report, collapsed=False), ("pass", "status"), False))
    idle = unchanged_line(report)
    if idle:
        console.print(idle, highlight=False)
    for line in kinds_lines(report) + summary_lines(report):
        console.print(line, highlight=False)
    top = top_rows(report)
    if top:
        heads = top_headers(report)
        if narrow:  # the module column wraps into a tower there: the HTML and JSON reports carry it
            heads, top = heads[:6], [r[:6] for r in top]
        console.print(_table("top memory-bound operators after optimization", heads, top, ("operator", "op"), narrow))
    for r in not_kept(report):
        console.print(f"  {r.name}: {r.status.value} — {r.reason}", highlight=False)
    if report.output_paths:
        console.print("wrote " + ", ".join(report.output_paths), highlight=False)
