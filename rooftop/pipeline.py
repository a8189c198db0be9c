"""One optimize run: load -> passes (each validated) -> final verification -> save -> report data."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
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
    hardware: str = "host"
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

    last_verified: list[Any] = []

    def validate(name: str, candidate: ModelProto, path: str | None) -> Validation:
        data = None if path else candidate.SerializeToString()  # serialized once: checker and onnxruntime
        try:
            model_io.check_model(candidate, f"after {name}", path_on_disk=Path(path) if path else None, data=data)
        except InputError as e:
            return Validation(False, f"onnx.checker rejects the result: {e}")
        if verifier is None or not verifier.available:
            return Validation(True)
        res = verifier.check(candidate, path=path, data=data)
        last_verified[:] = [candidate, res]
        if not res.ok:
            return Validation(False, f"outputs changed: {res.message}", res.max_abs_error, verified=True, extra={"_result": res})
        return Validation(True, max_abs_error=res.max_abs_error, verified=True, extra={"_result": res})

    def after_pass(name: str, candidate: ModelProto) -> Validation:
        if model_io.is_large(candidate):  # write it once; check and run it from disk
            with model_io.materialized(candidate) as path:
                return validate(name, candidate, path)
        return validate(name, candidate, None)

    ctx = PassContext(target=opts.target, fold_limit=opts.fold_limit, channel_multiple=opts.channel_multiple)
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
    if model_path is None:
        # the caller's ModelProto must not change: passes work on a copy
        work = ModelProto()
        work.CopyFrom(original)
    else:
        work = original  # loaded here: nobody else holds it
    del original
    optimized = manager.run(work)
    del work
    for rec in manager.records:
        if rec.status == "rolled back":
            warnings.append(f"pass {rec.name} rolled back: {rec.reason}")

    final: VerifyResult | None = None
    if verifier is not None and verifier.available:
        if last_verified and last_verified[0] is optimized:
            final = last_verified[1]  # the last accepted pass's output was verified as it stands
        elif not any(r.status == "applied" for r in manager.records):
            final = VerifyResult(True, 0.0, message="model unchanged")
        else:
            stage("verifying final model")
            final = after_pass("final", optimized).extra.get("_result") or verifier.check(optimized)
        if not final.ok:
            culprit = next((r.name for r in reversed(manager.records) if r.status == "applied"), None)
            raise VerificationError(f"optimized model diverges from the original after pass {culprit}: {final.message}", culprit)
    if opts.strict:
        for rec in manager.records:
            if rec.status == "rolled back" and rec.reason.startswith("outputs changed"):
                raise VerificationError(f"pass {rec.name} changed the outputs ({rec.reason}); --strict: nothing written", rec.name)

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
    )
    return optimized, report


def list_passes() -> list[tuple[str, str, bool]]:
    """(name, summary, in default pipeline) for every registered pass."""
    return [(n, p.summary, n in DEFAULT_PIPELINE) for n, p in REGISTRY.items()]


def file_size(path: str | os.PathLike[str]) -> int:
    p = Path(path)
    total = p.stat().st_size
    data = p.with_name(p.name + ".data")
    if data.exists():
        total += data.stat().st_size
    return total


__all__ = ["Options", "Report", "optimize", "list_passes", "resolve_pipeline", "onnx"]
