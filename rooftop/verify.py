"""Numerical equivalence of two models in onnxruntime: the safety net of every pass.

The original model is run once per input set to get reference outputs; every
candidate (the graph after a pass, the final model) is run on the same inputs
with onnxruntime's graph optimizations disabled, so what is compared is our
rewrite and not onnxruntime's. Float outputs must satisfy
``|got - ref| <= atol + rtol * (|ref| + rms(ref))`` element-wise, where ``rms(ref)``
is the root mean square of the whole output: an element near zero is held to the
output's own scale, since a sum reassociated by folding or fusion moves it by
rounding at the scale of its terms, not of its result (GPT-2 logits: 1 element in
128,000 failed ``atol + rtol·|ref|`` after onnxsim's constant folding alone). NaN
where the reference has NaN; integer outputs of a QuantizeLinear must be within one quantization step;
other integer and bool outputs must be exactly equal. A model with dynamic axes
is checked at two sizes of each dynamic axis.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto

from rooftop.errors import InputError, first_line
from rooftop.limits import LARGE_WEIGHT_BYTES
from rooftop.model_io import release_memory, weights_nbytes
from rooftop.runtime import (
    graph_inputs,
    index_bounds,
    is_dynamic,
    make_session,
    named_for_profiler,
    output_shapes,
    profile_runs,
    random_inputs,
    run_model,
)
from rooftop.runtimes.base import Runtime
from rooftop.shapes import IMAGE_SIDE, ShapePlan, bind_sizes, image_alternatives
from rooftop.shapes import plan as shapes_plan

# (batch, other dynamic dims) tried in turn until the original runs: 1-D windows and reflect pads
# (audio models) need long axes, most models run at the first
CANDIDATE_SIZES = [(1, 32), (1, 224), (1, 64), (1, 16), (1, 8), (1, 128), (1, 1), (1, 1024), (1, 16000)]


@dataclass
class OutputCheck:
    name: str
    ok: bool
    max_abs_error: float
    reason: str = ""


@dataclass
class VerifyResult:
    ok: bool
    max_abs_error: float
    outputs: list[OutputCheck] = field(default_factory=list)
    message: str = ""
    skipped: bool = False
    refused: bool = False  # the runtime could not load or run the candidate (not a numerical difference)

    def summary(self) -> str:
        if self.skipped:
            return f"skipped: {self.message}"
        if self.ok:
            return f"ok (max abs error {self.max_abs_error:.3g})"
        return f"FAILED: {self.message}"


def quantized_outputs(model: ModelProto) -> set[str]:
    """Graph outputs produced by QuantizeLinear: compared within one quantization step."""
    return {o for n in model.graph.node if n.op_type == "QuantizeLinear" for o in n.output}


LIPSCHITZ_1 = {
    "Tanh",
    "Sigmoid",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Identity",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Dropout",
    "MaxPool",
    "GlobalMaxPool",
    "Softsign",
    "HardSigmoid",
}


def dequantized_output_steps(model: ModelProto) -> dict[str, float]:
    """Float graph outputs that come out of a DequantizeLinear with a constant scale — directly or
    through ops that never stretch a difference (Tanh, Sigmoid, Relu, Clip, reshapes ...) — are
    compared within one quantization step of that scale: integer kernels round once where the
    float path rounds twice."""
    from onnx import numpy_helper

    consts = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    producers = {o: n for n in model.graph.node for o in n.output}
    steps = {}
    for out in model.graph.output:
        t, n = out.name, producers.get(out.name)
        # walk back through elementwise ops that never stretch a difference (1-Lipschitz)
        while n is not None and n.op_type in LIPSCHITZ_1 and n.input:
            if n.op_type == "LeakyRelu" and any(a.name == "alpha" and abs(a.f) > 1 for a in n.attribute):
                break
            t = n.input[0]
            n = producers.get(t)
        if n is not None and n.op_type == "DequantizeLinear" and len(n.input) > 1 and n.input[1] in consts:
            steps[out.name] = float(np.max(np.abs(numpy_helper.to_array(consts[n.input[1]]))))
    return steps


def compare_outputs(
    ref: Mapping[str, np.ndarray],
    got: Mapping[str, np.ndarray],
    *,
    rtol: float,
    atol: float,
    quantized: set[str] = frozenset(),  # type: ignore[assignment]
    steps: dict[str, float] | None = None,
) -> VerifyResult:
    checks: list[OutputCheck] = []
    for name, r in ref.items():
        if name not in got:
            checks.append(OutputCheck(name, False, float("inf"), "output missing"))
            continue
        g = np.asarray(got[name])
        r = np.asarray(r)
        if g.shape != r.shape:
            checks.append(OutputCheck(name, False, float("inf"), f"shape {g.shape} != {r.shape}"))
            continue
        if g.dtype != r.dtype:
            checks.append(OutputCheck(name, False, float("inf"), f"dtype {g.dtype} != {r.dtype}"))
            continue
        if r.size == 0:
            checks.append(OutputCheck(name, True, 0.0))
            continue
        if r.dtype.kind in "fc":
            step = (steps or {}).get(name)
            if step:
                checks.append(_compare_float(name, r, g, 0.0, max(atol, step * 1.0001)))
            else:
                checks.append(_compare_float(name, r, g, rtol, atol))
        elif r.dtype.kind in "iu":
            diff = np.abs(g.astype(np.int64) - r.astype(np.int64))
            max_abs = float(diff.max())
            tol = 1 if name in quantized else 0
            n_bad = int((diff > tol).sum())
            what = "one quantization step" if tol else "exact equality"
            checks.append(
                OutputCheck(name, n_bad == 0, max_abs, f"{n_bad} of {r.size} elements beyond {what}" if n_bad else "")
            )
        else:
            eq = bool(np.array_equal(g, r))
            checks.append(OutputCheck(name, eq, 0.0 if eq else float("inf"), "" if eq else "values differ"))
    ok = all(c.ok for c in checks)
    max_abs = max((c.max_abs_error for c in checks), default=0.0)
    msg = "; ".join(f"output '{c.name}': {c.reason}" for c in checks if not c.ok)
    return VerifyResult(ok, max_abs, checks, msg)


def _compare_float(name: str, r: np.ndarray, g: np.ndarray, rtol: float, atol: float) -> OutputCheck:
    """|g - r| <= atol + rtol * (|r| + rms(r)) element-wise; NaN must match NaN, +-inf must match exactly."""
    if np.array_equal(r, g):  # most rewrites leave outputs bit for bit (NaNs take the long way)
        return OutputCheck(name, True, 0.0, "")
    wide = np.float64 if r.dtype.itemsize > 4 or r.dtype.kind == "c" else np.float32
    r_ = r.astype(wide, copy=False)
    g_ = g.astype(wide, copy=False)
    finite_r = np.isfinite(r_)
    all_finite = bool(finite_r.all())
    kept = r_ if all_finite else r_[finite_r]
    scale = float(np.sqrt(np.mean(np.square(kept, dtype=np.float64)))) if kept.size else 0.0
    if all_finite and np.isfinite(g_).all():
        diff = np.abs(g_ - r_)
        bad = diff > (atol + rtol * (np.abs(r_) + scale))
        n_bad = int(np.count_nonzero(bad))
        max_abs = float(diff.max())
    else:
        nan_r, nan_g = np.isnan(r_), np.isnan(g_)
        if not np.array_equal(nan_r, nan_g):
            return OutputCheck(name, False, float("nan"), "NaN pattern differs")
        inf_r = np.isinf(r_)
        if not np.array_equal(g_[inf_r], r_[inf_r]):
            return OutputCheck(name, False, float("inf"), "infinities differ")
        fin = finite_r
        diff = np.abs(g_[fin] - r_[fin])
        n_bad = int(np.count_nonzero(~np.isfinite(diff) | (diff > atol + rtol * (np.abs(r_[fin]) + scale))))
        max_abs = float(diff.max()) if diff.size else 0.0
    reason = (
        f"{n_bad} of {r.size} elements beyond rtol={rtol:g} atol={atol:g} (output rms {scale:.3g})" if n_bad else ""
    )
    return OutputCheck(name, n_bad == 0, max_abs, reason)


@dataclass
class InputSet:
    label: str
    feeds: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    decides: bool = False  # a shape set decisions are taken at (timed); the others only check the outputs


class Verifier:
    """Reference outputs of the original model, and the check every candidate goes through."""

    def __init__(
        self,
        original: ModelProto,
        *,
        input_shapes: Mapping[str, Sequence[int]] | Sequence[Mapping[str, Sequence[int]]] | None = None,
        inputs_npz: str | os.PathLike[str] | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        seed: int = 0,
        shapes: bool = False,
        runtime: Runtime | None = None,
        feeds_from: Verifier | None = None,
    ) -> None:
        self.rtol, self.atol = rtol, atol
        # where the models run (onnxruntime's CPU provider unless told); ``feeds_from``: another
        # verifier whose inputs this one runs too (a second runtime checks the same inputs)
        self.runtime = runtime
        self.feeds_from = feeds_from
        # ``shapes``: the reference run at the first size is profiled, and each node's output shapes
        # kept (node name -> (element type, shape) per output) for the cost analysis, which would
        # otherwise build a session of the original and run it again
        self.shapes = shapes
        self.plan: ShapePlan | None = None  # the shape sets decisions are taken at (None: user inputs, or no spec)
        self.node_shapes: dict[str, list[tuple[str, list[int]]]] = {}
        self.sets: list[InputSet] = []
        self.notes: list[str] = []
        self.available = True
        self.reason = ""
        self.load_error: str | None = (
            None  # onnxruntime's refusal of the original; "" once it loaded it; None: not tried
        )
        self.quantized = quantized_outputs(original)
        self.steps = dequantized_output_steps(original)
        self.ort_distance: dict[str, float] = {}
        big = (
            weights_nbytes(original) >= LARGE_WEIGHT_BYTES
        )  # (a garbage collection costs 20 ms: for models where memory counts)
        self._references(original, input_shapes, inputs_npz, seed)
        # a runtime whose check sessions run otherwise than it deploys (OpenVINO: f32, accuracy
        # mode) must also compile a candidate as deployed, where it compiles the original so
        self.deployable = self.available and not self._ort and self._compiles(original) == ""
        if big:
            release_memory()  # the reference session is gone before the next is built
        if self.available and self._ort:
            self._ort_distance(original)
        self._tol = self.tolerances()
        if big:
            release_memory()

    @property
    def _ort(self) -> bool:
        return (
            self.runtime is None or self.runtime.name == "onnxruntime" and self.runtime.where == "CPUExecutionProvider"
        )

    @property
    def where(self) -> str:
        return "onnxruntime" if self.runtime is None else self.runtime.label

    def _load(self, model, **kw):
        if self._ort:
            return make_session(model, prepack=False, **kw)
        kw.pop("profile_prefix", None)
        return self.runtime.load(model, **kw)

    def _references(self, original: ModelProto, input_shapes, inputs_npz, seed: int) -> None:
        if self.feeds_from is not None:
            self._same_inputs(original)
            return
        try:
            specs = graph_inputs(original)
        except InputError as e:
            self._unavailable(str(e))
            return
        plan = shapes_plan(specs, input_shapes)
        with tempfile.TemporaryDirectory(prefix="rooftop-prof-") as d:
            try:
                with named_for_profiler(original):
                    session = self._load(
                        original, profile_prefix=os.path.join(d, "p") if self.shapes and self._ort else None
                    )
            except Exception as e:  # noqa: BLE001 - custom ops, unsupported opsets...
                self.load_error = first_line(e)
                self._unavailable(f"{self.where} cannot run the original model ({self.load_error})")
                return
            self.load_error = ""
            self._reference_sets(original, session, specs, plan, inputs_npz, seed)
            del session  # (a profiling session writes its file when it goes, while the folder is there)

    def _reference_sets(self, original, session, specs, plan: ShapePlan, inputs_npz, seed: int) -> None:
        if inputs_npz is not None:
            feeds = _load_npz(inputs_npz, specs)
            self.sets.append(
                InputSet("user inputs", feeds, self._run(original, feeds, session, "user inputs"), decides=True)
            )
            return
        highs = index_bounds(original)
        first_err = self._decision_sets(original, session, specs, plan, highs, seed)
        if self.shapes and self.sets and self._ort:
            runs = profile_runs(session.end_profiling())
            self.node_shapes = output_shapes(runs[0]) if runs else {}
        if not self.sets:
            self._unavailable(
                f"the original model does not run on generated inputs ({first_line(first_err)}); "
                "bind dynamic dims with --input-shape or give --inputs data.npz"
            )
            return
        self.plan = plan
        if is_dynamic(specs):
            self._second_size(original, session, specs, highs, seed + 1)

    def _decision_sets(self, original, session, specs, plan: ShapePlan, highs, seed: int) -> Exception | None:
        """The reference outputs at every shape set of ``plan``. A set the user gave must run; when
        the realistic defaults do not, sizes are tried in turn (a window or a padding may need a
        long enough axis) and the first the original runs at replaces them (``plan.fallback``)."""
        for i, shapes in enumerate(plan.sets):
            try:
                feeds = random_inputs(specs, shapes, seed + 2 * i, highs)
                ref = _outputs(original, feeds, session)
            except Exception as e:
                if plan.given and not plan.defaulted:
                    raise InputError(
                        f"the original model does not run at --input-shape {_label(shapes)}: {first_line(e)}"
                    ) from e
                return self._fallback(original, session, specs, plan, highs, seed, e)
            self.sets.append(InputSet(_label(shapes), feeds, ref, decides=True))
        return None

    def _fallback(self, original, session, specs, plan: ShapePlan, highs, seed: int, why: Exception) -> Exception:
        for shapes, defaulted in image_alternatives(plan):  # an OCR recognizer's text line, before the small sizes
            try:
                feeds = random_inputs(specs, shapes, seed, highs)
                ref = _outputs(original, feeds, session)
            except Exception:  # noqa: BLE001
                continue
            self.sets.append(InputSet(_label(shapes), feeds, ref, decides=True))
            plan.sets, plan.defaulted = [dict(shapes)], defaulted
            plan.fallback = f"the original does not run at {IMAGE_SIDE}×{IMAGE_SIDE} ({first_line(why)[:100]})"
            return why
        for batch, other in CANDIDATE_SIZES if is_dynamic(specs) else []:
            shapes = bind_sizes(specs, {k: plan.first[k] for k in plan.given}, batch, other)
            try:
                feeds = random_inputs(specs, shapes, seed, highs)
                ref = _outputs(original, feeds, session)
            except Exception:  # noqa: BLE001
                continue
            self.sets.append(InputSet(_label(shapes), feeds, ref, decides=True))
            plan.sets = [dict(shapes)]
            plan.defaulted = [
                dataclasses.replace(d, value=shapes[d.input][d.axis], why="first size the model runs at")
                for d in plan.defaulted
            ]
            plan.fallback = f"the original does not run at the realistic defaults ({first_line(why)[:100]})"
            return why
        return why

    def _second_size(self, original, session, specs, highs, seed: int) -> None:
        """A second size of every dynamic axis: dynamic axes must stay dynamic. Twice the batch and
        half the other dims first (half the work of the first size: an image model's ×2 on height
        and width would be 8×); then doubled, for models that need their other dims whole."""
        first = {s.name: self.sets[0].feeds[s.name].shape for s in specs}
        given = {tuple(x.feeds[s.name].shape for s in specs) for x in self.sets}
        for bmul, omul in ((2, 0.5), (2, 2), (2, 1), (1, 2)):
            shapes2 = _scaled(specs, first, bmul, omul)
            if shapes2 is None or shapes2 == first or tuple(shapes2[s.name] for s in specs) in given:
                continue
            try:
                feeds = random_inputs(specs, shapes2, seed, highs)
                ref = _outputs(original, feeds, session)
            except Exception:  # noqa: BLE001
                continue
            self.sets.append(InputSet(_label(shapes2), feeds, ref))
            return
        self.notes.append("dynamic model verified at one size only: the original does not run at a second size")

    def _ort_distance(self, original: ModelProto) -> None:
        """For quantized models: how far onnxruntime's own ORT_ENABLE_ALL execution of the original
        lands from the float-emulated reference (its integer kernels round once where the
        emulation rounds twice). A rewrite may drift as far as that, with a 10% margin."""
        if not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in original.graph.node):
            return
        try:
            sess = make_session(original, optimization="all")
            for s in self.sets:
                got = run_model(original, s.feeds, sess)
                for name, ref in s.reference.items():
                    r, g = np.asarray(ref), np.asarray(got.get(name))
                    if (
                        r.dtype.kind == "f"
                        and g.shape == r.shape
                        and r.size
                        and np.isfinite(r).all()
                        and np.isfinite(g).all()
                    ):
                        d = float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
                        self.ort_distance[name] = max(self.ort_distance.get(name, 0.0), d)
        except Exception:  # noqa: BLE001 - without it, the one-step rule alone applies
            self.ort_distance.clear()

    def tolerances(self) -> dict[str, float]:
        """Absolute tolerance per float output of a quantized model: one quantization step of the
        output's DequantizeLinear, or 1.1x onnxruntime's own distance, whichever is larger."""
        names = set(self.steps) | set(self.ort_distance)
        return {n: max(self.steps.get(n, 0.0), 1.1 * self.ort_distance.get(n, 0.0)) for n in names}

    def _same_inputs(self, original: ModelProto) -> None:
        """The references of ``feeds_from``'s inputs, run here."""
        try:
            session = self._load(original)
        except Exception as e:  # noqa: BLE001
            self.load_error = first_line(e)
            self._unavailable(f"{self.where} cannot load the original model ({self.load_error})")
            return
        self.load_error = ""
        self.plan = self.feeds_from.plan
        failed = []
        for s in self.feeds_from.sets:  # the sizes this runtime runs the original at (it may refuse one)
            try:
                ref = _outputs(original, s.feeds, session)
            except Exception as e:  # noqa: BLE001
                failed.append(f"{s.label} ({first_line(e)[:80]})")
                continue
            self.sets.append(InputSet(s.label, s.feeds, ref, s.decides))
        if not self.sets:
            self._unavailable(f"{self.where} cannot run the original model on " + "; ".join(failed))
        elif failed:
            self.notes.append(
                f"checked in {self.where} at {', '.join(s.label for s in self.sets)} only: "
                f"it does not run the original at {'; '.join(failed)}"
            )

    def _compiles(self, model: ModelProto, path: str | None = None, data: bytes | None = None) -> str:
        """'' when the runtime compiles ``model`` with the settings it is timed and deployed with
        (OpenVINO's default precision and latency hint), else its error."""
        try:
            self.runtime.load(model, path=path, data=data, timing=True)
        except Exception as e:  # noqa: BLE001 - whatever the runtime raises
            return first_line(e)
        return ""

    def _unavailable(self, reason: str) -> None:
        self.available = False
        self.reason = reason

    def _run(self, model, feeds, session, label):
        try:
            return _outputs(model, feeds, session)
        except Exception as e:
            raise InputError(f"the original model does not run on {label}: {first_line(e)}") from e

    def describe(self) -> str:
        if not self.available:
            return f"verification skipped: {self.reason}"
        text = "verified on " + " and ".join(s.label for s in self.sets)
        if not self._ort:
            text += f" in {self.where}"
        if self.ort_distance:
            d = max(self.ort_distance.values())
            step = max(self.steps.values(), default=0.0)
            text += (
                f" (quantized outputs: within one step {step:.3g} or 1.1× onnxruntime ENABLE_ALL's own distance "
                f"from the reference, {d:.3g})"
            )
        return text

    def check(self, candidate: ModelProto, path: str | None = None, data: bytes | None = None) -> VerifyResult:
        """Compare ``candidate`` (or the same model already serialized as ``data`` or written at ``path``)
        with the references."""
        if not self.available:
            return VerifyResult(True, 0.0, message=self.reason, skipped=True)
        try:
            session = self._load(candidate, path=path, data=data)
        except Exception as e:  # noqa: BLE001
            return _refused(f"{self.where} cannot load the rewritten model: {first_line(e)}")
        why = self._compiles(candidate, path=path, data=data) if self.deployable else ""
        if why:
            return _refused(f"{self.where} cannot load the rewritten model as deployed: {why}")
        worst = VerifyResult(True, 0.0)
        for s in self.sets:
            try:
                got = _outputs(candidate, s.feeds, session)
            except Exception as e:  # noqa: BLE001
                return _refused(f"{self.where} fails on {s.label}: {first_line(e)}")
            res = compare_outputs(
                s.reference, got, rtol=self.rtol, atol=self.atol, quantized=self.quantized, steps=self._tol
            )
            if not res.ok:
                res.message = f"on {s.label}: {res.message}"
                return res
            if res.max_abs_error >= worst.max_abs_error:
                worst = res
        return worst


def _refused(message: str) -> VerifyResult:
    """The runtime could not load or run the candidate."""
    return VerifyResult(False, float("inf"), message=message, refused=True)


def _outputs(model: ModelProto, feeds, session) -> dict[str, np.ndarray]:
    """One run's outputs: an onnxruntime InferenceSession, or a runtime's session."""
    if hasattr(session, "get_outputs"):
        return run_model(model, feeds, session)
    return session.run(feeds)


def _scaled(specs, first, bmul, omul) -> dict[str, tuple[int, ...]] | None:
    """The first shapes with each dynamic axis scaled (the first by ``bmul``, the others by ``omul``);
    None when a dim does not halve into a different whole size (odd, or 1)."""
    shapes = {}
    for s in specs:
        dims = []
        for i, (d, v) in enumerate(zip(s.shape, first[s.name])):
            m = bmul if i == 0 else omul
            if isinstance(d, int) or m == 1:
                dims.append(v)
            elif m < 1 and (v % 2 or v < 2):
                return None
            else:
                dims.append(int(v * m))
        shapes[s.name] = tuple(dims)
    return shapes


def _label(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in shapes.items())


def _load_npz(path, specs) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
    except FileNotFoundError as e:
        raise InputError(f"{path}: no such file") from e
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz file ({first_line(e)})") from e
    missing = [s.name for s in specs if s.name not in feeds]
    if missing:
        raise InputError(f"{path}: missing arrays for model inputs {', '.join(missing)}")
    for s in specs:
        if feeds[s.name].dtype != s.dtype:
            warnings.warn(f"{path}: input '{s.name}' cast from {feeds[s.name].dtype} to {s.dtype}", stacklevel=2)
            feeds[s.name] = feeds[s.name].astype(s.dtype)
    return {s.name: feeds[s.name] for s in specs}
