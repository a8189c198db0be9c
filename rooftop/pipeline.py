"""One optimize run: load -> passes (each verified, costed, measured) -> final decision -> save -> report.

Two safety nets, in this order, after every pass that changed the model:

1. verification: onnx.checker, then the outputs against the original (``rooftop.verify``);
   a failure rolls the pass back. The pipeline's result is checked once, at every input size;
   only a pass the gate times, every pass under ``--strict``, and every pass of a re-run after
   the result failed, is checked on its own (``after_pass``, ``verify_output``);
2. measurement: the pass's output timed against its input, interleaved, at the level the
   model is deployed at (``deploy_level``, default ORT_ENABLE_ALL); a pass that is slower
   beyond the noise band is rejected and the model goes on from before it.

Then the final model is timed against the original at the deploy level. If it is slower
beyond the noise (passes each within the noise can add up), the run backs off: it drops
the kept pass that measured worst and runs the pipeline again, until the result is not
slower; at worst the original graph is written unchanged, and the report says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from onnx import ModelProto

from rooftop import model_io, runtime, runtimes
from rooftop import plan as plan_mod
from rooftop import shapes as shapes_mod
from rooftop.analysis.timing import pays
from rooftop.errors import InputError, UsageError, VerificationError, first_line
from rooftop.passes import (
    DEFAULT_PIPELINE,
    REGISTRY,
    PassContext,
    PassManager,
    PassRecord,
    Validation,
)
from rooftop.plan import Plan
from rooftop.records import (
    NOISE_BAND,
    ORT_LEVEL_NAMES,
    Cause,
    CostDelta,
    Latency,
    OpGrowth,
    Status,
    Verdict,
)
from rooftop.runtimes.base import Runtime, level_word
from rooftop.shapes import ShapePlan
from rooftop.verify import Verifier, VerifyResult

if TYPE_CHECKING:
    from rooftop.analysis.hardware import HardwareProfile
    from rooftop.analysis.roofline import Roofline

MAX_BACKOFF = 3  # re-runs without the worst pass before the original graph is written unchanged
# timing sessions of models with more weights are built per comparison and dropped after it: a
# session holds its own (prepacked) copy of the weights, and on bert-qdq (110 MB) two cached
# sessions beside a verification session made the run's peak (496 MB)
CACHE_SESSIONS_UP_TO = model_io.LARGE_WEIGHT_BYTES
INTERLEAVE_UP_TO = 1 << 30  # models with more weights are timed one session at a time (blocks A B B A)
# the memory goal (README): peak resident memory at most MEMORY_PER_SIZE times the weights, for
# models with MEMORY_GOAL_FROM or more of them
MEMORY_GOAL_FROM = 50 << 20
MEMORY_PER_SIZE = 3.0


class Comparator(Protocol):
    """Times ``after`` against ``before`` at an onnxruntime level; ``stop`` is ``gate``
    (settle keep/reject) or ``verdict`` (settle faster/noise/slower). Returns None when it
    cannot time the pair."""

    def __call__(self, before: ModelProto, after: ModelProto, level: str, stop: str) -> Latency | None: ...


@dataclass
class Options:
    passes: Sequence[str] | None = None
    skip: Sequence[str] = ()
    target: str = "portable"
    fold_limit: int = 1 << 20
    channel_multiple: int | None = None
    hardware: str = "host"  # a built-in profile name, "host" (measured), or a JSON file
    # the shapes decisions are taken at: one mapping (one shape set) or a list of them (every decision
    # must hold at each; the cost figures are for the first); dims not bound get realistic defaults
    input_shapes: dict[str, list[int]] | list[dict[str, list[int]]] = field(default_factory=dict)
    inputs_npz: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    verify: bool = True
    fixed_point: bool = False
    external_data: bool | None = None
    force: bool = False
    strict: bool = False
    debug: bool = False
    analyze: bool = True  # roofline cost of the model before, after, and after every pass
    time: bool = True  # measure: decide per pass and for the final model, report the latency
    time_budget: float = 1.0  # seconds of interleaved timing per comparison (at most; stops early once decided)
    threads: int = 0  # onnxruntime intra-op threads for timing (0: physical cores)
    profile_nodes: bool = True  # per-operator times from onnxruntime's profiler, joined to the roofline rows
    deploy_level: str = "all"  # the onnxruntime optimization level the model will run at: decisions are taken there
    keep_slower: bool = False  # keep passes (and a final model) that measure slower
    time_all_levels: bool = True  # also time the final model at ORT_DISABLE_ALL (our rewrites alone; for reports)
    noise_band: float = NOISE_BAND
    comparator: Comparator | None = None  # replaces onnxruntime timing on this machine (tests, remote devices)
    opset: int | None = None  # convert the model to this default-domain opset before the passes
    # weights stay on disk (memory-mapped by onnxruntime, read by a pass only when it rewrites them,
    # streamed to the output); None: from 8 MB of weights on. External data is referred to where it
    # is (the model optimize() returns then refers to the input's data file, relative to its folder);
    # a model stored inline is moved to a scratch file for the run and returned with its weights.
    lazy_weights: bool | None = None
    # replay a plan (a saved plan or a JSON report's): exactly the passes it kept, with its options and
    # shapes, no timing, verification on; the output is byte-identical to the run that made it
    plan: str | os.PathLike[str] | None = None
    # where verification and every decision are taken: onnxruntime[:PROVIDER] or openvino[:DEVICE]
    runtime: str = "onnxruntime"
    # portable target: every candidate onnxruntime verifies is also loaded, run and compared in
    # OpenVINO (None: where OpenVINO is installed and decisions are taken in onnxruntime)
    cross_check: bool | None = None


@dataclass
class Report:
    """Everything an optimize run learned; ``rooftop.report`` renders it."""

    model_path: str | None
    output_paths: list[str]
    target: str
    nodes_before: int
    nodes_after: int
    params_before: int
    params_after: int
    passes: list[PassRecord]
    verification: str
    final_check: VerifyResult | None
    warnings: list[str]
    seconds: float
    pipeline: list[str]
    hardware: HardwareProfile | None = None
    before: Roofline | None = None
    after: Roofline | None = None
    deploy_level: str = "all"
    latency: dict[str, Latency] = field(default_factory=dict)  # final model against the original, by level
    measured: bool = False  # whether measurements decided (timing on and the model runs)
    backed_off: list[str] = field(default_factory=list)  # passes dropped because the final model was slower
    reverted: bool = False  # the final model was slower even after backing off: the original graph is written
    disagreement: str = ""  # one line when prediction and measurement point in opposite directions
    ort_load_error: str | None = (
        None  # onnxruntime's refusal of the original ("" it loaded; None: not tried, --no-verify)
    )
    plan: Plan | None = None  # the decisions of this run, replayable with --plan
    replayed: str | None = None  # the plan file this run replayed
    shapes: ShapePlan | None = None  # the input shapes decisions (and the cost figures) were taken at
    runtime: str = "onnxruntime"  # where verification and decisions were taken
    cross_checked: str | None = None  # the second runtime portable candidates were loaded and compared in

    @property
    def changed(self) -> bool:
        return any(r.status is Status.APPLIED and r.rewrites > 0 for r in self.passes)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write this report as .json, .md or .html (by the extension)."""
        from rooftop.report import write_report

        write_report(self, path)


def resolve_pipeline(passes: Sequence[str] | None, skip: Sequence[str] = ()) -> list[str]:
    names = list(passes) if passes else list(DEFAULT_PIPELINE)
    unknown = [n for n in list(names) + list(skip) if n not in REGISTRY]
    if unknown:
        raise UsageError(f"unknown pass(es): {', '.join(unknown)}; available: {', '.join(REGISTRY)}")
    return [n for n in names if n not in set(skip)]


def count_params(model: ModelProto) -> int:
    n = 0
    for t in model_io.iter_graph_tensors(model.graph):
        k = 1
        for d in t.dims:
            k *= d
        n += k
    return n


def _check_options(opts: Options) -> None:
    if opts.target not in ("portable", "onnxruntime"):
        raise UsageError(f"--target must be 'portable' or 'onnxruntime', got '{opts.target}'")
    if opts.deploy_level not in ORT_LEVEL_NAMES:
        raise UsageError(f"--deploy-level must be one of {', '.join(ORT_LEVEL_NAMES)}, got '{opts.deploy_level}'")
    if opts.time_budget <= 0:
        raise UsageError("--time-budget must be positive")
    if not 0 <= opts.noise_band < 1:
        raise UsageError("--noise-band must be between 0 and 1 (a fraction: 0.03 is 3%)")


def in_turn(model: ModelProto) -> bool:
    """Whether timing builds one session at a time. A timing session holds its own copy of the
    weights (with prepacking on, onnxruntime copies them out of the memory-mapped file: ViT, 88 MB,
    +85 MB a session), so two alive hold them twice: always over ``INTERLEAVE_UP_TO``, and from
    ``MEMORY_GOAL_FROM`` when what the process holds now plus two copies would pass the memory goal
    (ViT: 130 MB of libraries and state + 2 × 88 MB > 3 × 88 MB; bert, 438 MB, fits)."""
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
    grows when a pass makes them known (silero_vad_half: 435 B → 0.71 MB, by simplify)."""
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
    """Interleaved onnxruntime timing on this machine. Keeps the session of the last model it
    timed as "after", so the next pass's comparison (whose "before" it is) does not build it again."""

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


class _Run:
    """The state of one optimize run; each method is one step of ``optimize``."""

    def __init__(
        self, original: ModelProto, opts: Options, stage: Callable[[str], None], replay: Plan | None = None
    ) -> None:
        self.original, self.opts, self.stage = original, opts, stage
        self.replay = replay  # a plan replayed: its positions not kept are skipped, its options used
        self.rt: Runtime = runtimes.get(opts.runtime)  # where verification and decisions are taken
        self.cross: Verifier | None = None  # a second runtime a portable output must load and match in
        self.base_skip = plan_mod.skips(replay) if replay is not None else {}
        self.warnings: list[str] = []
        self.hw: HardwareProfile | None = None
        self.verifier: Verifier | None = None
        self.compare: Comparator | None = None
        self.feeds: dict | None = None  # the inputs at the first decision shape set (profiling, explanations)
        self.feed_sets: list[
            tuple[str, dict | None]
        ] = []  # (shape set label, its inputs): every set a decision must hold at
        self.shapes: ShapePlan | None = None
        self.before: Roofline | None = None
        self.current: ModelProto = original
        self.current_cost: Roofline | None = None
        self.last_verified: tuple[ModelProto, VerifyResult] | None = None  # (a model, its check at every size)
        # the pipeline's output is checked against the original at every input size; only if it
        # differs are the passes run again, each pass's output checked on its own (``verify_output``)
        self.check_each = opts.strict  # --strict: a pass that changes the outputs is found and named, whatever else
        self.passes_warned = 0  # warnings before the passes ran (those after concern that run of them)
        # the final comparison: with a report, until its verdict (faster, slower, noise) is settled;
        # without, until "slower or not" is (the decision; the summary line shows the spread)
        self.final_stop = "verdict" if opts.time_all_levels else "gate"
        self.gate = True  # per-pass measurement (off during back-off re-runs)
        self.shape_memo: dict = {}  # shapes found by running one model of this run, for the next ones' cost analysis

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self) -> None:
        opts = self.opts
        if opts.analyze:
            from rooftop.analysis import hardware

            self.hw = hardware.get_profile(opts.hardware, progress=lambda s: self.stage(f"measuring this machine: {s}"))
        if opts.verify:
            self.stage("computing reference outputs")
            self.verifier = Verifier(
                self.original,
                input_shapes=opts.input_shapes,
                inputs_npz=opts.inputs_npz,
                rtol=opts.rtol,
                atol=opts.atol,
                shapes=self.hw is not None,
                runtime=None if self.rt.label == "onnxruntime" else self.rt,
            )
            self._cross_check()
            self._shapes_from_references()
            if not self.verifier.available:
                self.warnings.append(f"verification skipped: {self.verifier.reason}{_opset_hint(self.original)}")
            self.warnings.extend(self.verifier.notes)
        else:
            self.warnings.append("verification disabled (--no-verify): outputs were not compared")
        self._decision_shapes()
        self._prepare_timing()
        if self.hw is not None:
            self.stage("analyzing the original model")
            self.before = self.current_cost = self.cost(self.original)

    def _cross_check(self) -> None:
        """Portable means it runs elsewhere: where OpenVINO is installed (and decisions are taken in
        onnxruntime), every candidate is also loaded, run and compared there."""
        opts, v = self.opts, self.verifier
        want = opts.cross_check if opts.cross_check is not None else opts.target == "portable"
        if not want or v is None or not v.available or self.rt.name != "onnxruntime":
            return
        ov = runtimes.installed("openvino")
        if ov is None:
            if opts.cross_check:
                raise UsageError("--cross-check: OpenVINO is not installed (pip install 'rooftop[openvino]')")
            return
        if model_io.weights_nbytes(self.original) > INTERLEAVE_UP_TO and not opts.cross_check:
            self.warnings.append(
                f"portable outputs not checked in {ov.label}: over 1 GB of weights, which a second "
                "runtime would hold again (--cross-check checks them)"
            )
            return
        self.stage("computing reference outputs in OpenVINO")
        self.cross = Verifier(self.original, rtol=opts.rtol, atol=opts.atol, runtime=ov, feeds_from=v)
        if not self.cross.available:
            self.warnings.append(f"portable outputs not checked in {ov.label}: {self.cross.reason}")

    def _decision_shapes(self) -> None:
        """The shape sets decisions are taken at: as the verifier ran them, else planned here."""
        v = self.verifier
        if v is not None and v.plan is not None:
            self.shapes = v.plan
            return
        if v is not None and v.sets and not v.plan:  # --inputs: the user's arrays
            self.shapes = ShapePlan(
                [{k: tuple(a.shape) for k, a in v.sets[0].feeds.items()}], given=list(v.sets[0].feeds)
            )
            return
        try:
            self.shapes = shapes_mod.plan(runtime.graph_inputs(self.original), self.opts.input_shapes)
        except InputError:
            self.shapes = None

    @property
    def cost_shapes(self) -> dict:
        """The input shapes the cost figures are computed at: the first decision shape set."""
        return dict(self.shapes.first) if self.shapes is not None else {}

    def _shapes_from_references(self) -> None:
        """The verifier's first reference run was profiled: where it ran at the inputs the cost
        analysis binds, its node output shapes go into the shape memo, and the analysis of the
        original needs no session and run of its own."""
        from rooftop.analysis import costs

        v = self.verifier
        if not v.node_shapes or not v.sets:
            return
        try:
            if v.plan is None:  # (--inputs: the analysis runs its own shapes)
                return
            bound = costs.bound_inputs(self.original, v.plan.first)
        except Exception:  # noqa: BLE001 - the analysis finds its own shapes
            return
        if {k: tuple(a.shape) for k, a in v.sets[0].feeds.items()} == bound:
            costs.remember(self.shape_memo, self.original, v.node_shapes)
        v.node_shapes = {}

    def _prepare_timing(self) -> None:
        opts = self.opts
        if self.replay is not None:
            self.warnings.append(
                f"replayed plan {opts.plan}: the passes it kept, as decided when it was made "
                "(nothing timed; verification on)"
            )
            return
        if not opts.time:
            self.warnings.append("measurement did not decide (--no-time): passes were kept on verification alone")
            return
        if opts.comparator is not None:  # it runs the models itself: it is told which shape set it times
            self.compare = opts.comparator
            self.feed_sets = [(label, None) for label in (self.shapes.labels() if self.shapes is not None else [])]
            return
        self.feed_sets = _timing_feeds(self.original, self.verifier, self.shapes)
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
            w = model_io.weights_nbytes(self.original)
            size = f"{w / 1e9:.1f} GB" if w >= 1e9 else f"{w / 1e6:.0f} MB"
            self.warnings.append(
                f"timed one session at a time (blocks A B B A, each a fresh session): two sessions "
                f"would hold its {size} of weights twice, past {MEMORY_PER_SIZE:g}× its size in "
                f"memory; its ratios carry session-to-session variation, so the intervals are wider than interleaved"
            )

    def cost(self, model: ModelProto) -> Roofline | None:
        from rooftop.analysis import costs, roofline

        try:
            return roofline.roofline(costs.analyze(model, self.cost_shapes, memo=self.shape_memo), self.hw)
        except Exception as e:  # noqa: BLE001 - analysis must never cost the user the model
            self.warnings.append(f"cost analysis failed: {type(e).__name__}: {first_line(e)}")
            return None

    # -- after each pass -------------------------------------------------------------------
    def after_pass(self, name: str, candidate: ModelProto) -> Validation:
        """Cost, checks and measurement of a pass's output. The checks (onnx.checker, then the outputs
        against the original's) run here only for a pass checked on its own: after the pipeline's
        output failed them (``check_each``), under ``--strict``, or when the gate is to time it (no
        time is spent measuring a model that computes something else); the others are checked with
        the pipeline's output (``verify_output``)."""
        new_cost = self.cost(candidate) if self.hw is not None else None
        v = Validation()
        if self.current_cost is not None and new_cost is not None:
            v.cost = CostDelta(self.current_cost.costs(), new_cost.costs())
        if self.check_each or self._timed_alone(name, candidate, v):
            self.check(name, candidate, v)
            if not v.ok:
                return v
        self.decide(name, candidate, v)
        if v.ok:
            self.current, self.current_cost = candidate, new_cost
        return v

    def check(self, name: str, candidate: ModelProto, v: Validation) -> str:
        """onnx.checker, then the outputs against the original's (when verification is on), into
        ``v``; returns the failure as one phrase ("" when it passed)."""
        if model_io.is_large(candidate):  # write it once; check and run it from disk
            model_io.release_memory()  # the pass's graph and arrays are garbage now
            with model_io.materialized(candidate) as path:
                why = self._check_at(name, candidate, v, path)
            model_io.release_memory()
            return why
        return self._check_at(name, candidate, v, None)

    def _check_at(self, name: str, candidate: ModelProto, v: Validation, path: str | None) -> str:
        data = None if path else candidate.SerializeToString()  # serialized once: checker and onnxruntime
        try:
            model_io.check_model(candidate, f"after {name}", path_on_disk=Path(path) if path else None, data=data)
        except InputError as e:
            v.cause, v.reason = Cause.INVALID, f"onnx.checker rejects the result: {e}"
            return f"was rejected by onnx.checker ({e})"
        if self.verifier is None or not self.verifier.available:
            return ""
        self.stage(f"verifying {name}")
        res = self.verifier.check(candidate, path=path, data=data)
        v.verified, v.max_abs_error = True, res.max_abs_error
        if res.ok:
            return self._check_elsewhere(name, candidate, v, res, path, data)
        v.cause, v.reason = Cause.OUTPUTS_CHANGED, f"outputs changed: {res.message}"
        return f"differed from the original ({res.message})"

    def _check_elsewhere(self, name: str, candidate: ModelProto, v: Validation, res: VerifyResult, path, data) -> str:
        """The same check in the second runtime (portable target): a result it cannot load, or
        whose outputs differ there, fails like any verification, with its message."""
        cross = self.cross
        if cross is not None and cross.available:
            self.stage(f"checking {name} in {cross.where}")
            other = cross.check(candidate, path=path, data=data)
            if not other.ok:
                cant = "cannot load" in other.message or "fails on" in other.message
                v.cause = Cause.INVALID if cant else Cause.OUTPUTS_CHANGED
                v.reason = other.message if cant else f"outputs changed in {cross.where}: {other.message}"
                return f"failed in {cross.where} ({other.message})"
        self.last_verified = (candidate, res)
        return ""

    def _timed_alone(self, name: str, candidate: ModelProto, v: Validation) -> bool:
        """Whether the gate times this pass's output against its input (see ``decide``)."""
        return self.gate and self.compare is not None and self._may_slow(name, candidate, v)

    def _may_slow(self, name: str, candidate: ModelProto, v: Validation) -> bool:
        """A pass that adds work or ``changes_kernels``: one that only removes work is timed with the final model."""
        return getattr(REGISTRY.get(name), "changes_kernels", False) or self._adds_work(candidate, v)

    def decide(self, name: str, candidate: ModelProto, v: Validation) -> None:
        """The measurement gate, and the stable rule behind it. A pass that only removes work is
        kept (the final comparison times it with the rest). Any other is timed against its input:
        slower (confirmed) is rejected; within the noise, the decision falls to structure, so that
        the same command gives the same model run after run: a pass that adds predicted work or
        ``changes_kernels`` is rejected unless it measured faster (confirmed), one that only adds an
        op type (a fusion: fewer nodes, no more predicted work) is kept."""
        if not self.gate:
            return
        if not self._may_slow(name, candidate, v):
            v.removes_only = self.compare is not None  # the final comparison (and back-off) decides it with the rest
            return
        if self.compare is None:
            if self.feeds is None and self.opts.time and self.opts.comparator is None:
                self._decide_by_structure(v)
            return
        level = self.opts.deploy_level
        self.stage(f"timing {name} against its input ({level_word(self.rt, level)})")
        must_pay = self._must_pay(name, candidate, v)
        v.latency = self._confirmed(self.current, candidate, level, "pay" if must_pay else "gate")
        if v.latency is None or self.opts.keep_slower:
            return
        if v.latency.verdict is Verdict.SLOWER:
            v.cause, v.reason = Cause.SLOWER, self._slower_reason(candidate, v)
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
                f"{what} and measured no faster at {v.latency.level_name} than ×{1 - 2 * self.opts.noise_band:.2f}: "
                f"{v.latency.describe()}"
            )

    def _paid(self, lat: Latency) -> bool:
        """Work added for a speed-up must show a clear one: faster (confirmed) by more than twice the
        noise band. A gain of a few percent flips with the machine's load from run to run; a pass that
        adds bytes for it would make the same command write different models."""
        return lat.verdict is Verdict.FASTER and lat.ratio < pays(self.opts.noise_band)

    def _must_pay(self, name: str, candidate: ModelProto, v: Validation) -> bool:
        """A pass kept only if it measures faster: it adds nodes or predicted work, or changes kernels."""
        if getattr(REGISTRY.get(name), "changes_kernels", False) or len(candidate.graph.node) > len(
            self.current.graph.node
        ):
            return True
        return _adds_traffic(v) or _adds_ops(v)

    def _slower_reason(self, candidate: ModelProto, v: Validation) -> str:
        why = f"slower at {v.latency.level_name}: {v.latency.describe()}"
        pred = v.cost.predicted_ratio if v.cost is not None else None
        if pred is not None and pred < 1.0 - self.opts.noise_band:
            why += f"; the roofline predicted ×{pred:.2f}"
            grown = self.explain(self.current, candidate, self.opts.deploy_level)
            if grown:
                why += "; measured time grew most in " + ", ".join(g.describe() for g in grown)
        return why

    def _adds_work(self, candidate: ModelProto, v: Validation) -> bool:
        """Whether a pass's output could run slower than its input: it has a new op type (or domain),
        more nodes, or more predicted bytes or FLOPs (or no prediction). Only such a pass (and one
        that ``changes_kernels``) is timed against its input; one that only removes work is timed
        with the final model."""
        if v.cost is None or len(candidate.graph.node) > len(self.current.graph.node):
            return True
        if _op_types(candidate.graph) - _op_types(self.current.graph):
            return True
        return _costs_more(v)

    def _decide_by_structure(self, v: Validation) -> None:
        pred = v.cost.predicted_ratio if v.cost is not None else None
        if pred is not None and pred > 1.0 + self.opts.noise_band and not self.opts.keep_slower:
            v.cause = Cause.SLOWER
            v.reason = (
                f"predicted slower on {self.hw.name if self.hw else 'the profile'}: "
                f"×{pred:.2f} (not measured: onnxruntime cannot run the model)"
            )

    def _confirmed(self, before: ModelProto, after: ModelProto, level: str, stop: str) -> Latency | None:
        """A measurement that says "slower" or "faster" is taken again with fresh sessions and stands
        only if the second says so too: two sessions of the same graph can differ by a few percent
        for reasons of memory placement alone, and a decision must not rest on that. When the two
        disagree, the result is noise (the second's median, the union of both intervals)."""
        lat = self._measure(before, after, level, stop)
        if lat is None or lat.verdict is Verdict.NOISE or self.opts.keep_slower:
            return lat
        if isinstance(self.compare, OrtComparator):
            self.compare.forget()
        again = self._measure(before, after, level, stop)
        if again is None:
            return lat
        if again.verdict is not lat.verdict:  # not confirmed: the two measurements disagree, so it is noise
            return dataclasses.replace(again, ci=(min(lat.ci[0], again.ci[0]), max(lat.ci[1], again.ci[1])))
        return again

    def _measure(self, before: ModelProto, after: ModelProto, level: str, stop: str) -> Latency | None:
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

    # -- the passes --------------------------------------------------------------------------
    def run_passes(
        self, names: Sequence[str], skip: dict[int, PassRecord | tuple[Status, Cause, str]], on_start, on_end
    ) -> tuple[ModelProto, list[PassRecord]]:
        opts = self.opts
        ctx = PassContext(target=opts.target, fold_limit=opts.fold_limit, channel_multiple=self._channel_multiple())
        self.current, self.current_cost, self.last_verified = self.original, self.before, None
        self.passes_warned = len(self.warnings)

        def ended(rec: PassRecord) -> None:
            self._unchanged_cost(rec)
            if on_end:
                on_end(rec)

        manager = PassManager(
            [REGISTRY[n]() for n in names],
            ctx,
            self.after_pass,
            fixed_point=opts.fixed_point,
            on_start=on_start,
            on_end=ended,
            debug=opts.debug,
            skip=skip,
        )
        # Passes never change the model they are given (tests/test_pipeline.py checks it byte
        # for byte), so the caller's model is the first state and needs no copy.
        optimized = manager.run(self.original)
        return optimized, manager.records

    def _channel_multiple(self) -> int | None:
        """--channel-multiple, else the profile's block where the profile says padding pays (a
        replayed plan: the multiple it was made with)."""
        if self.replay is not None:
            return self.replay.options.get("channel_multiple")
        if self.opts.channel_multiple is not None:
            return self.opts.channel_multiple
        hw = self.hw
        return int(hw.channel_multiple) if hw is not None and getattr(hw, "pad_pays", False) else None

    def _unchanged_cost(self, rec: PassRecord) -> None:
        """A pass that was not kept leaves the totals as they were; a rejected one keeps what it
        would have saved, for the report to set beside what it measured."""
        cur = self.current_cost
        if cur is None or rec.status is Status.APPLIED or (rec.status is Status.REJECTED and rec.cost is not None):
            return
        rec.cost = CostDelta(cur.costs(), cur.costs())

    def verify_output(
        self, names, optimized: ModelProto, records, on_start, on_end
    ) -> tuple[ModelProto, list[PassRecord]]:
        """The pipeline's output through onnx.checker and against the original at every input size:
        one serialization and one session for the whole pipeline, not one per pass. If it fails,
        the passes are run again, each pass's output checked on its own: the one that fails is
        rolled back and named."""
        if self.check_each or optimized is self.original:
            return optimized, records
        self.check_each = True  # from here on (back-off re-runs too) every pass is checked on its own
        v = Validation()
        why = self.check("the pipeline", optimized, v)
        if not why:
            for r in records:
                if r.status is Status.APPLIED:
                    r.verified = v.verified  # its rewrites are in the model just verified (no error of its own)
            return optimized, records
        del self.warnings[self.passes_warned :]  # they concern a run that is discarded
        self.warnings.append(f"the optimized model {why}: the passes were run again, each checked on its own")
        self.stage("the optimized model failed its checks: running the passes again, each checked on its own")
        return self.run_passes(names, dict(self.base_skip), on_start, on_end)

    # -- the final model ---------------------------------------------------------------------
    def final_decision(
        self, names, optimized, records, on_start, on_end
    ) -> tuple[ModelProto, list[PassRecord], Latency | None, list[str]]:
        """Compare the final model with the original at the deploy level; back off while slower."""
        level = self.opts.deploy_level
        if self.compare is None or optimized is self.original:
            return optimized, records, None, []
        self.stage(f"timing the optimized model against the original ({level_word(self.rt, level)})")
        lat = self._confirmed(self.original, optimized, level, self.final_stop)
        if lat is None or lat.verdict is not Verdict.SLOWER or self.opts.keep_slower:
            return optimized, records, lat, []
        why = f"the optimized model was slower than the original at {lat.level_name}: {lat.describe()}"
        kept = sorted(
            (r for r in records if r.status is Status.APPLIED),
            key=lambda r: r.latency.ratio if r.latency is not None else 1.0,
            reverse=True,
        )
        # passes rejected by the gate stay out of the re-runs (which are not gated)
        skip: dict[int, PassRecord | tuple[Status, Cause, str]] = {
            r.position: r for r in records if r.status is Status.REJECTED
        }
        skip.update(self.base_skip)
        dropped: list[str] = []
        self.gate = False
        for rec in kept[:MAX_BACKOFF]:
            skip[rec.position] = (Status.SKIPPED, Cause.BACKED_OFF, f"backed off: {why}; this pass measured worst")
            dropped.append(rec.name)
            self.stage(f"backing off: pipeline without {', '.join(dropped)}")
            optimized, records = self.run_passes(names, skip, on_start, on_end)
            if optimized is self.original:
                break
            lat = self._confirmed(self.original, optimized, level, self.final_stop)
            if lat is None or lat.verdict is not Verdict.SLOWER:
                return optimized, records, lat, dropped
        return self.revert(records, why), records, None, [r.name for r in kept]

    def make_plan(
        self, names: list[str], records: list[PassRecord], model_path: str | None, backed_off: list[str], reverted: bool
    ) -> Plan:
        opts = self.opts
        measured = self.compare is not None
        return Plan(
            pipeline=list(names),
            steps=[plan_mod.step(r, measured) for r in records],
            options={
                "target": opts.target,
                "fold_limit": opts.fold_limit,
                "channel_multiple": self._channel_multiple(),
                "fixed_point": opts.fixed_point,
                "opset": opts.opset,
            },
            decided=self.replay.decided
            if self.replay is not None
            else {
                "runtime": self.rt.label,
                "deploy_level": level_word(self.rt, opts.deploy_level),
                "cross_checked": self.cross.where if self.cross is not None and self.cross.available else None,
                "threads": opts.threads or runtime.physical_cores(),
                "noise_band": opts.noise_band,
                "time_budget_s": opts.time_budget,
                "measured": measured,
                "backed_off": backed_off,
                "reverted": reverted,
            },
            shapes=self.shapes.as_dict() if self.shapes is not None else None,
            versions=plan_mod.versions(),
            model=_model_identity(model_path),
        )

    def revert(self, records: list[PassRecord], why: str) -> ModelProto:
        """The last resort: every kept pass is dropped and the original graph goes out unchanged."""
        for r in records:
            if r.status is Status.APPLIED:
                r.status, r.cause = Status.SKIPPED, Cause.BACKED_OFF
                r.reason = f"backed off: {why}; backing off did not help, the original graph is written unchanged"
                r.nodes_after = r.nodes_before
        self.warnings.append(f"{why}; the original graph is written unchanged (--keep-slower keeps the rewrites)")
        self.last_verified = None
        return self.original

    def final_check(self, optimized: ModelProto, records: list[PassRecord]) -> VerifyResult | None:
        v = self.verifier
        if v is None or not v.available:
            return None
        if self.last_verified and self.last_verified[0] is optimized:
            final = self.last_verified[1]  # verified as it stands, at every size
        elif optimized is self.original:
            final = VerifyResult(True, 0.0, message="model unchanged")
        else:
            self.stage("verifying final model")
            final = v.check(optimized)
        if not final.ok:
            culprit = next((r.name for r in reversed(records) if r.status is Status.APPLIED), None)
            raise VerificationError(
                f"optimized model diverges from the original after pass {culprit}: {final.message}", culprit
            )
        return final

    def final_latency(self, optimized: ModelProto, deploy: Latency | None) -> dict[str, Latency]:
        """The final model against the original at ORT_DISABLE_ALL (our rewrites alone) and at the deploy level."""
        out: dict[str, Latency] = {}
        if self.compare is None or optimized is self.original:
            return out
        levels = (
            ("disable", self.opts.deploy_level)
            if self.opts.time_all_levels and self.rt.levels
            else (self.opts.deploy_level,)
        )
        for level in dict.fromkeys(levels):
            if level == self.opts.deploy_level and deploy is not None:
                out[level] = deploy
                continue
            self.stage(f"timing the optimized model against the original ({level_word(self.rt, level)})")
            lat = self._measure(self.original, optimized, level, "verdict")
            if lat is not None:
                out[level] = lat
        return out

    def disagreement(self, after: Roofline | None, lat: Latency | None, optimized: ModelProto) -> str:
        """One line when the roofline and the measurement point in opposite directions."""
        if self.before is None or after is None or lat is None or not self.before.predicted_s:
            return ""
        pred = after.predicted_s / self.before.predicted_s
        band = self.opts.noise_band
        if pred < 1 - band and lat.verdict is Verdict.SLOWER:
            line, shrank = (
                f"the roofline predicted ×{pred:.2f} but the model measured {lat.describe()} at {lat.level_name}",
                False,
            )
        elif pred > 1 + band and lat.verdict is Verdict.FASTER:
            line, shrank = (
                f"the roofline predicted ×{pred:.2f} (slower) but the "
                f"model measured {lat.describe()} at {lat.level_name}",
                True,
            )
        else:
            return ""
        moved = self.explain(self.original, optimized, lat.level, shrank=shrank)
        if moved:
            line += f"; measured time {'fell' if shrank else 'grew'} most in " + ", ".join(g.describe() for g in moved)
        return line

    def profile(self, optimized: ModelProto, after: Roofline | None) -> None:
        """Measured per-operator times (ORT_DISABLE_ALL, node names intact) onto the roofline rows."""
        if not self.opts.profile_nodes or self.feeds is None or self.before is None:
            return
        from rooftop.analysis import timing

        self.stage("profiling operators (onnxruntime profiler)")
        try:
            for model, rl in ((self.original, self.before), (optimized, after)):
                if rl is not None:
                    timing.join_measured(rl.rows, self.rt.profile_nodes(model, self.feeds, threads=self.opts.threads))
        except Exception as e:  # noqa: BLE001
            self.warnings.append(f"operator profiling failed: {first_line(e)}")
            return
        self._check_roof(after)

    def _check_roof(self, after: Roofline | None) -> None:
        """Measured operators above the host profile's compute roof: its peak was measured low."""
        from rooftop.analysis import hardware, roofline

        hw = self.hw
        if hw is None or hw.kind != "measured":
            return
        over = roofline.above_compute_roof(self.before, hw) + roofline.above_compute_roof(after, hw)
        if over:
            top = max(over, key=lambda r: (r.flops + r.int_ops) / r.measured_s)
            attained = (top.flops + top.int_ops) / top.measured_s
            why = (
                f"{top.name} ({top.op_type}) measured {attained / 1e9:.0f} "
                f"GFLOP/s over the profile's {hw.peak(top.dtype) / 1e9:.0f}"
            )
            hardware.mark_stale(why)
            self.warnings.append(
                f"{len(over)} measured operators exceed the host profile's compute roof ({why}): "
                "the profile is measured again on the next run"
            )


def optimize(
    model_or_path: ModelProto | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    options: Options | None = None,
    *,
    on_pass_start: Callable[[str, int], None] | None = None,
    on_pass_end: Callable[[PassRecord], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> tuple[ModelProto, Report]:
    """Run the pipeline on a model; write ``output`` only if every check passes."""
    opts = _with_kwargs(options or Options(), kwargs)
    stage = on_stage or (lambda s: None)
    t0 = time.perf_counter()
    replay = None
    if opts.plan is not None:
        replay = plan_mod.load(opts.plan)
        opts = _replay_options(opts, replay)
    names = resolve_pipeline(opts.passes, opts.skip)
    _check_options(opts)
    original, model_path, notes = _load(model_or_path, output, opts, stage)
    # weights left on disk at load are read from the model's folder, by the passes that need one
    # tensor and by onnxruntime (memory-mapped); the output streams them from there
    with contextlib.ExitStack() as stack:
        base = Path(model_path).resolve().parent if model_path else model_io.external_dir()
        spilled = _spills(original, model_path, opts)
        if spilled:
            base = stack.enter_context(tempfile.TemporaryDirectory(prefix="rooftop-weights-"))
            stage("moving the weights to a scratch file (each is then held once, on disk)")
            original = model_io.spill(original, base)
            model_io.release_memory()
            if opts.external_data is None:  # the output is stored as the input was: inline
                opts = dataclasses.replace(opts, external_data=False)
        stack.enter_context(model_io.external_base(base))
        if model_path is not None:  # onnx.checker copies the model it checks: a spilled model is light
            model_io.check_model(original, model_path, path_on_disk=Path(model_path))
        if replay is not None:
            notes += plan_mod.check(replay, REGISTRY, str(opts.plan)) + _shape_warnings(replay, opts)
        optimized, report = _optimize(
            original, model_path, notes, output, opts, names, stage, t0, on_pass_start, on_pass_end, replay
        )
        if spilled:  # the scratch file goes with this block: the caller gets the weights in the model
            optimized = model_io.inlined(optimized)
        return optimized, report


def _spills(model: ModelProto, model_path: str | None, opts: Options) -> bool:
    """A model read from a file, stored inline, with enough weight to matter (never a caller's ModelProto)."""
    if model_path is None or opts.lazy_weights is False or model_io.has_external_data(model):
        return False
    return opts.lazy_weights is True or model_io.inline_nbytes(model) >= model_io.SPILL_FROM_BYTES


def _optimize(
    original: ModelProto,
    model_path: str | None,
    notes: list[str],
    output,
    opts: Options,
    names: list[str],
    stage: Callable[[str], None],
    t0: float,
    on_pass_start,
    on_pass_end,
    replay: Plan | None = None,
) -> tuple[ModelProto, Report]:
    original, converted = _convert(original, opts, model_path or "model")
    notes += converted

    run = _Run(original, opts, stage, replay)
    run.warnings.extend(notes)
    run.prepare()
    nodes_before, params_before = len(original.graph.node), count_params(original)
    optimized, records = run.run_passes(names, dict(run.base_skip), on_pass_start, on_pass_end)
    optimized, records = run.verify_output(names, optimized, records, on_pass_start, on_pass_end)
    optimized, records, deploy_lat, backed_off = run.final_decision(
        names, optimized, records, on_pass_start, on_pass_end
    )
    _warn_rollbacks(records, run.warnings)
    final = run.final_check(optimized, records)
    if opts.strict:
        _strict(records)
    after = run.current_cost if optimized is not original else run.before
    latency = run.final_latency(optimized, deploy_lat)
    disagreement = run.disagreement(after, latency.get(opts.deploy_level), optimized)
    run.profile(optimized, after)
    if isinstance(run.compare, OrtComparator):
        run.compare.forget()

    written: list[str] = []
    if output is not None:
        stage("writing model")
        written = [str(p) for p in model_io.save_model(optimized, output, external_data=opts.external_data)]
    report = Report(
        model_path=model_path,
        output_paths=written,
        target=opts.target,
        nodes_before=nodes_before,
        nodes_after=len(optimized.graph.node),
        params_before=params_before,
        params_after=count_params(optimized),
        passes=records,
        verification=run.verifier.describe() if run.verifier is not None else "verification disabled",
        final_check=final,
        warnings=run.warnings,
        seconds=time.perf_counter() - t0,
        pipeline=names,
        hardware=run.hw,
        before=run.before,
        after=after,
        deploy_level=opts.deploy_level,
        latency=latency,
        measured=run.compare is not None,
        backed_off=backed_off,
        reverted=bool(backed_off) and optimized is original,
        disagreement=disagreement,
        ort_load_error=run.verifier.load_error if run.verifier is not None else None,
        replayed=str(opts.plan) if opts.plan is not None else None,
        shapes=run.shapes,
        runtime=run.rt.label,
        cross_checked=run.cross.where if run.cross is not None and run.cross.available else None,
    )
    report.plan = run.make_plan(names, records, model_path, backed_off, report.reverted)
    return optimized, report


def _with_kwargs(opts: Options, kwargs: dict[str, Any]) -> Options:
    for k, v in kwargs.items():
        if not hasattr(opts, k):
            raise TypeError(f"optimize() got an unexpected keyword argument '{k}'")
        setattr(opts, k, v)
    return opts


def _load(model_or_path, output, opts: Options, stage) -> tuple[ModelProto, str | None, list[str]]:
    """The model to optimize, its path, and notes on what loading changed (IR upgrade)."""
    if isinstance(model_or_path, ModelProto):
        if output is not None:
            model_io.check_output_path(output, None)
        if model_or_path.ir_version < 4:
            upgraded = ModelProto()
            upgraded.CopyFrom(model_or_path)  # the caller's model is never changed
            return upgraded, None, [n for n in (model_io.upgrade_ir(upgraded),) if n]
        return model_or_path, None, []
    model_path = str(model_or_path)
    if output is not None:
        model_io.check_output_path(output, model_path, force=opts.force)
    stage("loading model")
    model, notes = model_io.load_model_noted(model_path, lazy=opts.lazy_weights, check=False)  # checked once light
    return model, model_path, notes


def _convert(model: ModelProto, opts: Options, name: str) -> tuple[ModelProto, list[str]]:
    if opts.opset is None:
        return model, []
    converted, note = model_io.convert_opset(model, opts.opset, name)
    return converted, [note] if note else []


def _warn_rollbacks(records: list[PassRecord], warnings: list[str]) -> None:
    for rec in records:
        if rec.status is Status.ROLLED_BACK:
            warnings.append(f"pass {rec.name} rolled back: {rec.reason}")
        elif rec.status is Status.REJECTED:
            warnings.append(f"pass {rec.name} rejected: {rec.reason}")


def _strict(records: list[PassRecord]) -> None:
    for rec in records:
        if rec.status is Status.ROLLED_BACK and rec.cause is Cause.OUTPUTS_CHANGED:
            raise VerificationError(
                f"pass {rec.name} changed the outputs ({rec.reason}); --strict: nothing written", rec.name
            )


def _opset_hint(model: ModelProto) -> str:
    """onnxruntime implements old operator versions only in part: point at --opset."""
    v = model_io.default_opset(model)
    if v is not None and v < 13:
        return f"; the model is at opset {v}: `--opset 13` converts it to an opset onnxruntime implements"
    return ""


def _timing_feeds(model: ModelProto, verifier: Verifier | None, plan: ShapePlan | None) -> list[tuple[str, dict]]:
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


def _replay_options(opts: Options, replay: Plan) -> Options:
    """The options a plan's passes ran with, nothing timed; the user's shapes win over the plan's."""
    o = replay.options
    shapes = opts.input_shapes or [{k: list(v) for k, v in s.items()} for s in (replay.shapes or {}).get("sets", [])]
    return dataclasses.replace(
        opts,
        passes=list(replay.pipeline),
        skip=(),
        target=o.get("target", opts.target),
        fold_limit=int(o.get("fold_limit", opts.fold_limit)),
        fixed_point=bool(o.get("fixed_point")),
        opset=o.get("opset"),
        time=False,
        input_shapes=shapes,
    )


def _shape_warnings(replay: Plan, opts: Options) -> list[str]:
    """A plan replayed at other shapes than it was decided at: its decisions may not hold there."""
    made = [{k: list(v) for k, v in s.items()} for s in (replay.shapes or {}).get("sets", [])]
    now = shapes_mod.as_sets(opts.input_shapes)
    if not made or now == made:
        return []
    return [
        f"plan {opts.plan} was decided at {' and '.join(shapes_mod.label(s) for s in made)}; replayed at "
        f"{' and '.join(shapes_mod.label(s) for s in now)}: its decisions were not taken at these shapes"
    ]


def _model_identity(path: str | None) -> dict[str, Any]:
    if path is None:
        return {}
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"name": Path(path).name, "sha256": h.hexdigest()}


def _accepts(fn: Callable, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def list_passes() -> list[tuple[str, str, bool]]:
    """(name, summary, in default pipeline) for every registered pass."""
    return [(n, p.summary, n in DEFAULT_PIPELINE) for n, p in REGISTRY.items()]


__all__ = ["Comparator", "Options", "OrtComparator", "Report", "list_passes", "optimize", "resolve_pipeline"]
