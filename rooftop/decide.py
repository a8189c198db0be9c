"""Measurement decides: the gate after each pass, the final comparison, the back-off, the stable rule.

After a pass that changed the model (and verified), its output is timed against its input at the
deploy level, interleaved, on the runtime decisions are taken on, when it could run slower (a new
op type, more nodes, more predicted work, or ``changes_kernels``); a pass that only removes work
is timed with the final model. *Slower* (confirmed by a second measurement) rejects a pass.
Within the noise, structure decides, so that the same command writes the same bytes run after
run: a pass that only removes work (a fusion included) is kept unless clearly slower (the whole
interval of its ratio above 1 + band, confirmed); one that adds nodes, predicted work or changes
kernels is kept only when measured faster than ``pays(band)``, confirmed.

Then the final model is timed against the original. If it is slower (confirmed; passes each
within the noise can add up), the run backs off: it drops the kept pass that measured worst and
runs the pipeline again, at most ``MAX_BACKOFF`` times; at worst the original graph is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from onnx import ModelProto

from rooftop import model_io, runtime, runtimes
from rooftop import shapes as shapes_mod
from rooftop.analysis.timing import pays
from rooftop.errors import first_line
from rooftop.limits import INTERLEAVE_UP_TO, LARGE_WEIGHT_BYTES, MEMORY_GOAL_FROM, MEMORY_PER_SIZE
from rooftop.options import Comparator, Options
from rooftop.passes import REGISTRY, Validation
from rooftop.records import Cause, Latency, OpGrowth, PassRecord, Status, Verdict
from rooftop.runtimes.base import Runtime, level_word

if TYPE_CHECKING:
    from rooftop.analysis.hardware import HardwareProfile
    from rooftop.analysis.roofline import Roofline
    from rooftop.shapes import ShapePlan
    from rooftop.verify import Verifier

MAX_BACKOFF = 3  # re-runs without the worst pass before the original graph is written unchanged
# timing sessions of models with more weights are built per comparison and dropped after it: a
# session holds its own (prepacked) copy of the weights, so two cached sessions beside a
# verification session would make the run's peak
CACHE_SESSIONS_UP_TO = LARGE_WEIGHT_BYTES


Skip = dict[int, "PassRecord | tuple[Status, Cause | None, str]"]


def in_turn(model: ModelProto) -> bool:
    """Whether timing builds one session at a time. A timing session holds its own copy of the
    weights (with prepacking on, onnxruntime copies them out of the memory-mapped file), so two
    alive hold them twice: always over ``INTERLEAVE_UP_TO``, and from ``MEMORY_GOAL_FROM`` when what
    the process holds now plus two copies would pass the memory goal."""
    w = model_io.weights_nbytes(model)
    if w > INTERLEAVE_UP_TO:
        return True
    return w >= MEMORY_GOAL_FROM and model_io.resident_bytes() + 2 * w > MEMORY_PER_SIZE * w


def _costs_more(v: Validation) -> bool:
    """The roofline predicts more bytes, FLOPs or integer ops after the pass than before."""
    if v.cost is None:
        return False
    before, after = v.cost.before, v.cost.after
    return after.bytes > before.bytes or after.flops > before.flops or after.int_ops > before.int_ops


def _adds_traffic(v: Validation) -> bool:
    """More predicted bytes after the pass, both totals complete: a total missing unknown nodes
    grows when a pass makes them known (simplify folding what could not be costed)."""
    c = v.cost
    return c is not None and c.before.unknown == 0 and c.after.unknown == 0 and c.after.bytes > c.before.bytes


def _adds_ops(v: Validation) -> bool:
    """More predicted operations after the pass (floating point and integer together: a float op
    that becomes its integer form is not more work), both totals complete."""
    c = v.cost
    if c is None or c.before.unknown or c.after.unknown:
        return False
    return c.after.flops + c.after.int_ops > c.before.flops + c.before.int_ops


def _op_types(graph) -> set[tuple[str, str]]:
    """(domain, op type) of every node, subgraphs included."""
    types = set()
    for n in graph.node:
        types.add((n.domain or "", n.op_type))
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                types |= _op_types(g)
    return types


class OrtComparator:
    """Interleaved timing on this machine, on the run's runtime (onnxruntime unless told). Keeps
    the session of the last model it timed as "after", so the next pass's comparison (whose
    "before" it is) does not build it again."""

    def __init__(self, feeds: dict, opts: Options, one_at_a_time: bool = False, rt: Runtime | None = None) -> None:
        self.feeds, self.opts = feeds, opts
        self.rt = rt or runtimes.get("onnxruntime")
        self.one_at_a_time = one_at_a_time  # ``in_turn`` of the original, decided once for the run
        self._cache: list[tuple[ModelProto, str, Any]] = []

    def _session(self, model: ModelProto, level: str):
        for m, lv, s in self._cache:
            if m is model and lv == level:
                return s
        s = self.rt.load(model, level=level, threads=self.opts.threads, timing=True)
        if model_io.weights_nbytes(model) <= CACHE_SESSIONS_UP_TO:  # a session holds its own copy of the weights
            self._cache = (self._cache + [(model, level, s)])[-2:]
        return s

    def __call__(
        self, before: ModelProto, after: ModelProto, level: str, stop: str, feeds: dict | None = None
    ) -> Latency | None:
        from rooftop.analysis import timing

        feeds = self.feeds if feeds is None else feeds
        threads = self.opts.threads or runtime.physical_cores()
        budget = self.opts.time_budget * (2.0 if stop == "verdict" else 1.0)
        if self.one_at_a_time:  # two sessions alive would hold every weight twice
            self.forget()
            c = timing.compare_in_turn(
                lambda: self.rt.load(before, level=level, threads=self.opts.threads, timing=True),
                lambda: self.rt.load(after, level=level, threads=self.opts.threads, timing=True),
                feeds,
                level=level,
                threads=threads,
                budget_s=budget,
                band=self.opts.noise_band,
            )
            return self._named(c.latency())
        # the cache keeps the sessions of the last two models timed: drop the others before building new ones
        self._cache = [c for c in self._cache if c[0] is before or c[0] is after]
        c = timing.compare_sessions(
            self._session(before, level),
            self._session(after, level),
            feeds,
            level=level,
            threads=threads,
            budget_s=budget,
            band=self.opts.noise_band,
            stop=stop,
        )
        if model_io.weights_nbytes(after) > CACHE_SESSIONS_UP_TO:
            model_io.release_memory()  # the sessions just used are gone: give their memory back
        return self._named(c.latency())

    def _named(self, lat: Latency) -> Latency:
        return lat if self.rt.levels else dataclasses.replace(lat, where=self.rt.label)

    def forget(self) -> None:
        self._cache.clear()
        model_io.release_memory()


def timing_feeds(model: ModelProto, verifier: Verifier | None, plan: ShapePlan | None) -> list[tuple[str, dict]]:
    """(label, inputs) of every decision shape set: the verifier's, else generated here; [] when
    onnxruntime cannot run the model."""
    if verifier is not None and verifier.available and verifier.sets:
        return [(s.label, s.feeds) for s in verifier.sets if s.decides]
    if plan is None:
        return []
    try:
        specs, highs = runtime.graph_inputs(model), runtime.index_bounds(model)
        sess = runtime.make_session(model)
        sets = []
        for i, shapes in enumerate(plan.sets):
            feeds = runtime.random_inputs(specs, shapes, seed=2 * i, highs=highs)
            sess.run(None, feeds)
            sets.append((shapes_mod.label(shapes), feeds))
        return sets
    except Exception:  # noqa: BLE001
        return []


def _accepts(fn: Callable, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class Judge:
    """The decisions of one run: which pass is timed, what is kept, the final comparison, the back-off."""

    def __init__(
        self,
        original: ModelProto,
        opts: Options,
        rt: Runtime,
        stage: Callable[[str], None],
        warnings: list[str],
        hw: HardwareProfile | None,
    ) -> None:
        self.original, self.opts, self.rt, self.stage, self.warnings, self.hw = original, opts, rt, stage, warnings, hw
        self.compare: Comparator | None = None
        self.feeds: dict | None = None  # the inputs at the first decision shape set (profiling, explanations)
        self.feed_sets: list[tuple[str, dict | None]] = []  # (label, inputs): every set a decision must hold at
        # the final comparison: with a report, until its verdict (faster, slower, noise) is settled;
        # without, until "slower or not" is (the decision; the summary line shows the spread)
        self.final_stop = "verdict" if opts.time_all_levels else "gate"
        self.gate = True  # per-pass measurement (off during back-off re-runs)
        # the model as given, when --opset converted it: the final comparison is against it, so a
        # conversion that slows the model is caught like a pass that does
        self.given: ModelProto | None = None

    @property
    def base(self) -> ModelProto:
        """What the final model must not be slower than: the model as given."""
        return self.given if self.given is not None else self.original

    @property
    def measured(self) -> bool:
        return self.compare is not None

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self, verifier: Verifier | None, shapes: ShapePlan | None, replayed: str | None) -> None:
        opts = self.opts
        if replayed is not None:
            self.warnings.append(
                f"replayed plan {replayed}: the passes it kept, as decided when it was made "
                "(nothing timed; verification on)"
            )
            return
        if not opts.time:
            self.warnings.append("measurement did not decide (--no-time): passes were kept on verification alone")
            return
        if opts.comparator is not None:  # it runs the models itself: it is told which shape set it times
            self.compare = opts.comparator
            self.feed_sets = [(label, None) for label in (shapes.labels() if shapes is not None else [])]
            return
        self.feed_sets = timing_feeds(self.original, verifier, shapes)
        self.feeds = self.feed_sets[0][1] if self.feed_sets else None
        if self.feeds is None:
            self.warnings.append(
                "onnxruntime cannot run the model, so nothing was timed: passes were decided by "
                "structure alone (a pass whose predicted time grows is rejected)"
            )
            return
        one = in_turn(self.original)
        self.compare = OrtComparator(self.feeds, opts, one_at_a_time=one, rt=self.rt)
        if one:
            self.warnings.append(_one_at_a_time(self.original))

    # -- after each pass -------------------------------------------------------------------
    def timed_alone(self, name: str, current: ModelProto, candidate: ModelProto, v: Validation) -> bool:
        """Whether the gate times this pass's output against its input (see ``decide``)."""
        return self.gate and self.compare is not None and self._may_slow(name, current, candidate, v)

    def _may_slow(self, name: str, current: ModelProto, candidate: ModelProto, v: Validation) -> bool:
        """A pass that adds work or ``changes_kernels``: one that only removes work is timed with the final model."""
        return getattr(REGISTRY.get(name), "changes_kernels", False) or _adds_work(current, candidate, v)

    def decide(self, name: str, current: ModelProto, candidate: ModelProto, v: Validation) -> None:
        """The measurement gate, and the stable rule behind it (the module docstring)."""
        if not self._may_slow(name, current, candidate, v):
            v.removes_only = self.compare is not None  # the final comparison (and back-off) decides it with the rest
            return
        if not self.gate:
            return
        if self.compare is None:
            if self.feeds is None and self.opts.time and self.opts.comparator is None:
                _by_structure(v, self.opts, self.hw)
            return
        level = self.opts.deploy_level
        self.stage(f"timing {name} against its input ({level_word(self.rt, level)})")
        must_pay = _must_pay(name, current, candidate, v)
        v.latency = self.confirmed(current, candidate, level, "pay" if must_pay else "gate")
        if v.latency is None or self.opts.keep_slower:
            return
        if self._slower_by(v.latency, self.opts.noise_band if must_pay else 2 * self.opts.noise_band):
            v.cause, v.reason = Cause.SLOWER, self._slower_reason(current, candidate, v)
        elif must_pay and self._paid(v.latency) and not self._paid_again(current, candidate, level, v):
            pass  # v.cause set by _paid_again
        elif must_pay and not self._paid(v.latency):
            c = v.cost
            what = (
                "adds nodes or changes the kernels onnxruntime runs"
                if c is None or not (_adds_traffic(v) or _adds_ops(v))
                else f"adds predicted work (traffic {c.before.bytes / 1e6:.4g}→{c.after.bytes / 1e6:.4g} MB, "
                f"FLOPs {c.before.flops / 1e6:.4g}→{c.after.flops / 1e6:.4g} M)"
            )
            v.cause = Cause.SLOWER
            v.reason = (
                f"{what} and measured no faster at {v.latency.level_name} than ×{pays(self.opts.noise_band):.2f}: "
                f"{v.latency.describe()}"
            )

    def _slower_by(self, lat: Latency, margin: float) -> bool:
        """The gate's "slower": slower (confirmed) with a median ratio above 1 + margin. A pass that
        only removes work (a fusion) is rejected at twice the band, the mirror of the ×0.94 a pass
        that adds work must gain: between the two, structure decides, so a pass near the band does
        not flip from run to run."""
        return lat.verdict is Verdict.SLOWER and lat.ratio > 1.0 + margin

    def _clearly_slower(self, lat: Latency, records: list[PassRecord]) -> bool:
        """The final model's "slower": the whole 95% interval of the median ratio above 1 + band,
        confirmed; above 1 + twice the band when every pass kept only removes work (the margin
        the gate gives such a pass alone). A median just past the band with an interval reaching
        back into it is what a loaded machine produces for two equal models, and a small model
        under load reads a few percent either way: backing off on that would make the same
        command write different models from run to run."""
        kept = [r for r in records if r.status is Status.APPLIED]
        only_removes = kept and all(r.removes_only for r in kept) and self.given is None  # (a conversion is not)
        margin = self.opts.noise_band * (2 if only_removes else 1)
        return lat.verdict is Verdict.SLOWER and lat.ci[0] > 1.0 + margin

    def _paid_again(self, current: ModelProto, candidate: ModelProto, level: str, v: Validation) -> bool:
        """Work added for a speed-up stays only if one more reading agrees: a pass kept against the
        structural default must not rest on two readings that noise can produce (ddddocr's 54 MB
        CRNN, timed one session at a time, kept pad-channels in one run of five on two)."""
        third = self.measure(current, candidate, level, "pay")
        if third is not None and self._paid(third):
            return True
        v.cause = Cause.SLOWER
        seen = third.describe() if third is not None else "no reading"
        v.reason = (
            f"adds predicted work and measured faster than ×{pays(self.opts.noise_band):.2f} at "
            f"{v.latency.level_name} twice ({v.latency.describe()}), but not a third time ({seen})"
        )
        return False

    def _paid(self, lat: Latency) -> bool:
        """Work added for a speed-up must show a clear one: faster (confirmed) by more than twice the
        noise band. A gain of a few percent flips with the machine's load from run to run; a pass that
        adds bytes for it would make the same command write different models."""
        return lat.verdict is Verdict.FASTER and lat.ratio < pays(self.opts.noise_band)

    def _slower_reason(self, current: ModelProto, candidate: ModelProto, v: Validation) -> str:
        why = f"slower at {v.latency.level_name}: {v.latency.describe()}"
        pred = v.cost.predicted_ratio if v.cost is not None else None
        if pred is not None and pred < 1.0 - self.opts.noise_band:
            why += f"; the roofline predicted ×{pred:.2f}"
            grown = self.explain(current, candidate, self.opts.deploy_level)
            if grown:
                why += "; measured time grew most in " + ", ".join(g.describe() for g in grown)
        return why

    # -- measuring -------------------------------------------------------------------------
    def confirmed(
        self, before: ModelProto, after: ModelProto, level: str, stop: str, lean: bool = True
    ) -> Latency | None:
        """A reading that says "slower" or "faster", or whose median leans beyond twice the band, is
        taken again with fresh sessions: two sessions of the same graph can differ by a few percent
        for reasons of memory placement alone, and a decision must not rest on one reading. The
        verdict two readings agree on stands; when they disagree a third decides by majority (a
        ~100 ms model read over 10-30 rounds gives an interval wide enough that a real ×1.10 reads
        as noise now and then). Without a majority the result is noise (the union of the intervals)."""
        lat = self.measure(before, after, level, stop)
        if lat is None or self.opts.keep_slower:
            return lat
        if lat.verdict is Verdict.NOISE and (not lean or abs(lat.ratio - 1.0) <= 2 * self.opts.noise_band):
            return lat
        readings = [lat]
        for _ in range(2):
            if isinstance(self.compare, OrtComparator):
                self.compare.forget()
            again = self.measure(before, after, level, stop)
            if again is None:
                break
            readings.append(again)
            votes = [r.verdict for r in readings]
            top = max(set(votes), key=votes.count)
            if votes.count(top) >= 2:
                return next(r for r in reversed(readings) if r.verdict is top)
        last = readings[-1]
        if len(readings) == 1:
            return last
        lo, hi = min(r.ci[0] for r in readings), max(r.ci[1] for r in readings)
        return dataclasses.replace(last, ci=(lo, hi))

    def measure(self, before: ModelProto, after: ModelProto, level: str, stop: str) -> Latency | None:
        """``after`` against ``before`` at every decision shape set; the set where ``after`` fares
        worst decides (a decision must hold at each). A set measured slower ends the gate early."""
        if self.compare is None:
            return None
        worst: Latency | None = None
        for label, feeds in self.feed_sets or [("", None)]:
            try:
                lat = self._compare_at(before, after, level, stop, label, feeds)
            except Exception as e:  # noqa: BLE001 - a failed measurement decides nothing
                self.warnings.append(f"timing at {level_word(self.rt, level)} failed: {first_line(e)}")
                return None
            if lat is None:
                return None
            if len(self.feed_sets) > 1:
                lat = dataclasses.replace(lat, shapes=label)
            if worst is None or lat.ratio > worst.ratio:
                worst = lat
            if stop in ("gate", "pay") and lat.verdict is Verdict.SLOWER:
                break
        return worst

    def _compare_at(self, before, after, level: str, stop: str, label: str, feeds) -> Latency | None:
        if isinstance(self.compare, OrtComparator):
            return self.compare(before, after, level, stop, feeds=feeds)
        if label and _accepts(self.compare, "shapes"):  # a comparator of the user's may price each shape set
            return self.compare(before, after, level, stop, shapes=label)
        return self.compare(before, after, level, stop)

    def explain(self, before: ModelProto, after: ModelProto, level: str, *, shrank: bool = False) -> list[OpGrowth]:
        """The operator types whose measured time grew (``shrank``: fell) most (onnxruntime's profiler)."""
        if (
            self.feeds is None
            or not isinstance(self.compare, OrtComparator)
            or model_io.is_large(before)
            or not self.rt.levels
        ):
            return []  # (the profiler copies the model: not for one over 2 GB)
        from rooftop.analysis import timing

        self.stage("profiling operators to explain a slowdown")
        try:
            a = timing.profile_op_types(before, self.feeds, level=level, threads=self.opts.threads)
            b = timing.profile_op_types(after, self.feeds, level=level, threads=self.opts.threads)
        except Exception:  # noqa: BLE001 - an explanation is a bonus
            return []
        return timing.op_growth(a, b, shrank=shrank)

    # -- the final model ---------------------------------------------------------------------
    def final(
        self,
        optimized: ModelProto,
        records: list[PassRecord],
        base_skip: Skip,
        rerun: Callable[[Skip], tuple[ModelProto, list[PassRecord]]],
    ) -> tuple[ModelProto, list[PassRecord], Latency | None, list[str]]:
        """Compare the final model with the original at the deploy level; back off while slower
        (``rerun`` runs the pipeline again with the positions of ``skip`` left out)."""
        level = self.opts.deploy_level
        if self.compare is None or optimized is self.base:
            return optimized, records, None, []
        self.stage(f"timing the optimized model against the original ({level_word(self.rt, level)})")
        # (a noise reading of the final model is not read again: only a slower one is confirmed)
        lat = self.confirmed(self.base, optimized, level, self.final_stop, lean=False)
        if lat is None or not self._clearly_slower(lat, records) or self.opts.keep_slower:
            return optimized, records, lat, []
        why = f"the optimized model was slower than the original at {lat.level_name}: {lat.describe()}"
        kept = sorted(
            (r for r in records if r.status is Status.APPLIED),
            key=lambda r: r.latency.ratio if r.latency is not None else 1.0,
            reverse=True,
        )
        # passes rejected by the gate stay out of the re-runs (which are not gated)
        skip: Skip = {r.position: r for r in records if r.status is Status.REJECTED}
        skip.update(base_skip)
        dropped: list[str] = []
        self.gate = False
        for rec in kept[:MAX_BACKOFF]:
            skip[rec.position] = (Status.SKIPPED, Cause.BACKED_OFF, f"backed off: {why}; this pass measured worst")
            dropped.append(rec.name)
            self.stage(f"backing off: pipeline without {', '.join(dropped)}")
            optimized, records = rerun(skip)
            if optimized is self.original:
                break
            lat = self.confirmed(self.base, optimized, level, self.final_stop, lean=False)
            if lat is None or not self._clearly_slower(lat, records):
                return optimized, records, lat, dropped
        return self.revert(records, why), records, None, [r.name for r in kept]

    def revert(self, records: list[PassRecord], why: str) -> ModelProto:
        """The last resort: every kept pass is dropped and the original graph goes out unchanged
        (the model as given, when the --opset conversion was part of what ran slower)."""
        what = "the original graph" if self.given is None else "the model as given (not converted)"
        for r in records:
            if r.status is Status.APPLIED:
                r.status, r.cause = Status.SKIPPED, Cause.BACKED_OFF
                r.reason = f"backed off: {why}; backing off did not help, {what} is written unchanged"
                r.nodes_after = r.nodes_before
        self.warnings.append(f"{why}; {what} is written unchanged (--keep-slower keeps the rewrites)")
        return self.base

    def forget(self) -> None:
        if isinstance(self.compare, OrtComparator):
            self.compare.forget()


def final_latency(judge: Judge, optimized: ModelProto, deploy: Latency | None) -> dict[str, Latency]:
    """The final model against the original at ORT_DISABLE_ALL (our rewrites alone) and at the deploy level."""
    out: dict[str, Latency] = {}
    if judge.compare is None or optimized is judge.base:
        return out
    deploy_level = judge.opts.deploy_level
    levels = ("disable", deploy_level) if judge.opts.time_all_levels and judge.rt.levels else (deploy_level,)
    for level in dict.fromkeys(levels):
        if level == deploy_level and deploy is not None:
            out[level] = deploy
            continue
        judge.stage(f"timing the optimized model against the original ({level_word(judge.rt, level)})")
        lat = judge.measure(judge.base, optimized, level, "verdict")
        if lat is not None:
            out[level] = lat
    return out


def _by_structure(v: Validation, opts: Options, hw: HardwareProfile | None) -> None:
    """Where onnxruntime cannot run the model: a pass whose predicted time grows is rejected."""
    pred = v.cost.predicted_ratio if v.cost is not None else None
    if pred is not None and pred > 1.0 + opts.noise_band and not opts.keep_slower:
        v.cause = Cause.SLOWER
        v.reason = (
            f"predicted slower on {hw.name if hw else 'the profile'}: "
            f"×{pred:.2f} (not measured: onnxruntime cannot run the model)"
        )


def _one_at_a_time(model: ModelProto) -> str:
    w = model_io.weights_nbytes(model)
    size = f"{w / 1e9:.1f} GB" if w >= 1e9 else f"{w / 1e6:.0f} MB"
    return (
        f"timed one session at a time (blocks A B B A, each a fresh session): two sessions "
        f"would hold its {size} of weights twice, past {MEMORY_PER_SIZE:g}× its size in "
        f"memory; its ratios carry session-to-session variation, so the intervals are wider than interleaved"
    )


def disagreement(
    before: Roofline | None,
    after: Roofline | None,
    lat: Latency | None,
    band: float,
    explain: Callable[[bool], list[OpGrowth]],
) -> str:
    """One line when the roofline and the measurement point in opposite directions; ``explain(shrank)``
    names the operator types whose measured time grew (fell) most."""
    if before is None or after is None or lat is None or not before.predicted_s:
        return ""
    pred = after.predicted_s / before.predicted_s
    measured = f"the model measured {lat.describe()} at {lat.level_name}"
    if pred < 1 - band and lat.verdict is Verdict.SLOWER:
        line, shrank = f"the roofline predicted ×{pred:.2f} but {measured}", False
    elif pred > 1 + band and lat.verdict is Verdict.FASTER:
        line, shrank = f"the roofline predicted ×{pred:.2f} (slower) but {measured}", True
    else:
        return ""
    moved = explain(shrank)
    if moved:
        line += f"; measured time {'fell' if shrank else 'grew'} most in " + ", ".join(g.describe() for g in moved)
    return line


def _adds_work(current: ModelProto, candidate: ModelProto, v: Validation) -> bool:
    """Whether a pass's output could run slower than its input: it has a new op type (or domain),
    more nodes, or more predicted bytes or FLOPs (or no prediction). Only such a pass (and one
    that ``changes_kernels``) is timed against its input; one that only removes work is timed
    with the final model."""
    if v.cost is None or len(candidate.graph.node) > len(current.graph.node):
        return True
    if _op_types(candidate.graph) - _op_types(current.graph):
        return True
    return _costs_more(v)


def _must_pay(name: str, current: ModelProto, candidate: ModelProto, v: Validation) -> bool:
    """A pass kept only if it measures faster: it adds nodes or predicted work, or changes kernels."""
    if getattr(REGISTRY.get(name), "changes_kernels", False):
        return True
    return len(candidate.graph.node) > len(current.graph.node) or _adds_traffic(v) or _adds_ops(v)


__all__ = ["MAX_BACKOFF", "Judge", "OrtComparator", "disagreement", "final_latency", "in_turn", "timing_feeds"]
