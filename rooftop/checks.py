"""The checks a candidate model goes through: onnx.checker, then its outputs against the original's
on the run's runtime (``rooftop.verify``), then, for a portable model, the same in a second runtime.

The pipeline's output is checked once, at every input size; only a pass the gate is about to
time, every pass under ``--strict``, and every pass of a re-run after the output failed, is
checked on its own (``check_each``). A failure names its cause for the pass manager's record.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from onnx import ModelProto

from rooftop import model_io, runtime, runtimes
from rooftop import shapes as shapes_mod
from rooftop.decide import INTERLEAVE_UP_TO
from rooftop.errors import InputError, UsageError, VerificationError
from rooftop.options import Options
from rooftop.passes import Validation
from rooftop.records import Cause, PassRecord, Status
from rooftop.runtimes.base import Runtime
from rooftop.shapes import ShapePlan
from rooftop.verify import Verifier, VerifyResult


class Checks:
    """Reference outputs of the original (one runtime, and a second for portable models) and the
    check every candidate goes through."""

    def __init__(
        self, original: ModelProto, opts: Options, rt: Runtime, stage: Callable[[str], None], warnings: list[str]
    ) -> None:
        self.original, self.opts, self.rt, self.stage, self.warnings = original, opts, rt, stage, warnings
        self.verifier: Verifier | None = None
        self.cross: Verifier | None = None  # a second runtime a portable output must load and match in
        self.last_verified: tuple[ModelProto, VerifyResult] | None = None  # (a model, its check at every size)
        # the pipeline's output is checked against the original at every input size; only if it
        # differs are the passes run again, each pass's output checked on its own
        self.check_each = opts.strict  # --strict: a pass that changes the outputs is found and named, whatever else

    @property
    def cross_checked(self) -> str | None:
        return self.cross.where if self.cross is not None and self.cross.available else None

    def prepare(self, profile_shapes: bool) -> None:
        """The reference outputs (``profile_shapes``: the first run profiled for the cost model)."""
        opts = self.opts
        if not opts.verify:
            self.warnings.append("verification disabled (--no-verify): outputs were not compared")
            return
        self.stage("computing reference outputs")
        self.verifier = Verifier(
            self.original,
            input_shapes=opts.input_shapes,
            inputs_npz=opts.inputs_npz,
            rtol=opts.rtol,
            atol=opts.atol,
            shapes=profile_shapes,
            runtime=None if self.rt.label == "onnxruntime" else self.rt,
        )
        self._cross_check()
        if not self.verifier.available:
            self.warnings.append(f"verification skipped: {self.verifier.reason}{_opset_hint(self.original)}")
        self.warnings.extend(self.verifier.notes)

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
        self.warnings.extend(self.cross.notes)

    def decision_shapes(self) -> ShapePlan | None:
        """The shape sets decisions are taken at: as the verifier ran them, else planned here."""
        v = self.verifier
        if v is not None and v.plan is not None:
            return v.plan
        if v is not None and v.sets:  # --inputs: the user's arrays
            return ShapePlan([{k: tuple(a.shape) for k, a in v.sets[0].feeds.items()}], given=list(v.sets[0].feeds))
        try:
            return shapes_mod.plan(runtime.graph_inputs(self.original), self.opts.input_shapes)
        except InputError:
            return None

    def describe(self) -> str:
        return self.verifier.describe() if self.verifier is not None else "verification disabled"

    # -- a candidate -----------------------------------------------------------------------
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
        if res.refused:
            v.cause, v.reason = Cause.INVALID, res.message
            return f"was refused ({res.message})"
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
                v.cause = Cause.INVALID if other.refused else Cause.OUTPUTS_CHANGED
                v.reason = other.message if other.refused else f"outputs changed in {cross.where}: {other.message}"
                return f"failed in {cross.where} ({other.message})"
        self.last_verified = (candidate, res)
        return ""

    def final(self, optimized: ModelProto, records: list[PassRecord]) -> VerifyResult | None:
        """The written model's check (at every size): the one it had, or one now."""
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


def _opset_hint(model: ModelProto) -> str:
    """onnxruntime implements old operator versions only in part: point at --opset."""
    v = model_io.default_opset(model)
    if v is not None and v < 13:
        return f"; the model is at opset {v}: `--opset 13` converts it to an opset onnxruntime implements"
    return ""


__all__ = ["Checks"]
