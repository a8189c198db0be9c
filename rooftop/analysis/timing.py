"""onnxruntime latency: fixed threads, warm-up, repeated runs to a time budget, interleaved comparison.

Two models are compared in rounds; in each round both run once, in alternating
order (A B, then B A, ...), so drift of the machine (frequency, other load)
falls on both. The per-round ratio B/A is the statistic: its median is the
speed-up, with a 95% confidence interval from order statistics. A comparison is
slower (or faster) only when its median leaves the noise band (``NOISE_BAND``,
3%) and its confidence interval excludes 1.0; anything else is noise, not a win.
Rounds stop early once more of them cannot change the outcome.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto

from rooftop.records import NOISE_BAND, ORT_LEVEL_NAMES, Latency, OpGrowth, verdict
from rooftop.runtime import make_session, named_for_profiler, output_shapes, physical_cores, profile_runs

LEVELS = tuple(ORT_LEVEL_NAMES)


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
    band: float = NOISE_BAND

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
    def ci(self) -> tuple[float, float]:
        return median_ci(self.ratios)

    @property
    def verdict(self) -> str:
        return verdict(self.ratio, self.ci, self.band).value

    def latency(self) -> Latency:
        return Latency(
            level=self.level,
            threads=self.threads,
            rounds=len(self.ratios),
            ms_before=self.a.median_ms,
            ms_after=self.b.median_ms,
            ratio=self.ratio,
            ci=self.ci,
            iqr=(self.ratio_q1, self.ratio_q3),
            band=self.band,
        )

    def describe(self) -> str:
        lo, hi = self.ci
        return (
            f"{self.b.label} / {self.a.label} = {self.ratio:.3f} (95% CI of the median {lo:.3f}-{hi:.3f}, "
            f"{len(self.ratios)} interleaved rounds, {ORT_LEVEL_NAMES[self.level]}, "
            f"{self.threads} threads): {self.verdict}"
        )


def median_ci(ratios: Sequence[float]) -> tuple[float, float]:
    """95% confidence interval of the median from order statistics (distribution-free):
    ranks (n - 1.96 sqrt n) / 2 and (n + 1.96 sqrt n) / 2 of the sorted rounds."""
    x = np.sort(np.asarray(ratios, dtype=np.float64))
    n = len(x)
    if n == 0:
        return float("nan"), float("nan")
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)) - 1)
    hi = min(n - 1, int(math.ceil(n / 2 + half)) - 1)
    return float(x[lo]), float(x[hi])


def decided(ratios: Sequence[float], band: float, stop: str) -> bool:
    """Whether more rounds can still change what the comparison is used for.

    ``gate``: the keep/reject decision, settled once the CI lies wholly above 1 + band (slower)
    or wholly below it (cannot be slower). ``pay``: the decision on a pass that adds work, settled
    once the CI lies wholly on one side of ``pays(band)`` (it must be faster than that). ``verdict``:
    settled once the CI lies beyond the band on either side or wholly inside it. ``budget``: never
    (spend the whole budget).
    """
    if stop == "budget":
        return False
    lo, hi = median_ci(ratios)
    if stop == "gate":
        return lo > 1.0 + band or hi < 1.0 + band
    if stop == "pay":
        return lo > pays(band) or hi < pays(band)
    return lo > 1.0 + band or hi < 1.0 - band or (lo > 1.0 - band and hi < 1.0 + band)


EXTEND = 3.0  # a comparison leaning slower when its budget is spent may run this many budgets in all


def pays(band: float) -> float:
    """The ratio a pass that adds work must measure below to be kept: twice the band under 1.0."""
    return 1.0 - 2 * band


def straddles(ratios: Sequence[float], threshold: float) -> bool:
    """The CI still reaches both sides of ``threshold``: more rounds may settle which side it is."""
    if len(ratios) < 2:
        return False
    lo, hi = median_ci(ratios)
    return lo <= threshold <= hi


def leaning_slower(ratios: Sequence[float], band: float) -> bool:
    """The median is beyond the band on the slow side but the CI still reaches 1.0: a few percent
    slower that the budget's rounds could not yet tell from noise (ddddocr's common_det, with
    pad-channels: ×1.04 [0.98–1.05] in 1 s, then ×1.04–1.06 "slower" in three runs of 8 s)."""
    if len(ratios) < 2:
        return False
    lo, _ = median_ci(ratios)
    return float(np.median(ratios)) > 1.0 + band and lo <= 1.0


def session(model: ModelProto, level: str = "disable", threads: int = 0):
    return make_session(model, optimization=level, threads=threads or physical_cores(), spinning=False)


def _runner(sess, feeds: Mapping[str, np.ndarray], repeat: int = 1) -> Callable[[], float]:
    """A callable that runs the session ``repeat`` times and returns the mean seconds per run
    (a runtime's session gives its own; an onnxruntime InferenceSession is run here)."""
    if hasattr(sess, "runner"):
        return sess.runner(feeds, repeat)
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
    **kwargs,
) -> Comparison:
    """Time ``a`` and ``b`` interleaved on the same inputs (see ``compare_sessions``)."""
    threads = threads or physical_cores()
    return compare_sessions(
        session(a, level, threads), session(b, level, threads), feeds, level=level, threads=threads, **kwargs
    )


def compare_sessions(
    sa,
    sb,
    feeds: Mapping[str, np.ndarray],
    *,
    level: str,
    threads: int,
    budget_s: float = 2.0,
    warmup: int = 3,
    min_rounds: int = 10,
    max_rounds: int = 10_000,
    labels: tuple[str, str] = ("before", "after"),
    progress: Callable[[float], None] | None = None,
    min_round_s: float = 0.01,
    band: float = NOISE_BAND,
    stop: str = "budget",
) -> Comparison:
    """Time two sessions interleaved until ``budget_s`` is spent, or earlier once ``stop``
    (``gate``, ``verdict``) says more rounds cannot change the outcome; a decision still
    ``leaning_slower`` when the budget is spent goes on, up to EXTEND budgets."""
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

    def more() -> bool:
        spent = time.perf_counter() - start
        if spent < budget_s:
            return True
        if stop == "budget" or spent >= EXTEND * budget_s:
            return False
        # a decision still open when the budget is spent goes on: leaning slower, or (a pass that
        # adds work) not yet on one side of what it must pay
        return leaning_slower(ratios, band) or (stop == "pay" and straddles(ratios, pays(band)))

    while i < max_rounds and (i < min_rounds or more()):
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
        if i >= min_rounds and i % 2 == 0 and decided(ratios, band, stop):
            break
    return Comparison(ta, tb, ratios, level, threads, band)


def compare_in_turn(
    build_a: Callable[[], object],
    build_b: Callable[[], object],
    feeds: Mapping[str, np.ndarray],
    *,
    level: str,
    threads: int,
    budget_s: float = 2.0,
    band: float = NOISE_BAND,
    labels: tuple[str, str] = ("before", "after"),
) -> Comparison:
    """For models whose weights must not sit in memory twice: one session alive at a time, in
    blocks A B B A (drift in time falls on both), each block a fresh session, warmed up, then run
    for a quarter of ``budget_s`` (at least three runs). Run ``j`` of a B block is set against
    run ``j`` of the A block beside it; the ratios carry session-to-session variation as well,
    so the interval is wider than an interleaved comparison's."""
    from rooftop.model_io import release_memory

    blocks: dict[str, list[list[float]]] = {"a": [], "b": []}
    for which in ("a", "b", "b", "a"):
        sess = (build_a if which == "a" else build_b)()
        run = _runner(sess, feeds)
        run()
        run()
        block: list[float] = []
        start = time.perf_counter()
        while len(block) < 3 or (time.perf_counter() - start < budget_s / 4 and len(block) < 1000):
            block.append(run())
        blocks[which].append(block)
        del sess, run
        release_memory()
    ta, tb, ratios = Timing(labels[0]), Timing(labels[1]), []
    for xa, xb in zip(blocks["a"], blocks["b"]):
        ta.times_s += xa
        tb.times_s += xb
        ratios += [y / x for x, y in zip(xa, xb)]
    return Comparison(ta, tb, ratios, level, threads, band)


def _profile_events(
    model: ModelProto,
    feeds: Mapping[str, np.ndarray],
    level: str,
    threads: int,
    runs: int,
    warmup: int = 2,
    prepack: bool = True,
) -> list[list[dict]]:
    """onnxruntime profiler node events, one list per run after ``warmup`` warm-up runs."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rooftop-prof-") as d:
        with named_for_profiler(model):
            sess = make_session(
                model,
                optimization=level,
                threads=threads or physical_cores(),
                profile_prefix=os.path.join(d, "p"),
                prepack=prepack,
            )
        names = [o.name for o in sess.get_outputs()]
        for _ in range(warmup + runs):
            sess.run(names, dict(feeds))
        per_run = profile_runs(sess.end_profiling())
    return per_run[warmup:] if len(per_run) > warmup else per_run


def profile_shapes(
    model: ModelProto, feeds: Mapping[str, np.ndarray], threads: int = 0
) -> dict[str, list[tuple[str, list[int]]]]:
    """The (element type, shape) of every node's outputs in one ORT_DISABLE_ALL run, from the
    profiler's events (node name -> one per output): shapes without holding every intermediate
    tensor at once. Nodes without a name are named after their first output."""
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for run in _profile_events(model, feeds, "disable", threads, runs=1, warmup=0, prepack=False):
        out.update(output_shapes(run))
    return out


def profile_nodes(
    model: ModelProto, feeds: Mapping[str, np.ndarray], *, level: str = "disable", threads: int = 0, runs: int = 10
) -> dict[str, float]:
    """Median time per run of every node, from onnxruntime's profiler (node name -> seconds).

    Nodes without a name are named after their first output (as the roofline rows are), so
    measured and predicted rows join by name. At ``disable`` no node is fused or renamed.
    """
    per: dict[str, list[float]] = {}
    for run in _profile_events(model, feeds, level, threads, runs):
        for e in run:
            per.setdefault(e["name"][: -len("_kernel_time")], []).append(float(e.get("dur", 0)) * 1e-6)
    return {k: float(np.median(v)) for k, v in per.items()}


def profile_op_types(
    model: ModelProto, feeds: Mapping[str, np.ndarray], *, level: str = "disable", threads: int = 0, runs: int = 5
) -> dict[str, float]:
    """Median seconds per run spent in each operator type (as the kernels onnxruntime runs at
    ``level`` name themselves: fused and layout-changed kernels appear under their own names)."""
    totals: dict[str, list[float]] = {}
    event_runs = _profile_events(model, feeds, level, threads, runs)
    for i, run in enumerate(event_runs):
        for e in run:
            op = str((e.get("args") or {}).get("op_name") or "?")
            col = totals.setdefault(op, [0.0] * len(event_runs))
            col[i] += float(e.get("dur", 0)) * 1e-6
    return {k: float(np.median(v)) for k, v in totals.items()}


def op_growth(
    before: Mapping[str, float], after: Mapping[str, float], k: int = 3, *, shrank: bool = False
) -> list[OpGrowth]:
    """The ``k`` operator types whose measured time grew most from ``before`` to ``after``
    (``shrank``: fell most)."""
    rows = [OpGrowth(op, before.get(op, 0.0) * 1e3, after.get(op, 0.0) * 1e3) for op in set(before) | set(after)]
    rows.sort(key=lambda r: r.grew_ms, reverse=not shrank)
    return [r for r in rows[:k] if (r.grew_ms < 0 if shrank else r.grew_ms > 0)]


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
