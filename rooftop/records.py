"""Typed results shared by the pass manager, the pipeline, the analysis and the renderers.

This module sits at the bottom of the import graph (it imports nothing of
rooftop), so passes can carry a cost delta and a latency comparison on their
records without importing the analysis that produced them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

# A comparison is noise unless its median ratio leaves this band around 1.0 (and the 95%
# confidence interval of the median excludes 1.0). Documented in the README ("Measurement decides").
NOISE_BAND = 0.03

ORT_LEVEL_NAMES = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class _Word(str, Enum):
    """An enum whose value is the word reports print."""

    def __str__(self) -> str:
        return self.value


class Status(_Word):
    """What became of a pass. The value is what reports print and the JSON carries."""

    APPLIED = "applied"  # changed the model, verified, not slower: kept
    UNCHANGED = "unchanged"  # found nothing to rewrite
    ROLLED_BACK = "rolled back"  # raised, produced an invalid graph, or changed the outputs
    REJECTED = "rejected"  # computes the same, but measured slower at the deploy level
    SKIPPED = "skipped"  # not run (dropped when the final model backed off)


class Cause(_Word):
    """Why a pass was not kept."""

    RAISED = "raised"
    INVALID = "invalid graph"
    OUTPUTS_CHANGED = "outputs changed"
    SLOWER = "slower"
    BACKED_OFF = "backed off"


class Verdict(_Word):
    FASTER = "faster"
    SLOWER = "slower"
    NOISE = "noise"


@dataclass(frozen=True)
class Costs:
    """Model totals from the roofline: floating-point ops, integer ops, bytes moved, predicted seconds."""

    flops: float
    int_ops: float
    bytes: float
    predicted_s: float
    unknown: int = 0  # nodes whose cost is unknown (not in the totals)


@dataclass(frozen=True)
class CostDelta:
    before: Costs
    after: Costs

    @property
    def bytes_saved(self) -> float:
        return self.before.bytes - self.after.bytes

    @property
    def predicted_ratio(self) -> float | None:
        if not self.before.predicted_s:  # nothing could be costed before
            return None if not self.after.predicted_s else math.inf
        return self.after.predicted_s / self.before.predicted_s


@dataclass(frozen=True)
class Latency:
    """Model B ("after") timed against model A ("before"), interleaved, at one onnxruntime level.

    ``ratio`` is the median of the per-round ratios B/A; ``ci`` its 95% confidence interval
    (order statistics of the rounds), ``iqr`` the interquartile range of the rounds.
    """

    level: str  # disable | basic | extended | all
    threads: int
    rounds: int
    ms_before: float
    ms_after: float
    ratio: float
    ci: tuple[float, float]
    iqr: tuple[float, float]
    band: float = NOISE_BAND
    shapes: str = ""  # the shape set this was measured at, when decisions are taken at several
    where: str = ""  # the runtime, when not onnxruntime (whose levels name themselves)

    @property
    def level_name(self) -> str:
        return self.where or ORT_LEVEL_NAMES[self.level]

    @property
    def verdict(self) -> Verdict:
        return verdict(self.ratio, self.ci, self.band)

    def describe(self) -> str:
        """``×2.96 [2.83–3.02]``: median per-round ratio and the 95% CI of that median."""
        at = f" at {self.shapes}" if self.shapes else ""
        return f"×{self.ratio:.2f} [{self.ci[0]:.2f}–{self.ci[1]:.2f}]{at}"


def verdict(ratio: float, ci: tuple[float, float], band: float = NOISE_BAND) -> Verdict:
    """Slower: the median ratio is above 1 + band and its 95% CI lies above 1.0. Faster: the
    mirror image. Anything else is noise."""
    lo, hi = ci
    if math.isnan(ratio):
        return Verdict.NOISE
    if ratio > 1.0 + band and lo > 1.0:
        return Verdict.SLOWER
    if ratio < 1.0 - band and hi < 1.0:
        return Verdict.FASTER
    return Verdict.NOISE


@dataclass(frozen=True)
class OpGrowth:
    """An operator type whose measured time changed between two models (from the profiler)."""

    op_type: str
    ms_before: float
    ms_after: float

    @property
    def grew_ms(self) -> float:
        return self.ms_after - self.ms_before

    def describe(self) -> str:
        return f"{self.op_type} {self.ms_before:.3g}→{self.ms_after:.3g} ms"


@dataclass
class PassRecord:
    name: str
    iteration: int = 1
    status: Status = Status.UNCHANGED
    cause: Cause | None = None  # why a rolled back / rejected / skipped pass was not kept
    rewrites: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    verified: bool = False
    max_abs_error: float | None = None  # None when verified: checked with the pipeline's output, not alone
    cost: CostDelta | None = None  # the model's totals before and after this pass (equal if not kept)
    latency: Latency | None = None  # this pass's output timed against its input at the deploy level
    removes_only: bool = (
        False  # not timed alone (fewer nodes, no new op type, no more predicted work): timed with the final model
    )
    position: int = 0  # index of this run in the pipeline (with --fixed-point, across rounds)
    counts: dict[str, int] = field(default_factory=dict)  # rewrites by kind
    refusals: dict[str, list[str]] = field(default_factory=dict)  # reason -> names of the nodes left

    @property
    def kept(self) -> bool:
        return self.status is Status.APPLIED


__all__ = [
    "NOISE_BAND",
    "ORT_LEVEL_NAMES",
    "Cause",
    "CostDelta",
    "Costs",
    "Latency",
    "OpGrowth",
    "PassRecord",
    "Status",
    "Verdict",
    "verdict",
]
