"""The decision record of a run (its plan), and its replay.

A run decides, pass by pass, what to keep: by verification, by measurement on this machine at the
deploy level, and by the stable rule when the measurement cannot tell. The plan records those
decisions with what they rested on: the passes in order with the options they ran with, each
pass's decision and its measurement or rule, the target, the deploy level, the threads, the
runtime and library versions, and the input shapes it was decided at.

Replaying a plan (``--plan FILE``, a saved plan or a report that carries one) runs exactly the
passes that were kept, at the positions they had, with the same options, and nothing else: no
timing, verification still on. Passes are deterministic functions of their input and options, so
with the same library versions the output is byte-identical to the run that made the plan. This
is how a team decides once on the machine it deploys to and ships the same model from CI.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rooftop.errors import InputError, UsageError
from rooftop.records import Cause, PassRecord, Status

PLAN_VERSION = 1
LIBRARIES = ("rooftop", "onnx", "onnxruntime", "onnxsim", "onnx_graphsurgeon", "numpy")


@dataclass
class Step:
    """One position of the pipeline: the pass, and what became of it."""

    name: str
    position: int
    iteration: int
    decision: str  # a Status word: applied | unchanged | rolled back | rejected | skipped
    rule: str  # what the decision rested on, in one phrase
    rewrites: int = 0
    latency: dict[str, Any] | None = None  # ratio, ci, level, shapes: the measurement that decided, if any

    @property
    def kept(self) -> bool:
        return self.decision == Status.APPLIED.value


@dataclass
class Plan:
    pipeline: list[str]
    steps: list[Step]
    options: dict[str, Any]  # target, fold_limit, channel_multiple, fixed_point, opset (what the passes ran with)
    decided: dict[str, Any]  # how decisions were taken: deploy level, threads, noise band, runtime, measured
    shapes: dict[str, Any] | None  # ShapePlan.as_dict() of the run
    versions: dict[str, str]
    model: dict[str, Any] = field(default_factory=dict)  # the input's name and sha256
    version: int = PLAN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: str | os.PathLike[str]) -> None:
        """``{"plan": ...}`` as JSON, written atomically (``--plan`` reads it back)."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps({"plan": self.as_dict()}, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, p)

    @property
    def iterations(self) -> int:
        return max((s.iteration for s in self.steps), default=1)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib.replace("_", "-"))
        except PackageNotFoundError:
            out[lib] = "not installed"
    return out


def rule(rec: PassRecord, measured: bool) -> str:
    """What a pass's decision rested on, in one phrase."""
    if rec.status is Status.UNCHANGED:
        return "found nothing to rewrite"
    if rec.status is not Status.APPLIED:
        return rec.reason or rec.status.value
    if rec.removes_only:
        return "removes work: kept (timed with the final model)"
    if rec.latency is not None:
        v = rec.latency.verdict.value
        if v == "faster":
            return f"measured faster (confirmed): {rec.latency.describe()}"
        return f"within the noise ({rec.latency.describe()}); kept: no more nodes or predicted work"
    return "verified; kept without measurement" if not measured else "verified; kept (not timed)"


def step(rec: PassRecord, measured: bool) -> Step:
    lat = None
    if rec.latency is not None:
        lat = {
            "ratio": round(rec.latency.ratio, 4),
            "ci": [round(x, 4) for x in rec.latency.ci],
            "level": rec.latency.level_name,
            "shapes": rec.latency.shapes,
            "verdict": rec.latency.verdict.value,
        }
    return Step(rec.name, rec.position, rec.iteration, rec.status.value, rule(rec, measured), rec.rewrites, lat)


def load(path: str | os.PathLike[str]) -> Plan:
    """A plan from a file written by ``--save-plan`` or from a JSON report that carries one."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError as e:
        raise InputError(f"{p}: no such plan file") from e
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not a readable JSON plan ({e})") from e
    raw = data.get("plan") if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise InputError(f"{p}: no plan in it (write one with --save-plan, or give a --report .json of a run)")
    try:
        steps = [Step(**s) for s in raw["steps"]]
        plan = Plan(
            pipeline=list(raw["pipeline"]),
            steps=steps,
            options=dict(raw["options"]),
            decided=dict(raw.get("decided") or {}),
            shapes=raw.get("shapes"),
            versions=dict(raw.get("versions") or {}),
            model=dict(raw.get("model") or {}),
            version=int(raw.get("version", PLAN_VERSION)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{p}: not a valid plan ({type(e).__name__}: {e})") from e
    if plan.version > PLAN_VERSION:
        raise InputError(f"{p}: plan version {plan.version} is newer than this rooftop reads ({PLAN_VERSION})")
    return plan


def check(plan: Plan, registry: dict, source: str) -> list[str]:
    """Errors for what cannot be replayed (a pass that no longer exists); warnings for what may
    make the output differ (other library versions)."""
    missing = sorted(
        {s.name for s in plan.steps if s.name not in registry} | {n for n in plan.pipeline if n not in registry}
    )
    if missing:
        raise UsageError(
            f"plan {source}: pass(es) {', '.join(missing)} no longer exist in this rooftop; "
            f"make the plan again (available: {', '.join(registry)})"
        )
    now = versions()
    moved = [
        f"{lib} {plan.versions[lib]} → {now.get(lib)}"
        for lib in LIBRARIES
        if lib in plan.versions and plan.versions[lib] != now.get(lib)
    ]
    if moved:
        return [
            f"plan {source} was made with other library versions ({', '.join(moved)}): the output may differ "
            "from the run that made it"
        ]
    return []


def skips(plan: Plan) -> dict[int, tuple[Status, Cause | None, str]]:
    """The positions a replay does not run: every one whose pass was not kept."""
    return {
        s.position: (Status.SKIPPED, None, f"not replayed: {s.decision} when the plan was made ({s.rule})")
        for s in plan.steps
        if not s.kept
    }


__all__ = ["PLAN_VERSION", "Plan", "Step", "check", "load", "rule", "skips", "step", "versions"]
