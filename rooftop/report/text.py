"""The words and numbers every report format shares: cell formats, the pass rows, the summary lines,
the refusals by reason. Terminal, Markdown and HTML lay these out; JSON carries the raw values."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rooftop.analysis.costs import human
from rooftop.records import ORT_LEVEL_NAMES, Cause, Latency, PassRecord, Status, Verdict

if TYPE_CHECKING:
    from rooftop.analysis.roofline import Roofline
    from rooftop.pipeline import Report


def correlation(rl: Any) -> tuple[float | None, int]:
    """Spearman rank correlation of predicted and measured time over operators with both."""
    from rooftop.analysis.timing import spearman

    if rl is None:
        return None, 0
    pairs = [
        (r.predicted_s, r.measured_s)
        for r in rl.rows
        if r.predicted_s is not None and r.measured_s is not None and r.bound != "meta"
    ]
    if not pairs:
        return None, 0
    return spearman([p for p, _ in pairs], [m for _, m in pairs]), len(pairs)


def _err(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    return f"{x:.1e}" if x else "0"


def _change(a: float | None, b: float | None, scale: float, unit: str) -> str:
    """``a→b unit (±d)``, with as many digits as it takes for two different values never to print
    alike (33.66→33.74 MB, not 33.7MB→33.7MB), and the signed change; one value when equal."""
    if a is None or b is None:
        return "-"
    if abs(b - a) <= 1e-9 * max(abs(a), abs(b)):  # equal but for float rounding in a sum
        return f"{a / scale:.3g} {unit}"
    for digits in range(4, 10):
        sa, sb = f"{a / scale:.{digits}g}", f"{b / scale:.{digits}g}"
        if sa != sb:
            break
    return f"{sa}→{sb} {unit} ({(b - a) / scale:+.{max(digits - 1, 2)}g})"


def _flops(a: float | None, b: float | None) -> str:
    top = max(abs(a or 0.0), abs(b or 0.0))
    scale, prefix = next(((s, p) for s, p in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")) if top >= s), (1.0, ""))
    return _change(a, b, scale, f"{prefix}FLOP")


def _mb(x: float) -> str:
    return f"{x / 1e6:.3g} MB"


def _ms(x: float) -> str:
    return f"{x * 1e3:.3g} ms"


def _lat(lat: Latency | None) -> str:
    if lat is None:
        return "-"
    mark = {"faster": "", "slower": " slower", "noise": " (noise)"}[lat.verdict.value]
    return f"{lat.ms_before:.3g}→{lat.ms_after:.3g} ms {lat.describe()}{mark}"


def deploy_word(report: Report) -> str:
    """Where decisions were measured: an onnxruntime level, or the runtime (OpenVINO runs its own pipeline)."""
    return ORT_LEVEL_NAMES[report.deploy_level] if report.runtime == "onnxruntime" else report.runtime


def headers(report: Report) -> list[str]:
    return [
        "pass",
        "status",
        "rewrites",
        "nodes",
        "FLOPs",
        "traffic",
        "predicted",
        f"measured ({deploy_word(report)})",
        "max error",
        "s",
    ]


def _shown(r: PassRecord) -> bool:
    """Cost and latency columns are shown for passes that changed the model or were rejected for it."""
    return r.status in (Status.APPLIED, Status.REJECTED)


def _listed(report: Report) -> list[PassRecord]:
    """The passes the tables list one a row: every one that did, or was stopped from doing, something."""
    return [r for r in report.passes if r.status is not Status.UNCHANGED]


def unchanged_line(report: Report) -> str:
    """The passes that found nothing, collapsed into one cell."""
    names = [
        r.name + (f" #{r.iteration}" if r.iteration > 1 else "") for r in report.passes if r.status is Status.UNCHANGED
    ]
    return f"{len(names)} unchanged: {', '.join(names)}" if names else ""


def pass_rows(report: Report, collapsed: bool = True) -> list[list[str]]:
    """One row a pass that did something; with ``collapsed``, one more for those that found nothing."""
    rows = []
    for r in _listed(report):
        c = r.cost if _shown(r) else None
        status = r.status.value.upper() if r.status in (Status.ROLLED_BACK, Status.REJECTED) else r.status.value
        rows.append(
            [
                r.name + (f" #{r.iteration}" if r.iteration > 1 else ""),
                status,
                str(r.rewrites),
                f"{r.nodes_before}→{r.nodes_after}" if r.nodes_before != r.nodes_after else str(r.nodes_after),
                _flops(c.before.flops, c.after.flops) if c else "",
                _change(c.before.bytes, c.after.bytes, 1e6, "MB") if c else "",
                _change(c.before.predicted_s, c.after.predicted_s, 1e-3, "ms") if c else "",
                (_lat(r.latency) if not r.removes_only else "with final") if _shown(r) else "",
                _verified(r),
                f"{r.seconds:.2f}",
            ]
        )
    rest = unchanged_line(report) if collapsed else ""
    if rest:
        rows.append(
            [
                rest,
                "unchanged",
                "0",
                "",
                "",
                "",
                "",
                "",
                "",
                f"{sum(r.seconds for r in report.passes if r.status is Status.UNCHANGED):.2f}",
            ]
        )
    return rows


def _verified(r: PassRecord) -> str:
    """The max error column: the pass's own error, or ``with final`` when it was verified with the pipeline's output."""
    if not r.verified:
        return "-" if r.status is not Status.APPLIED else "unverified"
    return "with final" if r.max_abs_error is None else _err(r.max_abs_error)


def profile_words(hw) -> str:
    """How the profile's figures were had: ``measured here 3 h ago, best of 2``."""
    if hw.kind != "measured":
        return f"{hw.kind} figures"
    from rooftop.analysis.hardware import profile_age_s

    age = profile_age_s(hw)
    when = (
        "age unknown"
        if age == float("inf")
        else (f"{age / 60:.0f} min ago" if age < 5400 else f"{age / 3600:.0f} h ago")
    )
    n = int(hw.details.get("measurements", 1))
    return f"measured here {when}, best of {n}"


def opset_line(report: Report) -> str:
    """Which fusions a higher opset would have enabled, from the refusals that name one."""
    import re

    wanted: dict[int, dict[str, int]] = {}
    for r in report.passes:
        for why, nodes in r.refusals.items():
            m = re.match(r"opset \d+ < (\d+): (\w+) needs", why)
            if m:
                ops = wanted.setdefault(int(m.group(1)), {})
                ops[m.group(2)] = ops.get(m.group(2), 0) + len(nodes)
    if not wanted:
        return ""
    top = max(wanted)
    what = ", ".join(f"{op} ×{n}" for v in sorted(wanted) for op, n in sorted(wanted[v].items()))
    return f"a higher opset would enable: {what} (--opset {top} enables all of them)"


def layer_line(rl: Roofline) -> str:
    """One line for a model of repeated blocks (an LLM's thousands of rows, read as its layers)."""
    groups = rl.by_layer()
    blocks = [g for g in groups if g.layer]
    if not blocks:
        return ""
    rest = next((g for g in groups if not g.layer), None)
    lo, hi = min(blocks, key=lambda g: g.predicted_s), max(blocks, key=lambda g: g.predicted_s)
    line = (
        f"{len(blocks)} repeated blocks: {_mb(sum(g.bytes for g in blocks) / len(blocks))} of traffic and "
        f"{_ms(lo.predicted_s)}–{_ms(hi.predicted_s)} predicted each ({sum(g.nodes for g in blocks)} nodes in all)"
    )
    if rest is not None:
        line += f"; outside them {rest.nodes} nodes, {_mb(rest.bytes)}, {_ms(rest.predicted_s)}"
    return line + " (JSON: by_layer)"


def shapes_lines(report: Report) -> list[str]:
    """Where the decisions were taken: the shape sets, the dims that were defaulted and the line that binds them."""
    sp = report.shapes
    if sp is None:
        return []
    what = "replayed" if report.replayed else ("decided and costed" if report.measured else "costed")
    lines = [
        f"{what} at {' and '.join(sp.labels()) or 'no inputs'}"
        + (" (cost figures for the first)" if len(sp.sets) > 1 else "")
    ]
    if sp.defaulted:
        lines.append(
            "defaulted dims: "
            + "; ".join(d.describe() for d in sp.defaulted)
            + f"; to decide at the shapes you run: {sp.hint()}"
        )
    if sp.fallback:
        lines.append(sp.fallback)
    if report.replayed:
        lines.append(f"replayed plan {report.replayed}")
    return lines


def _cost_lines(report: Report) -> list[str]:
    """Traffic, FLOPs and the prediction, before → after (none without a cost analysis)."""
    hw, before, after = report.hardware, report.before, report.after
    if before is None or after is None or hw is None:
        return []
    lines = []
    saved = before.bytes - after.bytes
    pct = 100 * saved / before.bytes if before.bytes else 0.0
    lines.append(
        f"memory traffic {_change(before.bytes, after.bytes, 1e6, 'MB')}, "
        f"{f'{pct:.1f}% saved' if pct >= 0 else f'{-pct:.1f}% more'}"
    )
    lines.append(
        f"FLOPs {_flops(before.flops, after.flops)}"
        + (f", int ops {_flops(before.int_ops, after.int_ops)}" if before.int_ops or after.int_ops else "")
        + f"; peak activations {_change(before.peak_activation_bytes, after.peak_activation_bytes, 1e6, 'MB')}"
    )
    lines.append(f"predicted on {hw.name}: {_change(before.predicted_s, after.predicted_s, 1e-3, 'ms')}")
    lines.append(
        f"profile {hw.name}: {human(hw.peak('fp32'), 'FLOP/s')}, {human(hw.bandwidth, 'B/s')}, "
        f"ridge {hw.ridge():.1f} FLOP/B ({profile_words(hw)})"
    )
    if hw.kind != "measured" and report.latency:
        lines.append(
            f"note: the prediction is for {hw.name} ({hw.kind} "
            "figures), the measurements are of this machine's CPU; "
            "compare their directions, not their values"
        )
    blocks = layer_line(after)
    if blocks:
        lines.append(blocks)
    if after.unknown:
        lines.append(
            f"{len(after.unknown)} operators could not be costed: "
            + "; ".join(after.unknown[:3])
            + (" ..." if len(after.unknown) > 3 else "")
        )
    return lines


def summary_lines(report: Report) -> list[str]:
    lines = []
    hw, after = report.hardware, report.after
    lines.append(
        f"nodes {report.nodes_before} → {report.nodes_after}, parameters "
        f"{report.params_before:,} → {report.params_after:,}; "
        f"{report.verification}"
    )
    lines += shapes_lines(report)
    lines += _cost_lines(report)
    for level, lat in report.latency.items():
        deploy = " (deploy level)" if level == report.deploy_level else ""
        lines.append(f"measured {lat.level_name}{deploy}, {lat.threads} threads, {lat.rounds} rounds: {_lat(lat)}")
    opset = opset_line(report)
    if opset:
        lines.append(opset)
    if report.backed_off:
        what = (
            "the original graph is written unchanged" if report.reverted else "dropped " + ", ".join(report.backed_off)
        )
        lines.append(f"backed off (the optimized model measured slower than the original): {what}")
    if report.disagreement:
        lines.append(f"prediction and measurement disagree: {report.disagreement}")
    rho, n = correlation(after)
    if rho is not None:
        other = (
            ""
            if hw is None or hw.kind == "measured"
            else f" (predicted for {hw.name}, measured on this CPU: a ranking across two machines)"
        )
        lines.append(
            f"predicted vs measured per-operator time: Spearman rank correlation {rho:.2f} over {n} operators{other}"
        )
    return lines


def top_rows(report: Report, k: int = 8) -> list[list[str]]:
    after = report.after
    if after is None:
        return []
    rows = []
    for r in after.top_memory_bound(k):
        rows.append(
            [
                r.name,
                r.op_type,
                f"{r.intensity:.2f}" if r.intensity not in (None, float("inf")) else "-",
                _mb(r.bytes_read + r.bytes_written),
                _ms(r.predicted_s or 0.0),
                "-" if r.measured_s is None else _ms(r.measured_s),
            ]
            + ([module_of(report, r.name)] if report.sources else [])
        )
    return rows


def top_headers(report: Report) -> list[str]:
    return TOP_HEADERS + (["module (class, source)"] if report.sources else [])


def module_of(report: Report, name: str) -> str:
    """The node's place in the author's code (``features.3.conv.1 (BatchNorm2d, mobilenetv2.py:174)``), or -."""
    s = report.sources.get(name)
    return s.describe() if s is not None else "-"


TOP_HEADERS = ["operator", "op", "FLOP/B", "traffic", "predicted", "measured"]


def projected_line(report: Report) -> str:
    """``--check``: what the passes would save, as one line."""
    before, after, hw = report.before, report.after, report.hardware
    if before is None or after is None or hw is None or not before.bytes:
        return ""
    saved = before.bytes - after.bytes
    verb = "saved" if saved >= 0 else "added"
    change = (
        f"{_mb(abs(saved))} {verb}, {100 * abs(saved) / before.bytes:.1f}%"
        if len(before.unknown) == len(after.unknown)
        else _traffic_change(before, after)
    )
    return (
        f"projected: memory traffic {_mb(before.bytes)} → {_mb(after.bytes)} ({change}), predicted time "
        f"{_ms(before.predicted_s)} → {_ms(after.predicted_s)} on {hw.name}"
    )


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
    return [
        r for r in report.passes if r.status in (Status.ROLLED_BACK, Status.REJECTED) or r.cause is Cause.BACKED_OFF
    ]


def narrow_rows(report: Report, collapsed: bool = True) -> list[list[str]]:
    """The pass table for narrow terminals: no FLOPs, predicted time or seconds (the summary and the
    JSON carry them), the measured ratio without the milliseconds."""
    rows = []
    for full, r in zip(pass_rows(report, collapsed=False), _listed(report)):
        lat = r.latency if _shown(r) else None
        measured = (
            "" if lat is None else f"{lat.describe()}{'' if lat.verdict is Verdict.FASTER else ' ' + lat.verdict.value}"
        )
        rows.append([full[0], full[1], full[2], full[3], full[5], measured, full[8]])
    rest = unchanged_line(report) if collapsed else ""
    if rest:
        rows.append([rest, "unchanged", "0", "", "", "", ""])
    return rows


def progress_line(r: PassRecord) -> str:
    """One line per pass as it ends: what it did, the traffic it moved, the measured verdict."""
    it = f" #{r.iteration}" if r.iteration > 1 else ""
    if r.status in (Status.ROLLED_BACK, Status.REJECTED):
        return f"[yellow]pass {r.name} {r.status.value}:[/] {r.reason}"
    if r.status is not Status.APPLIED:
        return ""
    parts = [f"{r.rewrites} rewrite{'s' if r.rewrites != 1 else ''}"]
    if r.nodes_before != r.nodes_after:
        parts.append(f"nodes {r.nodes_before}→{r.nodes_after}")
    if r.cost is not None and r.cost.before.bytes != r.cost.after.bytes:
        parts.append(f"traffic {_mb(r.cost.before.bytes)}→{_mb(r.cost.after.bytes)}")
    if r.latency is not None:
        parts.append(f"measured {r.latency.describe()} {r.latency.verdict.value}")
    elif r.removes_only:
        parts.append("timed with the final model")
    return f"  {r.name}{it}: " + ", ".join(parts)


def would_change(report: Report) -> bool:
    return any(r.status is Status.APPLIED and r.rewrites for r in report.passes)


def check_lines(report: Report) -> list[str]:
    """``--check``: which passes would change the model and what that would save."""
    changed = [
        f"{r.name} ({r.rewrites} rewrite{'s' if r.rewrites != 1 else ''})"
        for r in report.passes
        if r.status is Status.APPLIED and r.rewrites
    ]
    if not changed:
        return ["nothing to change"]
    line = projected_line(report)
    return ["would change: " + ", ".join(changed)] + ([line] if line else [])


def _traffic_change(before, after) -> str:
    """How the traffic changed, in percent, or why the two totals do not compare: nodes of unknown
    cost (a loop body, a custom op) are left out of a total, and a pass can make them known."""
    nb, na = len(before.unknown), len(after.unknown)
    if nb != na:
        return f"not comparable: {nb} node{'s' if nb != 1 else ''} of unknown cost before, {na} after"
    saved = before.bytes - after.bytes
    change = f"{100 * abs(saved) / before.bytes:.1f}% {'less' if saved > 0 else 'more'}" if saved else "unchanged"
    return change + (f"; {nb} node{'s' if nb != 1 else ''} of unknown cost not counted" if nb else "")


def outcome_line(report: Report, output: str | None) -> str:
    """The one summary line of a run without ``--report``: what was written, bytes saved, measured ratio."""
    if not output:
        return "no -o given: the optimized model was not written"
    parts = [f"nodes {report.nodes_before} → {report.nodes_after}"]
    before, after = report.before, report.after
    if before is not None and after is not None and before.bytes:
        parts.append(f"memory traffic {_mb(before.bytes)} → {_mb(after.bytes)} ({_traffic_change(before, after)})")
    lat = report.latency.get(report.deploy_level)
    if lat is not None:
        parts.append(f"measured at {lat.level_name}: {lat.describe()} ({lat.verdict.value})")
    return f"wrote {', '.join(report.output_paths)}: " + "; ".join(parts)
