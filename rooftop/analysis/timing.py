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

    return make_session(model, optimization=level, threads=threads or physical_cores(), spinning=False)


def _runner(sess, feeds: Mapping[str, np.ndarray], repeat: int = 1) -> Callable[[], float]:
    """A callable that runs the session ``repeat`` times and returns the mean seconds per run."""
    names = [o.name for o in sess.get_outputs()]
    feeds = dict(feeds)

    def once() -> float:
        t0 = time.perf_counter()
        for _ in range(repeat):
            sess.run(names, feeds)
        return (time.perf_counter() - t0) / repeat

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
    min_round_s: float = 0.01,
) -> Comparison:
    """Time ``a`` and ``b`` interleaved on the same inputs until ``budget_s`` is spent."""
    threads = threads or physical_cores()
    sa, sb = session(a, level, threads), session(b, level, threads)
    ra, rb = _runner(sa, feeds), _runner(sb, feeds)
    for _ in range(warmup):
        ra()
        rb()
    # a round of sub-millisecond models is several runs long, so one scheduler hiccup
    # does not decide a round's ratio
    single = max(min(ra(), rb()), 1e-6)
    repeat = max(1, min(1000, int(round(min_round_s / single))))
    if repeat > 1:
        ra, rb = _runner(sa, feeds, repeat), _runner(sb, feeds, repeat)
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


def profile_nodes(
    model: ModelProto, feeds: Mapping[str, np.ndarray], *, level: str = "disable", threads: int = 0, runs: int = 10
) -> dict[str, float]:
    """Median time per run of every node, from onnxruntime's profiler (node name -> seconds).

    Nodes without a name are named after their first output (as the roofline rows are), so
    measured and predicted rows join by name. At ``disable`` no node is fused or renamed.
    """
    import json
    import tempfile

    from rooftop.verify import make_session

    m = ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        if not n.name:
            n.name = n.output[0] if n.output else n.op_type
    with tempfile.TemporaryDirectory(prefix="rooftop-prof-") as d:
        sess = make_session(m, optimization=level, threads=threads or physical_cores(), profile_prefix=os.path.join(d, "p"))
        names = [o.name for o in sess.get_outputs()]
        for _ in range(2):
            sess.run(names, dict(feeds))  # warm-up (profiled too; dropped below)
        for _ in range(runs):
            sess.run(names, dict(feeds))
        path = sess.end_profiling()
        with open(path) as f:
            events = json.load(f)
    per: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        per.setdefault(e["name"][: -len("_kernel_time")], []).append(float(e.get("dur", 0)) * 1e-6)
    return {k: float(np.median(v[2:] if len(v) > 2 else v)) for k, v in per.items()}


def join_measured(rows, times: Mapping[str, float]) -> int:
    """Put measured seconds on roofline rows by node name; returns how many rows matched."""
    n = 0
    for r in rows:
        t = times.get(r.name)
        if t is not None:
            r.measured_s = t
            n += 1
    return n


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Rank correlation of predicted and measured per-op times (None with fewer than 3 pairs)."""
    if len(a) < 3:
        return None

    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        # average ties
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.bincount(inv, weights=r)
        return sums[inv] / counts[inv]

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])
