"""Reports of an optimize run, one module a format: ``text`` (shared words and rows), ``terminal``
(rich), ``data`` (JSON), ``markdown``, ``html``. Every format reads the typed ``pipeline.Report``;
nothing here imports the pipeline at run time.

    report.write("r.html")          # from Python: the format follows the extension
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rooftop.pipeline import Report

FORMATS = (".json", ".md", ".markdown", ".html", ".htm")


def check_path(path: str) -> None:
    """A report path the run can write, checked before the run starts (UsageError otherwise)."""
    from rooftop.errors import UsageError

    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"--report {path}: unknown format; use a .json, .md or .html path (or --report alone)")
    if not p.resolve().parent.is_dir():
        raise UsageError(f"--report {path}: folder {p.resolve().parent} does not exist")


def render(report: Report, ext: str) -> str:
    """The report as text in the format of a file extension."""
    ext = ext.lower()
    if ext == ".json":
        from rooftop.report.data import report_dict

        return json.dumps(report_dict(report), indent=1, allow_nan=False, default=str) + "\n"
    if ext in (".md", ".markdown"):
        from rooftop.report.markdown import markdown

        return markdown(report)
    if ext in (".html", ".htm"):
        from rooftop.report.html import html_page

        return html_page(report)
    raise ValueError(f"unknown report format '{ext}' (one of {', '.join(FORMATS)})")


def write_report(report: Report, path: str | os.PathLike[str]) -> None:
    """Write a report file atomically; the format follows the extension (.json, .md, .html)."""
    p = Path(path)
    text = render(report, p.suffix)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, p)
