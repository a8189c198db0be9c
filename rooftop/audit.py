"""Audit an exported graph: what makes it slow, who can fix it, and a gate for CI.

Findings are detected on the model as given. Each carries the nodes involved (names a user can
find in Netron), the memory traffic and predicted time at stake on the hardware profile (the cost
model's rows of those nodes; measured per-operator time where onnxruntime profiled it), and who
fixes it: a pass (the optimize run that follows the detection removes the finding, and that pass
applied), or only the model's author (one sentence: what to change). Kinds:

- ``batchnorm-foldable``      BatchNormalization right after Conv/Gemm/MatMul: fold-conv-bn takes it.
- ``batchnorm-not-foldable``  BatchNormalization after anything else (Conv→ReLU→BN): it cannot fold.
- ``odd-channels``            Conv output channels not a multiple of the kernel block (padded anyway).
- ``dilated-conv``            dilation > 1: off the fast convolution paths.
- ``grouped-conv``            1 < group < channels (not depthwise): off the fast convolution paths.
- ``qdq-float-op``            DequantizeLinear → float op → QuantizeLinear: int8 data widened to float.
- ``cast-round-trip``         Cast(A→B) → Cast(B→A): precision cast back and forth.
- ``shape-computation``       a Shape read computed at run time (the chain behind it).
- ``tiny-ops``                most operators move under 4 KiB: per-operator overhead dominates.
- ``memory-bound-hotspot``    one memory-bound operator carries ≥ 10% of the predicted time.
- ``custom-domain``           operators outside the standard domain (and com.microsoft when portable).
- ``unsupported-op``          onnxruntime cannot create a session for the model.

The gate (``Gate``): kinds that fail the run, a memory-traffic budget, a latency budget measured at
the deploy level, and a baseline (a previous audit's JSON of the same model) that fails the run when
nodes or traffic grew, or when latency grew beyond the noise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import onnx
from onnx import ModelProto

from rooftop import provenance
from rooftop.errors import UsageError, first_line

KINDS = (
    "batchnorm-foldable",
    "batchnorm-not-foldable",
    "odd-channels",
    "dilated-conv",
    "grouped-conv",
    "qdq-float-op",
    "cast-round-trip",
    "shape-computation",
    "tiny-ops",
    "memory-bound-hotspot",
    "custom-domain",
    "unsupported-op",
)
# the passes that remove a kind of finding, in the order the pipeline runs them
FIXERS = {
    "batchnorm-foldable": ("fold-conv-bn",),
    "odd-channels": ("pad-channels",),
    "qdq-float-op": ("requant", "u8-activations"),
    "cast-round-trip": ("simplify", "shape-chains"),
    "shape-computation": ("simplify", "shape-chains"),
}
AUTHOR = {
    "batchnorm-foldable": "nothing to change: fold-conv-bn folds it into the weights",
    "batchnorm-not-foldable": "put BatchNorm directly after the Conv/Linear "
    "(Conv→BN→ReLU) so it folds into the weights",
    "odd-channels": "use a channel count that is a multiple of {m}: kernels pad to it anyway",
    "dilated-conv": "dilated convolutions run off the fast paths; a strided or larger plain kernel often serves",
    "grouped-conv": "grouped convolutions (1 < groups < channels) run off the fast paths; prefer depthwise + pointwise",
    "qdq-float-op": "quantize this op too (or accept the float island): int8 data is widened to float around it",
    "cast-round-trip": "keep this block in one precision: the casts move the tensor twice",
    "shape-computation": "export with static shapes where they are static, or compute the shape once outside the graph",
    "tiny-ops": "batch more work per operator (larger tensors, fused blocks): per-operator overhead dominates",
    "memory-bound-hotspot": "fuse it with its neighbours or store its tensors "
    "in lower precision: it runs at memory speed",
    "custom-domain": "replace it with standard ONNX ops if the model must run on other runtimes",
    "unsupported-op": "replace the operator (or convert with --opset) so the runtime can load the model",
}
LINEAR = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SHAPE_CHAIN = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Slice",
    "Cast",
    "Reshape",
    "Equal",
    "Where",
    "Range",
    "ConstantOfShape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Size",
    "Expand",
}
TINY_BYTES = 4096
HOTSPOT_SHARE = 0.10


@dataclass
class Finding:
    kind: str
    nodes: list[str]
    message: str
    bytes: float = 0.0
    predicted_ms: float = 0.0
    measured_ms: float | None = None
    fixed_by: str | None = None  # the pass that removes it, or None: only the author can
    author_fix: str = ""
    op_type: str = ""
    # where it is in the author's code, when the exporter recorded it (rooftop.provenance)
    module: str = ""
    module_class: str = ""
    source: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.nodes[0] if self.nodes else ""


@dataclass
class Group:
    """Findings of one kind, or in one module: how many, and what is at stake in all."""

    key: str
    findings: list[Finding]

    @property
    def bytes(self) -> float:
        return sum(f.bytes for f in self.findings)

    @property
    def predicted_ms(self) -> float:
        return sum(f.predicted_ms for f in self.findings)

    @property
    def measured_ms(self) -> float | None:
        got = [f.measured_ms for f in self.findings if f.measured_ms is not None]
        return sum(got) if got else None

    def as_dict(self, name: str) -> dict:
        first = self.findings[0]
        d = {name: self.key, "count": len(self.findings), "bytes": self.bytes, "predicted_ms": self.predicted_ms}
        d["measured_ms"] = self.measured_ms
        if name == "kind":
            d["fixed_by"] = sorted({f.fixed_by for f in self.findings if f.fixed_by})
            d["author_fix"] = next((f.author_fix for f in self.findings if f.author_fix), "")
        else:
            d.update({"class": first.module_class, "source": first.source})
            d["kinds"] = sorted({f.kind for f in self.findings})
        return d


def groups(findings: list[Finding], by: str) -> list[Group]:
    """The findings by ``kind`` or by ``module`` (those with one), the most at stake first."""
    out: dict[str, Group] = {}
    for f in findings:
        key = f.kind if by == "kind" else f.module
        if by == "module" and not (f.module or f.source):
            continue
        out.setdefault(key, Group(key, [])).findings.append(f)
    return sorted(out.values(), key=lambda g: (-(g.measured_ms or g.predicted_ms), -len(g.findings), g.key))


@dataclass
class Gate:
    fail_on: tuple[str, ...] = ()
    max_traffic: int | None = None  # bytes of memory traffic per inference (cost model)
    max_latency_ms: float | None = None  # measured at the deploy level
    baseline: str | None = None  # a previous audit JSON of the same model

    def check(self) -> None:
        unknown = [k for k in self.fail_on if k not in KINDS]
        if unknown:
            raise UsageError(f"--fail-on {unknown[0]}: no such finding kind (one of {', '.join(KINDS)})")


@dataclass
class Audit:
    model_path: str | None
    hardware: str
    findings: list[Finding]
    nodes: int
    traffic_bytes: float
    predicted_ms: float
    memory_bound_share: float  # of predicted time
    recoverable_ms: float  # predicted time the passes save
    latency: dict | None = None  # measured at the deploy level: {"level", "median_ms", "q1_ms", "q3_ms", "runs"}
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["schema_version"] = 2
        d["findings"] = [asdict(f) for f in self.findings]
        d["by_kind"] = [g.as_dict("kind") for g in groups(self.findings, "kind")]
        d["by_module"] = [g.as_dict("module") for g in groups(self.findings, "module")]
        return d


# ---- detectors: one a kind, each (model, context) -> findings -----------------------------------


@dataclass
class Context:
    model: ModelProto
    target: str
    multiple: int
    producers: dict[str, onnx.NodeProto]
    consumers: dict[str, list[onnx.NodeProto]]
    inits: dict[str, onnx.TensorProto]
    types: dict[str, int]  # element type of every tensor shape inference could type

    @staticmethod
    def of(model: ModelProto, target: str, multiple: int) -> Context:
        producers = {o: n for n in model.graph.node for o in n.output}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in model.graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        inits = {t.name: t for t in model.graph.initializer}
        return Context(model, target, multiple, producers, consumers, inits, _types(model))

    def weight_dims(self, name: str) -> list[int] | None:
        t = self.inits.get(name)
        return list(t.dims) if t is not None else None


def _name(n: onnx.NodeProto) -> str:
    return n.name or (n.output[0] if n.output else n.op_type)


def _attr(n: onnx.NodeProto, name: str, default=None):
    a = next((a for a in n.attribute if a.name == name), None)
    return default if a is None else onnx.helper.get_attribute_value(a)


def _batchnorm(c: Context) -> list[Finding]:
    out = []
    for n in c.model.graph.node:
        if n.op_type != "BatchNormalization":
            continue
        p = c.producers.get(n.input[0])
        if p is not None and p.op_type in LINEAR and len(c.consumers.get(n.input[0], [])) == 1:
            out.append(
                Finding("batchnorm-foldable", [_name(n)], f"BatchNormalization after {p.op_type} {_name(p)}: foldable")
            )
        else:
            what = "a graph input" if p is None else f"{p.op_type} {_name(p)}"
            out.append(
                Finding(
                    "batchnorm-not-foldable", [_name(n)], f"BatchNormalization after {what}: cannot fold into weights"
                )
            )
    return out


def _convs(c: Context) -> list[Finding]:
    out = []
    for n in c.model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        w = c.weight_dims(n.input[1])
        if w is None or len(w) < 3:
            continue
        cout, group = w[0], int(_attr(n, "group", 1))
        cin = w[1] * group
        if cout >= c.multiple and cout % c.multiple:
            out.append(
                Finding(
                    "odd-channels",
                    [_name(n)],
                    f"Conv {_name(n)} writes {cout} channels, not a multiple of {c.multiple}",
                )
            )
        if any(int(d) > 1 for d in _attr(n, "dilations", []) or []):
            out.append(
                Finding("dilated-conv", [_name(n)], f"Conv {_name(n)} has dilations {list(_attr(n, 'dilations'))}")
            )
        if 1 < group < cin:
            out.append(Finding("grouped-conv", [_name(n)], f"Conv {_name(n)} has {group} groups over {cin} channels"))
    return out


def _qdq(c: Context) -> list[Finding]:
    out = []
    for n in c.model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.domain not in ("", "ai.onnx") or not n.output:
            continue
        dq_in = [i for i in n.input if i in c.producers and c.producers[i].op_type == "DequantizeLinear"]
        q_out = [q for q in c.consumers.get(n.output[0], []) if q.op_type == "QuantizeLinear"]
        if dq_in and q_out:
            out.append(
                Finding(
                    "qdq-float-op",
                    [_name(n)],
                    f"{n.op_type} {_name(n)} runs in float between DequantizeLinear and QuantizeLinear",
                    op_type=n.op_type,
                )
            )
    return out


def _casts(c: Context) -> list[Finding]:
    out = []
    for n in c.model.graph.node:
        if n.op_type != "Cast":
            continue
        p = c.producers.get(n.input[0])
        if p is None or p.op_type != "Cast":
            continue
        src = c.types.get(p.input[0])
        if src is not None and src == int(_attr(n, "to")):
            out.append(
                Finding(
                    "cast-round-trip",
                    [_name(p), _name(n)],
                    f"Cast {_name(p)} → Cast {_name(n)} returns to {onnx.TensorProto.DataType.Name(src).lower()}",
                )
            )
    return out


def _types(model: ModelProto) -> dict[str, int]:
    from rooftop.model_io import weightless

    types = {t.name: t.data_type for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(weightless(model), check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - types are a help
        inferred = model
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _shapes(c: Context) -> list[Finding]:
    out = []
    for n in c.model.graph.node:
        if n.op_type != "Shape":
            continue
        chain, frontier = [_name(n)], list(n.output)
        seen = set(frontier)
        while frontier:
            t = frontier.pop()
            for k in c.consumers.get(t, []):
                if k.op_type in SHAPE_CHAIN and k.op_type not in ("Reshape", "Expand") and _name(k) not in chain:
                    chain.append(_name(k))
                    frontier += [o for o in k.output if o not in seen]
                    seen.update(k.output)
        out.append(
            Finding(
                "shape-computation", chain, f"Shape {_name(n)} and {len(chain) - 1} ops computing with it at run time"
            )
        )
    return out


def _domains(c: Context) -> list[Finding]:
    allowed = {"", "ai.onnx"} | ({"com.microsoft"} if c.target == "onnxruntime" else set())
    out = []
    for n in c.model.graph.node:
        if n.domain not in allowed:
            out.append(Finding("custom-domain", [_name(n)], f"{n.domain}::{n.op_type} {_name(n)}"))
    return out


DETECTORS: tuple[Callable[[Context], list[Finding]], ...] = (_batchnorm, _convs, _qdq, _casts, _shapes, _domains)


def detect(model: ModelProto, target: str, multiple: int) -> list[Finding]:
    c = Context.of(model, target, multiple)
    return [f for d in DETECTORS for f in d(c)]


# ---- costs, runtime and the run of the passes ----------------------------------------------------


def _stakes(findings: list[Finding], rows) -> None:
    by_name = {r.name: r for r in rows}
    for f in findings:
        rs = [by_name[n] for n in f.nodes if n in by_name]
        f.bytes = sum(r.bytes_read + r.bytes_written for r in rs)
        f.predicted_ms = 1e3 * sum(r.predicted_s or 0.0 for r in rs)
        measured = [r.measured_s for r in rs if r.measured_s is not None]
        f.measured_ms = 1e3 * sum(measured) if measured else None


def _cost_findings(rows, overhead_s: float) -> list[Finding]:
    """tiny-ops and memory-bound-hotspot, from the roofline rows."""
    real = [r for r in rows if r.bound in ("compute", "memory")]
    total = sum(r.predicted_s or 0.0 for r in real)
    out = []
    tiny = [r for r in real if r.bytes_read + r.bytes_written < TINY_BYTES]
    if len(real) >= 50 and len(tiny) > len(real) / 2:
        share = sum(r.predicted_s or 0.0 for r in tiny) / total if total else 0.0
        out.append(
            Finding(
                "tiny-ops",
                [r.name for r in tiny],
                f"{len(tiny)} of {len(real)} operators move under {TINY_BYTES} bytes; "
                f"at {overhead_s * 1e6:.1f} µs per operator they are {100 * share:.0f}% of predicted time",
            )
        )
    for r in real:
        if r.bound == "memory" and total and (r.predicted_s or 0.0) / total >= HOTSPOT_SHARE:
            out.append(
                Finding(
                    "memory-bound-hotspot",
                    [r.name],
                    f"{r.op_type} {r.name}: {100 * (r.predicted_s or 0) / total:.0f}% of "
                    f"predicted time at {r.intensity:.2f} FLOP/B (memory-bound)",
                )
            )
    return out


def _runnable(model: ModelProto, load_error: str | None) -> Finding | None:
    """unsupported-op: from the optimize run's verifier, which already tried to load the original
    (a session holds a copy of every weight: no second one); tried here only with --no-verify."""
    if load_error is None:
        from rooftop.runtime import make_session

        try:
            make_session(model)
            load_error = ""
        except Exception as e:  # noqa: BLE001
            load_error = first_line(e)
    return (
        Finding("unsupported-op", [], f"onnxruntime cannot load the model: {load_error[:200]}") if load_error else None
    )


def _attribute(findings: list[Finding], final: list[Finding], applied: list[str]) -> None:
    """fixed_by: the first applied pass among the kind's fixers when the optimize run removed the finding."""
    left = {f.key for f in final}
    for f in findings:
        if f.key in left or f.kind not in FIXERS:
            continue
        f.fixed_by = next((p for p in FIXERS[f.kind] if p in applied), None)


def _latency(model: ModelProto, level: str, threads: int, blocks: int = 3, block_s: float = 0.4) -> dict | None:
    """The model's latency at ``level``: single runs in ``blocks`` blocks of ``block_s`` (at least 20
    runs each), after the optimize run's sessions are gone (their threads would compete).
    ``best_ms`` is the lowest block median: on a shared machine interference only ever adds time,
    so the best block is what a comparison across runs can trust; quartiles are over all runs."""
    import gc
    import time

    import numpy as np

    from rooftop import model_io, runtime, shapes

    gc.collect()
    model_io.release_memory()
    try:
        specs = runtime.graph_inputs(model)
        feeds = runtime.random_inputs(specs, shapes.bind(specs, {})[0], 0, runtime.index_bounds(model))
        sess = runtime.make_session(
            model, optimization=level, threads=threads or runtime.physical_cores(), spinning=False
        )
        for _ in range(5):
            sess.run(None, feeds)
        runs: list[list[float]] = []
        for _ in range(blocks):
            t: list[float] = []
            start = time.perf_counter()
            while len(t) < 20 or time.perf_counter() - start < block_s:
                t0 = time.perf_counter()
                sess.run(None, feeds)
                t.append(1e3 * (time.perf_counter() - t0))
            runs.append(t)
    except Exception:  # noqa: BLE001 - a model onnxruntime cannot run has its own finding
        return None
    every = [x for t in runs for x in t]
    q1, med, q3 = (float(v) for v in np.percentile(every, [25, 50, 75]))
    best = min(float(np.median(t)) for t in runs)
    return {"level": level, "median_ms": med, "q1_ms": q1, "q3_ms": q3, "best_ms": best, "runs": len(every)}


def audit(model_path: str, opts, gate: Gate, on_stage: Callable[[str], None] | None = None) -> Audit:
    """Detect findings on the model, run optimize (nothing written) to see what the passes fix,
    cost them on the profile, apply the gate."""
    from rooftop import pipeline

    gate.check()
    stage = on_stage or (lambda s: None)
    stage("loading model")
    original, notes = _original(model_path, opts)  # loaded once: optimize gets the model itself
    optimized, report = pipeline.optimize(original, None, replace(opts, opset=None), on_stage=stage)
    hw = report.hardware
    multiple = opts.channel_multiple or (hw.channel_multiple if hw is not None else 8)
    findings = detect(original, opts.target, multiple)
    before = report.before
    if before is not None:
        findings += _cost_findings(before.rows, hw.overhead_s if hw is not None else 0.0)
        _stakes(findings, before.rows)
    broken = _runnable(original, report.ort_load_error)
    if broken is not None:
        findings.append(broken)
    applied = [r.name for r in report.passes if r.status.value == "applied"]
    _attribute(
        findings,
        detect(optimized, opts.target, multiple)
        + (_cost_findings(report.after.rows, hw.overhead_s) if report.after and hw else []),
        applied,
    )
    where = provenance.index(original.graph.node)
    for f in findings:
        f.author_fix = "" if f.fixed_by else _author_fix(f, opts.target, multiple)
        src = next((where[n] for n in f.nodes if n in where), None)
        if src is not None:
            f.module, f.module_class, f.source = src.module, src.cls, src.location
    findings.sort(key=lambda f: (-(f.measured_ms if f.measured_ms is not None else f.predicted_ms), f.kind))
    total = before.predicted_s if before is not None else 0.0
    memory = sum(r.predicted_s or 0.0 for r in before.rows if r.bound == "memory") if before is not None else 0.0
    after_s = report.after.predicted_s if report.after is not None else total
    result = Audit(
        model_path,
        hw.name if hw is not None else "-",
        findings,
        len(original.graph.node),
        before.bytes if before is not None else 0.0,
        1e3 * total,
        memory / total if total else 0.0,
        1e3 * max(total - after_s, 0.0),
        notes=notes + list(report.warnings),
    )
    if gate.max_latency_ms is not None or gate.baseline is not None:
        stage("measuring latency")
        result.latency = _latency(original, opts.deploy_level, opts.threads)
    result.failures = gate_failures(result, gate)
    return result


def _author_fix(f: Finding, target: str, multiple: int) -> str:
    text = AUTHOR[f.kind].format(m=multiple)
    if f.kind == "qdq-float-op" and target != "onnxruntime" and f.op_type in ONNXRUNTIME_QLINEAR:
        text += f"; or deploy on onnxruntime with --target onnxruntime ({ONNXRUNTIME_QLINEAR[f.op_type]})"
    return text


ONNXRUNTIME_QLINEAR = {
    "Add": "QLinearAdd",
    "Mul": "QLinearMul",
    "Concat": "QLinearConcat",
    "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool",
    "Sigmoid": "QLinearSigmoid",
    "LeakyRelu": "QLinearLeakyRelu",
    "Gemm": "QGemm",
    "Softmax": "QLinearSoftmax",
}


def _original(model_path: str, opts) -> tuple[ModelProto, list[str]]:
    """The model as the audit and the optimize run both see it (converted with --opset), and
    what loading and converting changed."""
    from rooftop import model_io

    model, notes = model_io.load_model_noted(model_path)
    if opts.opset is not None:
        model, note = model_io.convert_opset(model, opts.opset, model_path)
        notes += [note] if note else []
    return model, notes


# ---- the gate ---------------------------------------------------------------------------------------

# a latency measured in another process must grow by more than this to count: back-to-back runs
# of the 0.3 ms resnet_bn sample on this 2-core machine differed by up to 37% (bimodal: 0.32 or
# 0.40 ms with one thread), best block medians included. Measurements in one process, interleaved,
# resolve 3% (--noise-band); across processes this is what the machine allows.
LATENCY_NOISE = 0.5


def gate_failures(a: Audit, gate: Gate) -> list[str]:
    fails = []
    for kind in gate.fail_on:
        hits = [f for f in a.findings if f.kind == kind]
        if hits:
            fails.append(
                f"--fail-on {kind}: {len(hits)} finding{'s' if len(hits) != 1 else ''} "
                f"({', '.join(hits[0].nodes[:3])} ...)"
            )
    if gate.max_traffic is not None and a.traffic_bytes > gate.max_traffic:
        fails.append(f"--max-traffic: {a.traffic_bytes / 1e6:.2f} MB per inference > {gate.max_traffic / 1e6:.2f} MB")
    if gate.max_latency_ms is not None:
        if a.latency is None:
            fails.append("--max-latency-ms: the model could not be timed")
        elif a.latency["median_ms"] > gate.max_latency_ms:
            fails.append(
                f"--max-latency-ms: {a.latency['median_ms']:.3g} ms at "
                f"{a.latency['level']} > {gate.max_latency_ms:g} ms"
            )
    if gate.baseline is not None:
        fails += baseline_failures(a, load_baseline(gate.baseline))
    return fails


def load_baseline(path: str) -> dict:
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"--baseline {path}: cannot read it ({first_line(e)})") from e
    d = d.get("audit", d)
    if "traffic_bytes" not in d or "nodes" not in d:
        raise UsageError(f"--baseline {path}: not an audit report (write one with --audit --report FILE.json)")
    return d


def baseline_failures(a: Audit, base: dict) -> list[str]:
    """Nodes and traffic are exact: any growth fails. Latency from another run fails only when its
    best block median grew by more than LATENCY_NOISE over the baseline's."""
    fails = []
    if a.nodes > base["nodes"]:
        fails.append(f"--baseline: nodes grew {base['nodes']} → {a.nodes}")
    if a.traffic_bytes > base["traffic_bytes"] * (1 + 1e-9):
        fails.append(
            f"--baseline: memory traffic grew {base['traffic_bytes'] / 1e6:.3f} → {a.traffic_bytes / 1e6:.3f} MB"
        )
    old, new = base.get("latency"), a.latency
    if old and new and new["best_ms"] > old.get("best_ms", old["median_ms"]) * (1 + LATENCY_NOISE):
        fails.append(
            f"--baseline: latency grew {old.get('best_ms', old['median_ms']):.3g} "
            f"→ {new['best_ms']:.3g} ms at {new['level']} "
            f"(best block medians; more than {LATENCY_NOISE:.0%}, the noise between runs here)"
        )
    return fails


__all__ = ["Audit", "Finding", "Gate", "KINDS", "audit", "detect"]
