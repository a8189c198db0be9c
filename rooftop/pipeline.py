"""One optimize run: load -> passes (each costed, checked, decided) -> final decision -> save -> report.

Two safety nets, in this order, after every pass that changed the model:

1. the checks (``rooftop.checks``): onnx.checker, then the outputs against the original on the
   run's runtime (and, for a portable model, in OpenVINO); a failure rolls the pass back;
2. the decision (``rooftop.decide``): the pass's output timed against its input at the deploy
   level when it could be slower, and kept or rejected by the stable rule.

Then the final model is timed against the original and backs off while slower; the run's
decisions are recorded as a plan (``rooftop.plan``) that ``--plan`` replays byte for byte.
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
from typing import TYPE_CHECKING, Any

from onnx import ModelProto

from rooftop import model_io, provenance, runtime, runtimes
from rooftop import plan as plan_mod
from rooftop import shapes as shapes_mod
from rooftop.checks import Checks
from rooftop.decide import Judge, OrtComparator, Skip, disagreement, final_latency, in_turn
from rooftop.errors import UsageError, VerificationError, first_line
from rooftop.options import Comparator, Options
from rooftop.passes import (
    DEFAULT_PIPELINE,
    REGISTRY,
    PassContext,
    PassManager,
    PassRecord,
    Validation,
)
from rooftop.plan import Plan
from rooftop.provenance import Source
from rooftop.records import (
    ORT_LEVEL_NAMES,
    Cause,
    CostDelta,
    Latency,
    Status,
)
from rooftop.runtimes.base import Runtime, level_word
from rooftop.shapes import ShapePlan
from rooftop.verify import VerifyResult

if TYPE_CHECKING:
    from rooftop.analysis.hardware import HardwareProfile
    from rooftop.analysis.roofline import Roofline


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
    ops_before: dict[str, int] = field(default_factory=dict)  # op type -> nodes, in the model as given
    ops_after: dict[str, int] = field(default_factory=dict)  # ... and as written
    timestamp: str = ""  # when the run ended (UTC, ISO 8601)
    # where each node came from in the author's code, by node name, where the exporter recorded it
    sources: dict[str, Source] = field(default_factory=dict)
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


class _Run:
    """One optimize run: its checks, its decisions, and the passes between them; each method is a
    step of ``optimize``."""

    def __init__(
        self, original: ModelProto, opts: Options, stage: Callable[[str], None], replay: Plan | None = None
    ) -> None:
        self.original, self.opts, self.stage = original, opts, stage
        self.replay = replay  # a plan replayed: its positions not kept are skipped, its options used
        self.base_skip: Skip = plan_mod.skips(replay) if replay is not None else {}
        self.rt: Runtime = runtimes.get(opts.runtime)  # where verification and decisions are taken
        self.warnings: list[str] = []
        self.hw: HardwareProfile | None = None
        self.checks = Checks(original, opts, self.rt, stage, self.warnings)
        self.judge: Judge | None = None
        self.shapes: ShapePlan | None = None
        self.before: Roofline | None = None
        self.current: ModelProto = original
        self.current_cost: Roofline | None = None
        self.passes_warned = 0  # warnings before the passes ran (those after concern that run of them)
        self.shape_memo: dict = {}  # shapes found by running one model of this run, for the next ones' cost analysis

    # -- prepare ---------------------------------------------------------------------------
    def prepare(self) -> None:
        opts = self.opts
        if opts.analyze:
            from rooftop.analysis import hardware

            self.hw = hardware.get_profile(opts.hardware, progress=lambda s: self.stage(f"measuring this machine: {s}"))
        self.checks.prepare(profile_shapes=self.hw is not None)
        self._shapes_from_references()
        self.shapes = self.checks.decision_shapes()
        self.judge = Judge(self.original, opts, self.rt, self.stage, self.warnings, self.hw)
        self.judge.prepare(self.checks.verifier, self.shapes, str(opts.plan) if self.replay is not None else None)
        if self.hw is not None:
            self.stage("analyzing the original model")
            self.before = self.current_cost = self.cost(self.original)

    @property
    def cost_shapes(self) -> dict:
        """The input shapes the cost figures are computed at: the first decision shape set."""
        return dict(self.shapes.first) if self.shapes is not None else {}

    def _shapes_from_references(self) -> None:
        """The verifier's first reference run was profiled: where it ran at the inputs the cost
        analysis binds, its node output shapes go into the shape memo, and the analysis of the
        original needs no session and run of its own."""
        from rooftop.analysis import costs

        v = self.checks.verifier
        if v is None or not v.node_shapes or not v.sets or v.plan is None:  # (--inputs: the analysis runs its own)
            return
        try:
            bound = costs.bound_inputs(self.original, v.plan.first)
        except Exception:  # noqa: BLE001 - the analysis finds its own shapes
            return
        if {k: tuple(a.shape) for k, a in v.sets[0].feeds.items()} == bound:
            costs.remember(self.shape_memo, self.original, v.node_shapes)
        v.node_shapes = {}

    def cost(self, model: ModelProto) -> Roofline | None:
        from rooftop.analysis import costs, roofline

        try:
            return roofline.roofline(costs.analyze(model, self.cost_shapes, memo=self.shape_memo), self.hw)
        except Exception as e:  # noqa: BLE001 - analysis must never cost the user the model
            self.warnings.append(f"cost analysis failed: {type(e).__name__}: {first_line(e)}")
            return None

    # -- after each pass -------------------------------------------------------------------
    def after_pass(self, name: str, candidate: ModelProto) -> Validation:
        """Cost, checks and measurement of a pass's output. The checks run here only for a pass
        checked on its own: after the pipeline's output failed them (``check_each``), under
        ``--strict``, or when the gate is to time it (no time is spent measuring a model that
        computes something else); the others are checked with the pipeline's output (``verify_output``)."""
        new_cost = self.cost(candidate) if self.hw is not None else None
        v = Validation()
        if self.current_cost is not None and new_cost is not None:
            v.cost = CostDelta(self.current_cost.costs(), new_cost.costs())
        if self.checks.check_each or self.judge.timed_alone(name, self.current, candidate, v):
            self.checks.check(name, candidate, v)
            if not v.ok:
                return v
        self.judge.decide(name, self.current, candidate, v)
        if v.ok:
            self.current, self.current_cost = candidate, new_cost
        return v

    # -- the passes --------------------------------------------------------------------------
    def run_passes(self, names: Sequence[str], skip: Skip, on_start, on_end) -> tuple[ModelProto, list[PassRecord]]:
        opts = self.opts
        ctx = PassContext(
            target=opts.target,
            fold_limit=opts.fold_limit,
            channel_multiple=self._channel_multiple(),
            provider=self._provider(),
            runtime=self._runtime(),
        )
        self.current, self.current_cost, self.checks.last_verified = self.original, self.before, None
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

    def _provider(self) -> str:
        """The onnxruntime execution provider the passes write for (a replayed plan: the one it was
        made for; a plan without one: the CPU provider)."""
        if self.replay is not None:
            return self.replay.options.get("provider") or "CPUExecutionProvider"
        return self.rt.where if self.rt.name == "onnxruntime" else "CPUExecutionProvider"

    def _runtime(self) -> str:
        """The runtime the passes write for (a replayed plan: the one it was made on)."""
        if self.replay is not None:
            return self.replay.options.get("runtime") or "onnxruntime"
        return self.rt.name

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
        if self.checks.check_each or optimized is self.original:
            return optimized, records
        self.checks.check_each = True  # from here on (back-off re-runs too) every pass is checked on its own
        v = Validation()
        why = self.checks.check("the pipeline", optimized, v)
        if not why:
            for r in records:
                if r.status is Status.APPLIED:
                    r.verified = v.verified  # its rewrites are in the model just verified (no error of its own)
            return optimized, records
        del self.warnings[self.passes_warned :]  # they concern a run that is discarded
        self.warnings.append(f"the optimized model {why}: the passes were run again, each checked on its own")
        self.stage("the optimized model failed its checks: running the passes again, each checked on its own")
        return self.run_passes(names, dict(self.base_skip), on_start, on_end)

    def final_decision(self, names, optimized, records, on_start, on_end):
        """The final model against the original; back off (re-running the passes) while slower."""
        optimized, records, lat, dropped = self.judge.final(
            optimized, records, self.base_skip, lambda skip: self.run_passes(names, skip, on_start, on_end)
        )
        if optimized is self.original and dropped:
            self.checks.last_verified = None
        return optimized, records, lat, dropped

    # -- the report ---------------------------------------------------------------------------
    def make_plan(
        self, names: list[str], records: list[PassRecord], model_path: str | None, backed_off: list[str], reverted: bool
    ) -> Plan:
        opts = self.opts
        measured = self.judge.measured
        return Plan(
            pipeline=list(names),
            steps=[plan_mod.step(r, measured) for r in records],
            options={
                "target": opts.target,
                "fold_limit": opts.fold_limit,
                "channel_multiple": self._channel_multiple(),
                "provider": self._provider(),
                "runtime": self._runtime(),
                "fixed_point": opts.fixed_point,
                "opset": opts.opset,
            },
            decided=self.replay.decided
            if self.replay is not None
            else {
                "runtime": self.rt.label,
                "deploy_level": level_word(self.rt, opts.deploy_level),
                "cross_checked": self.checks.cross_checked,
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

    def profile(self, optimized: ModelProto, after: Roofline | None) -> None:
        """Measured per-operator times (ORT_DISABLE_ALL, node names intact) onto the roofline rows."""
        feeds = self.judge.feeds
        if not self.opts.profile_nodes or feeds is None or self.before is None:
            return
        from rooftop.analysis import timing

        self.stage(f"profiling operators ({self.rt.label})")
        try:
            for model, rl in ((self.original, self.before), (optimized, after)):
                if rl is not None:
                    timing.join_measured(rl.rows, self.rt.profile_nodes(model, feeds, threads=self.opts.threads))
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


@dataclass
class _Outcome:
    """How a run ended, for its report."""

    records: list[PassRecord]
    backed_off: list[str]
    final: VerifyResult | None
    after: Roofline | None
    latency: dict[str, Latency]
    disagreement: str
    written: list[str]


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
    given = original
    original, converted = _convert(original, opts, model_path or "model")
    notes += converted

    run = _Run(original, opts, stage, replay)
    run.warnings.extend(notes)
    run.prepare()
    if original is not given:
        run.judge.given = given  # the final model is compared with the model as given
    optimized, records = run.run_passes(names, dict(run.base_skip), on_pass_start, on_pass_end)
    optimized, records = run.verify_output(names, optimized, records, on_pass_start, on_pass_end)
    optimized, records, deploy_lat, backed_off = run.final_decision(
        names, optimized, records, on_pass_start, on_pass_end
    )
    _warn_rollbacks(records, run.warnings)
    final = run.checks.final(optimized, records)
    if opts.strict:
        _strict(records)
    after = run.current_cost if optimized is not original and optimized is not given else run.before
    latency = final_latency(run.judge, optimized, deploy_lat)
    deploy = latency.get(opts.deploy_level)
    disagreed = disagreement(
        run.before,
        after,
        deploy,
        opts.noise_band,
        lambda shrank: run.judge.explain(run.original, optimized, deploy.level, shrank=shrank),
    )
    run.profile(optimized, after)
    run.judge.forget()

    written: list[str] = []
    if output is not None:
        stage("writing model")
        written = [str(p) for p in model_io.save_model(optimized, output, external_data=opts.external_data)]
    outcome = _Outcome(records, backed_off, final, after, latency, disagreed, written)
    return optimized, _report(run, names, model_path, optimized, outcome, t0)


def _report(
    run: _Run, names: list[str], model_path: str | None, optimized: ModelProto, out: _Outcome, t0: float
) -> Report:
    opts, original = run.opts, run.original
    report = Report(
        model_path=model_path,
        output_paths=out.written,
        target=opts.target,
        nodes_before=len(original.graph.node),
        nodes_after=len(optimized.graph.node),
        params_before=count_params(original),
        params_after=count_params(optimized),
        passes=out.records,
        verification=run.checks.describe(),
        final_check=out.final,
        warnings=run.warnings,
        seconds=time.perf_counter() - t0,
        pipeline=names,
        hardware=run.hw,
        before=run.before,
        after=out.after,
        deploy_level=opts.deploy_level,
        latency=out.latency,
        measured=run.judge.measured,
        backed_off=out.backed_off,
        reverted=bool(out.backed_off) and (optimized is original or optimized is run.judge.given),
        disagreement=out.disagreement,
        ort_load_error=run.checks.verifier.load_error if run.checks.verifier is not None else None,
        replayed=str(opts.plan) if opts.plan is not None else None,
        shapes=run.shapes,
        runtime=run.rt.label,
        cross_checked=run.checks.cross_checked,
        ops_before=_op_counts(original),
        ops_after=_op_counts(optimized),
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sources=provenance.index([*original.graph.node, *optimized.graph.node]),
    )
    report.plan = run.make_plan(names, out.records, model_path, out.backed_off, report.reverted)
    return report


def _with_kwargs(opts: Options, kwargs: dict[str, Any]) -> Options:
    """``opts`` with the keyword arguments applied: a copy, the caller's Options stay as they were."""
    unknown = [k for k in kwargs if not hasattr(opts, k)]
    if unknown:
        raise TypeError(f"optimize() got an unexpected keyword argument '{unknown[0]}'")
    return dataclasses.replace(opts, **kwargs)


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


def _op_counts(model: ModelProto) -> dict[str, int]:
    from collections import Counter

    return dict(
        sorted(
            Counter(
                (f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in model.graph.node
            ).items()
        )
    )


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
    return {"name": Path(path).name, "sha256": model_io.file_sha256(path)}


def list_passes() -> list[tuple[str, str, bool]]:
    """(name, summary, in default pipeline) for every registered pass."""
    return [(n, p.summary, n in DEFAULT_PIPELINE) for n, p in REGISTRY.items()]


__all__ = ["Comparator", "Options", "OrtComparator", "Report", "in_turn", "list_passes", "optimize", "resolve_pipeline"]
