"""The JSON report: a stable schema (documented in the README; fields are only ever added)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from rooftop.model_io import file_sha256
from rooftop.records import ORT_LEVEL_NAMES, CostDelta, Latency, PassRecord
from rooftop.report.text import correlation

if TYPE_CHECKING:
    from rooftop.pipeline import Report


SCHEMA_VERSION = 2  # 2: verdict, provenance, shapes, plan, runtime


def _provenance(report: Report) -> dict[str, Any]:
    """Which tool and libraries made the output, when, from which input, and its hash."""
    from rooftop.plan import versions

    return {
        "versions": versions(),
        "runtime": report.runtime,
        "timestamp": report.timestamp,
        "input_sha256": (report.plan.model.get("sha256") if report.plan is not None else None)
        or file_sha256(report.model_path),
        "output_sha256": {p: file_sha256(p) for p in report.output_paths},
        "shapes": report.shapes.labels() if report.shapes is not None else [],
    }


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
        "by_layer": [_clean(dataclasses.asdict(g)) for g in rl.by_layer()],
        "nodes": [_clean(r.as_dict()) for r in rl.rows],
    }


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


_PASS_LATENCY_KEYS = (
    "latency_ms_before",
    "latency_ms_after",
    "latency_spread",
    "latency_ci",
    "latency_ratio",
    "latency_verdict",
    "ort_level",
)


def _cost_dict(cost: CostDelta | None) -> dict[str, Any]:
    if cost is None:
        return {
            k: None
            for k in (
                "flops_before",
                "flops_after",
                "int_ops_before",
                "int_ops_after",
                "bytes_before",
                "bytes_after",
                "predicted_s_before",
                "predicted_s_after",
            )
        }
    b, a = cost.before, cost.after
    return {
        "flops_before": b.flops,
        "flops_after": a.flops,
        "int_ops_before": b.int_ops,
        "int_ops_after": a.int_ops,
        "bytes_before": b.bytes,
        "bytes_after": a.bytes,
        "predicted_s_before": b.predicted_s,
        "predicted_s_after": a.predicted_s,
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
        "verified_with_final": r.verified and r.max_abs_error is None,  # checked with the pipeline's output, not alone
        "timed_with_final": r.removes_only,  # removes work only: not timed alone, the final comparison times it
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
    from rooftop.report.verdict import outcome

    return {
        "schema_version": SCHEMA_VERSION,
        "verdict": outcome(report).as_dict(),
        "provenance": _provenance(report),
        "model": {"path": report.model_path, "nodes": report.nodes_before, "params": report.params_before},
        "output": {"paths": report.output_paths, "nodes": report.nodes_after, "params": report.params_after},
        "target": report.target,
        "pipeline": report.pipeline,
        "deploy_level": ORT_LEVEL_NAMES[report.deploy_level],
        "runtime": report.runtime,
        "cross_checked": report.cross_checked,
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
            "spearman_before": rho_b,
            "operators_before": n_b,
            "spearman_after": rho_a,
            "operators_after": n_a,
        },
        "shapes": report.shapes.as_dict() if report.shapes is not None else None,
        "plan": report.plan.as_dict() if report.plan is not None else None,
        "replayed": report.replayed,
        "warnings": report.warnings,
        "seconds": round(report.seconds, 3),
    }
