"""The verdict: what a deployment engineer reads first, in every format.

Written or not and why; verified (where, by which rule, at which shapes, which dims defaulted);
measured (where, at which level and threads, the ratio with its interval) or not timed and why;
what changed (nodes, bytes moved, file size, op types added and removed); the next step when one
is obvious (the ``--input-shape`` line for the shapes the model is really run at).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rooftop.records import ORT_LEVEL_NAMES, Latency, Status

if TYPE_CHECKING:
    from rooftop.pipeline import Report


@dataclass
class Outcome:
    written: bool
    why: str  # why written as it is, or why nothing was
    output: str | None
    verified: bool | None  # None: not verified
    verification: str
    rule: str
    shapes: list[str]
    defaulted: list[str]
    measured: dict[str, Any] | None  # runtime, level, threads, ratio, ci, verdict
    not_timed: str  # why nothing was measured ("" when measured)
    nodes: tuple[int, int]
    bytes_moved: tuple[float, float] | None
    file_bytes: tuple[int | None, int | None]
    ops_added: list[str] = field(default_factory=list)
    ops_removed: list[str] = field(default_factory=list)
    next_step: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome(report: Report) -> Outcome:
    lat = report.latency.get(report.deploy_level)
    sp = report.shapes
    before, after = report.before, report.after
    fc = report.final_check
    return Outcome(
        written=bool(report.output_paths),
        why=_why(report),
        output=report.output_paths[0] if report.output_paths else None,
        verified=None if fc is None or fc.skipped else fc.ok,
        verification=report.verification,
        rule="|got - ref| <= atol + rtol·(|ref| + rms(ref)) for floats, one quantization step for quantized "
        "outputs, exact for the rest; onnxruntime with its optimizations off",
        shapes=sp.labels() if sp is not None else [],
        defaulted=[d.describe() for d in sp.defaulted] if sp is not None else [],
        measured=_measured(report, lat),
        not_timed="" if lat is not None else _not_timed(report),
        nodes=(report.nodes_before, report.nodes_after),
        bytes_moved=(before.bytes, after.bytes) if before is not None and after is not None else None,
        file_bytes=(_size(report.model_path), sum(_size(p) or 0 for p in report.output_paths) or None),
        ops_added=sorted(set(report.ops_after) - set(report.ops_before)),
        ops_removed=sorted(set(report.ops_before) - set(report.ops_after)),
        next_step=_next_step(report),
    )


def _size(path: str | None) -> int | None:
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _why(report: Report) -> str:
    if not report.output_paths:
        return "nothing written: no -o given (or --check)"
    if report.reverted:
        return "the original graph, unchanged: the optimized model measured slower and backing off did not help"
    if not report.changed:
        return "no pass changed the model"
    kept = [r.name for r in report.passes if r.status is Status.APPLIED and r.rewrites]
    return "kept: " + ", ".join(dict.fromkeys(kept))


def _measured(report: Report, lat: Latency | None) -> dict[str, Any] | None:
    if lat is None:
        return None
    return {
        "runtime": report.runtime,
        "level": lat.level_name,
        "threads": lat.threads,
        "ratio": round(lat.ratio, 4),
        "ci": [round(lat.ci[0], 4), round(lat.ci[1], 4)],
        "verdict": lat.verdict.value,
        "rounds": lat.rounds,
    }


def _not_timed(report: Report) -> str:
    if report.replayed:
        return f"replayed plan {report.replayed}: nothing is timed on replay"
    if not report.measured:
        return "not timed (--no-time, or the runtime cannot run the model)"
    if not report.changed:
        return "nothing changed: nothing to time"
    return "the timing failed (see the warnings)"


def _next_step(report: Report) -> str:
    sp = report.shapes
    if sp is not None and sp.defaulted and not report.replayed:
        return f"decide at the shapes you run: {sp.hint()}"
    if any("--opset" in why for r in report.passes for why in r.refusals):
        import re

        wanted = sorted(
            {int(m) for r in report.passes for why in r.refusals for m in re.findall(r"--opset (\d+)", why)}
        )
        return f"--opset {wanted[-1]} enables the fusions that need it"
    return ""


def lines(o: Outcome) -> list[str]:
    """The verdict block as a few lines of text (terminal, Markdown, HTML)."""
    out = []
    if o.written:
        out.append(f"WRITTEN {o.output}: {o.why}")
    else:
        out.append(f"NOT WRITTEN: {o.why}")
    state = {True: "VERIFIED", False: "NOT VERIFIED", None: "NOT VERIFIED"}[o.verified]
    at = " and ".join(o.shapes) or "-"
    out.append(f"{state}: {o.verification}" if o.verified is not None else f"{state}: {o.verification}")
    out.append(f"decided at {at}" + (f"; defaulted: {'; '.join(o.defaulted)}" if o.defaulted else ""))
    if o.measured:
        m = o.measured
        out.append(
            f"MEASURED at {m['level']}, {m['threads']} threads: ×{m['ratio']:.2f} "
            f"[{m['ci'][0]:.2f}–{m['ci'][1]:.2f}] {m['verdict']} ({m['rounds']} interleaved rounds)"
        )
    else:
        out.append(f"NOT TIMED: {o.not_timed}")
    changed = f"nodes {o.nodes[0]} → {o.nodes[1]}"
    if o.bytes_moved:
        changed += f", bytes moved {_mb(o.bytes_moved[0])} → {_mb(o.bytes_moved[1])} ({_pct(*o.bytes_moved)})"
    if o.file_bytes[0] and o.file_bytes[1]:
        changed += f", file {_mb(o.file_bytes[0])} → {_mb(o.file_bytes[1])}"
    if o.ops_added or o.ops_removed:
        changed += "; ops " + " ".join([f"+{x}" for x in o.ops_added] + [f"-{x}" for x in o.ops_removed])
    out.append(changed)
    if o.next_step:
        out.append(f"next: {o.next_step}")
    return out


def _mb(x: float) -> str:
    return f"{x / 1e6:.3f} MB"


def _pct(a: float, b: float) -> str:
    if not a:
        return "±0%"
    return f"{100 * (b - a) / a:+.2f}%"


__all__ = ["ORT_LEVEL_NAMES", "Outcome", "lines", "outcome"]
