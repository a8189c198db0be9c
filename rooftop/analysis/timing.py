"""onnxruntime latency: fixed threads, warm-up, repeated runs to a time budget, interleaved comparison.

Two models are compared in rounds; in each round both run once, in alternating
order (A B, then B A, ...), so drift of the machine (frequency, other load)
falls on both. The per-round ratio B/A is the statistic: its median is the
speed-up and its interquartile range the spread. A ratio whose interquartile
range contains 1.0 is noise, not a win.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto

LEVELS = ("disable", "basic", "extended", "all")
ORT_LEVEL_NAMES = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def physical_cores() -> int:
    """Physical cores (onnxruntime's own default), falling back to the logical count."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


@dataclass
class Timing:
    label: str
    times_s: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times_s)) * 1e3 if self.times_s else float("nan")

    @property
    def spread_ms(self) -> float:
        """Interquartile range of the run times, in ms."""
        if len(self.times_s) < 2:
            return float("nan")
        q1, q3 = np.percentile(self.times_s, [25, 75])
        return float(q3 - q1) * 1e3


@dataclass
class Comparison:
    """B relative to A: ratio < 1 means B is faster."""

    a: Timing
    b: Timing
    ratios: list[float]
    level: str
    threads: int

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    @property
    def ratio_q1(self) -> float:
        return float(np.percentile(self.ratios, 25))

    @property
    def ratio_q3(self) -> float:
        return float(np.percentile(self.ratios, 75))

    @property
    def verdict(self) -> str:
        if self.ratio_q3 < 1.0:
            return "faster"
        if self.ratio_q1 > 1.0:
            return "slower"
        return "noise"

    def describe(self) -> str:
        return (
            f"{self.b.label} / {self.a.label} = {self.ratio:.3f} (IQR {self.ratio_q1:.3f}-{self.ratio_q3:.3f}, "
            f"{len(self.ratios)} interleaved rounds, {ORT_LEVEL_NAMES[self.level]}, {self.threads} threads): {self.verdict}"
        )

    def as_dict(self) -> dict:
        return {
            "level": ORT_LEVEL_NAMES[self.level],
            "threads": self.threads,
            "rounds": len(self.ratios),
            "latency_ms_before": round(self.a.median_ms, 4),
            "latency_ms_after": round(self.b.median_ms, 4),
            "latency_spread_ms_before": round(self.a.spread_ms, 4),
            "latency_spread_ms_after": round(self.b.spread_ms, 4),
            "ratio": round(self.ratio, 4),
            "ratio_q1": round(self.ratio_q1, 4),
            "ratio_q3": round(self.ratio_q3, 4),
            "verdict": self.verdict,
        }


def session(model: ModelProto, level: str = "disable", threads: int = 0):
    from rooftop.verify import make_session

    return make_session(model, optimization=level, threads=threads or physical_cores())


def _runner(sess, feeds: Mapping[str, np.ndarray]) -> Callable[[], float]:
    names = [o.name for o in sess.get_outputs()]
    feeds = dict(feeds)

    def once() -> float:
        t0 = time.perf_counter()
        sess.run(names, feeds)
        return time.perf_counter() - t0

    return once


def compare(
    a: ModelProto,
    b: ModelProto,
    feeds: Mapping[str, np.ndarray],
    *,
    level: str = "disable",
    threads: int = 0,
    budget_s: float = 2.0,
    warmup: int = 3,
    min_rounds: int = 10,
    max_rounds: int = 10_000,
    labels: tuple[str, str] = ("before", "after"),
    progress: Callable[[float], None] | None = None,
) -> Comparison:
    """Time ``a`` and ``b`` interleaved on the same inputs until ``budget_s`` is spent."""
    threads = threads or physical_cores()
    sa, sb = session(a, level, threads), session(b, level, threads)
    ra, rb = _runner(sa, feeds), _runner(sb, feeds)
    for _ in range(warmup):
        ra()
        rb()
    ta, tb, ratios = Timing(labels[0]), Timing(labels[1]), []
    start = time.perf_counter()
    i = 0
    while i < max_rounds and (i < min_rounds or time.perf_counter() - start < budget_s):
        if i % 2 == 0:
            x, y = ra(), rb()
        else:
            y, x = rb(), ra()
        ta.times_s.append(x)
        tb.times_s.append(y)
        ratios.append(y / x)
        i += 1
        if progress is not None:
            progress(min(1.0, (time.perf_counter() - start) / budget_s))
    return Comparison(ta, tb, ratios, level, threads)


def measure(model: ModelProto, feeds: Mapping[str, np.ndarray], *, level: str = "disable", threads: int = 0, budget_s: float = 1.0, warmup: int = 3, min_runs: int = 10, label: str = "model") -> Timing:
    """Time one model alone (use ``compare`` to compare two)."""
    threads = threads or physical_cores()
    r = _runner(session(model, level, threads), feeds)
    for _ in range(warmup):
        r()
    t = Timing(label)
    start = time.perf_counter()
    while len(t.times_s) < min_runs or time.perf_counter() - start < budget_s:
        t.times_s.append(r())
    return t


def compare_many(models: Sequence[tuple[str, ModelProto]], feeds, **kw) -> list[Comparison]:
    """Each model against the first, pairwise interleaved."""
    base_label, base = models[0]
    return [compare(base, m, feeds, labels=(base_label, label), **kw) for label, m in models[1:]]
