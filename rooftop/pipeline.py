"""One optimize run: load -> passes (each validated) -> final verification -> save -> report data."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnx import ModelProto

from rooftop import model_io
from rooftop.errors import InputError, UsageError, VerificationError
from rooftop.passes import DEFAULT_PIPELINE, REGISTRY, PassContext, PassManager, PassRecord, Validation
from rooftop.verify import Verifier, VerifyResult


@dataclass
class Options:
    passes: Sequence[str] | None = None
    skip: Sequence[str] = ()
    target: str = "portable"
    fold_limit: int = 1 << 20
    channel_multiple: int | None = None
    hardware: str = "host"  # a built-in profile name, "host" (measured), or a JSON file
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
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
    time: bool = True  # onnxruntime latency per pass and for the final model
    time_budget: float = 1.0  # seconds of interleaved timing per comparison
    threads: int = 0  # onnxruntime intra-op threads for timing (0: physical cores)
    profile_nodes: bool = True  # per-operator times from onnxruntime's profiler


@dataclass
class Report:
    """Everything an optimize run learned; renderers in rooftop.analysis.report turn it into text."""

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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(r.status == "applied" and r.rewrites > 0 for r in self.passes)


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


@dataclass
class _State:
    current: ModelProto | None = None
    current_cost: Any = None
    last_verified: tuple[ModelProto, VerifyResult] | None = None


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
    opts = options or Options()
    for k, v in kwargs.items():
        if not hasattr(opts, k):
            raise TypeError(f"optimize() got an unexpected keyword argument '{k}'")
        setattr(opts, k, v)
    stage = on_stage or (lambda s: None)
    t0 = time.perf_counter()
    names = resolve_pipeline(opts.passes, opts.skip)
    if opts.target not in ("portable", "onnxruntime"):
        raise UsageError(f"--target must be 'portable' or 'onnxruntime', got '{opts.target}'")

    model_path = None
    if isinstance(model_or_path, ModelProto):
        original = model_or_path
    else:
        model_path = str(model_or_path)
        if output is not None:
            model_io.check_output_path(output, model_path, force=opts.force)
        stage("loading model")
        original = model_io.load_model(model_path)
    if output is not None and model_path is None:
        model_io.check_output_path(output, None)

    warnings: list[str] = []
    hw = None
    if opts.analyze:
        from rooftop.analysis import hardware

        hw = hardware.get_profile(opts.hardware, progress=lambda s: stage(f"measuring this machine: {s}"))
    verifier: Verifier | None = None
    if opts.verify:
        stage("computing reference outputs")
        verifier = Verifier(
            original, input_shapes=opts.input_shapes, inputs_npz=opts.inputs_npz, rtol=opts.rtol, atol=opts.atol
        )
        if not verifier.available:
            warnings.append(f"verification skipped: {verifier.reason}")
        warnings.extend(verifier.notes)
    else:
        warnings.append("verification disabled (--no-verify): outputs were not compared")

    feeds = _timing_feeds(original, verifier, opts) if opts.time else None
    if opts.time and feeds is None:
        warnings.append("timing skipped: onnxruntime cannot run the model")

    def cost(model: ModelProto):
        from rooftop.analysis import costs, roofline

        try:
            return roofline.roofline(costs.analyze(model, opts.input_shapes), hw)
        except Exception as e:  # noqa: BLE001 - analysis must never cost the user the model
            warnings.append(f"cost analysis failed: {type(e).__name__}: {e}")
            return None

    state = _State()
    if hw is not None:
        stage("analyzing the original model")
        state.current_cost = cost(original)
    before_cost = state.current_cost

    def validate(name: str, candidate: ModelProto, path: str | None) -> Validation:
        data = None if path else candidate.SerializeToString()  # serialized once: checker and onnxruntime
        try:
            model_io.check_model(candidate, f"after {name}", path_on_disk=Path(path) if path else None, data=data)
        except InputError as e:
            return Validation(False, f"onnx.checker rejects the result: {e}")
        if verifier is None or not verifier.available:
            return Validation(True)
        res = verifier.check(candidate, path=path, data=data)
        state.last_verified = (candidate, res)
        if not res.ok:
            return Validation(False, f"outputs changed: {res.message}", res.max_abs_error, verified=True)
        return Validation(True, max_abs_error=res.max_abs_error, verified=True)

    def after_pass(name: str, candidate: ModelProto) -> Validation:
        if model_io.is_large(candidate):  # write it once; check and run it from disk
            with model_io.materialized(candidate) as path:
                v = validate(name, candidate, path)
        else:
            v = validate(name, candidate, None)
        if not v.ok:
            return v
        if hw is not None:
            stage(f"analyzing after {name}")
            new_cost = cost(candidate)
            v.extra.update(_cost_delta(state.current_cost, new_cost))
            state.current_cost = new_cost
        if feeds is not None and state.current is not None:
            stage(f"timing {name} (interleaved, ORT_DISABLE_ALL)")
            v.extra.update(_latency(state.current, candidate, feeds, opts, "disable"))
        state.current = candidate
        return v

    ctx = PassContext(target=opts.target, fold_limit=opts.fold_limit, channel_multiple=opts.channel_multiple, hardware=hw)
    manager = PassManager(
        [REGISTRY[n]() for n in names],
        ctx,
        after_pass,
        fixed_point=opts.fixed_point,
        on_start=on_pass_start,
        on_end=on_pass_end,
        debug=opts.debug,
    )
    nodes_before, params_before = len(original.graph.node), count_params(original)
    # Passes never change the model they are given (tests/test_pipeline.py checks it byte for
    # byte), so the caller's model is the first state and needs no copy.
    state.current = original
    original_for_timing = original if feeds is not None else None  # the final timing compares against it
    optimized = manager.run(original)
    del original
    _fill_unchanged_costs(manager.records, before_cost)
    for rec in manager.records:
        if rec.status == "rolled back":
            warnings.append(f"pass {rec.name} rolled back: {rec.reason}")

    final: VerifyResult | None = None
    if verifier is not None and verifier.available:
        if state.last_verified and state.last_verified[0] is optimized:
            final = state.last_verified[1]  # the last accepted pass's output was verified as it stands
        elif not any(r.status == "applied" for r in manager.records):
            final = VerifyResult(True, 0.0, message="model unchanged")
        else:
            stage("verifying final model")
            final = verifier.check(optimized)
        if not final.ok:
            culprit = next((r.name for r in reversed(manager.records) if r.status == "applied"), None)
            raise VerificationError(f"optimized model diverges from the original after pass {culprit}: {final.message}", culprit)
    if opts.strict:
        for rec in manager.records:
            if rec.status == "rolled back" and rec.reason.startswith("outputs changed"):
                raise VerificationError(f"pass {rec.name} changed the outputs ({rec.reason}); --strict: nothing written", rec.name)

    extra: dict[str, Any] = {}
    if hw is not None:
        extra["_hardware"] = hw
        extra["_before"] = before_cost
        extra["_after"] = state.current_cost
    if feeds is not None and original_for_timing is not None:
        lat: dict[str, Any] = {}
        for level in ("disable", "all"):
            stage(f"timing the final model against the original ({'ORT_DISABLE_ALL' if level == 'disable' else 'ORT_ENABLE_ALL'})")
            lat[level] = _latency(original_for_timing, optimized, feeds, opts, level, budget_factor=2.0)
        extra["latency"] = lat
        if opts.profile_nodes and hw is not None:
            from rooftop.analysis import timing

            stage("profiling operators (onnxruntime profiler)")
            try:
                for key, model in (("_before", original_for_timing), ("_after", optimized)):
                    rl = extra.get(key)
                    if rl is not None:
                        times = timing.profile_nodes(model, feeds, threads=opts.threads)
                        timing.join_measured(rl.rows, times)
            except Exception as e:  # noqa: BLE001
                warnings.append(f"operator profiling failed: {e}")
    del original_for_timing

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
        passes=manager.records,
        verification=verifier.describe() if verifier is not None else "verification disabled",
        final_check=final,
        warnings=warnings,
        seconds=time.perf_counter() - t0,
        pipeline=names,
        extra=extra,
    )
    return optimized, report


def _timing_feeds(model: ModelProto, verifier: Verifier | None, opts: Options) -> dict | None:
    if verifier is not None and verifier.available and verifier.sets:
        return verifier.sets[0].feeds
    from rooftop.verify import bind_shapes, graph_inputs, make_session, random_inputs

    try:
        specs = graph_inputs(model)
        feeds = random_inputs(specs, bind_shapes(specs, opts.input_shapes, 1, 32), seed=0)
        make_session(model).run(None, feeds)
        return feeds
    except Exception:  # noqa: BLE001
        return None


def _latency(a: ModelProto, b: ModelProto, feeds: dict, opts: Options, level: str, budget_factor: float = 1.0) -> dict:
    from rooftop.analysis import timing

    try:
        c = timing.compare(a, b, feeds, level=level, threads=opts.threads, budget_s=opts.time_budget * budget_factor)
    except Exception as e:  # noqa: BLE001
        return {"latency_error": str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}
    d = c.as_dict()
    return {
        "latency_ms_before": d["latency_ms_before"],
        "latency_ms_after": d["latency_ms_after"],
        "latency_spread": [d["ratio_q1"], d["ratio_q3"]],
        "latency_ratio": d["ratio"],
        "latency_verdict": d["verdict"],
        "latency_rounds": d["rounds"],
        "ort_level": d["level"],
        "threads": d["threads"],
    }


def _cost_delta(before, after) -> dict:
    if before is None or after is None:
        return {}
    return {
        "flops_before": before.flops,
        "flops_after": after.flops,
        "int_ops_before": before.int_ops,
        "int_ops_after": after.int_ops,
        "bytes_before": before.bytes,
        "bytes_after": after.bytes,
        "predicted_s_before": before.predicted_s,
        "predicted_s_after": after.predicted_s,
    }


def _fill_unchanged_costs(records: list[PassRecord], start) -> None:
    """Passes that changed nothing (or were rolled back) leave the figures as they were."""
    current = start
    for r in records:
        if "flops_after" in r.extra:
            current = r.extra
            continue
        if current is None:
            continue
        if isinstance(current, dict):
            vals = {k.replace("_after", ""): current[k] for k in current if k.endswith("_after") and not k.startswith("latency")}
        else:
            vals = {"flops": current.flops, "int_ops": current.int_ops, "bytes": current.bytes, "predicted_s": current.predicted_s}
        for k, v in vals.items():
            r.extra.setdefault(f"{k}_before", v)
            r.extra.setdefault(f"{k}_after", v)


def list_passes() -> list[tuple[str, str, bool]]:
    """(name, summary, in default pipeline) for every registered pass."""
    return [(n, p.summary, n in DEFAULT_PIPELINE) for n, p in REGISTRY.items()]


__all__ = ["Options", "Report", "optimize", "list_passes", "resolve_pipeline"]
