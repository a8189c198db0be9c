"""Pass infrastructure: the Pass contract, per-pass records and the PassManager.

A pass is a pure rewrite: ``run(graph, ctx) -> PassResult`` on an
onnx-graphsurgeon graph (or, for ``ModelPass``, ``run_model(model, ctx)`` on a
ModelProto). It never imports the analysis or verification code: the pipeline
gives the manager an ``after_pass`` callback that validates (checker, numerical
verification), costs and times the model after each pass. If a pass raises, or
the callback rejects its output, the manager keeps the model from before that
pass, records why, and goes on with the next pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import heapq
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar

import onnx
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop._compat import quiet_graphsurgeon, read_external_lazily
from rooftop.errors import first_line
from rooftop.limits import FOLD_GROWTH_SHARE, FOLD_LIMIT, SIGNATURE_HASH_ELEMENTS
from rooftop.model_io import external_dir, weightless
from rooftop.passes._graph import cleanup
from rooftop.records import Cause, CostDelta, Latency, PassRecord, Status

quiet_graphsurgeon()


@dataclass
class PassContext:
    """What a pass may know besides the graph."""

    target: str = "portable"  # "portable": standard-domain ops only; "onnxruntime": com.microsoft ops allowed
    fold_limit: int = FOLD_LIMIT  # bytes: a folded constant larger than this is not materialized
    # pad channels to this multiple; None: do not pad. The pipeline resolves it from --channel-multiple
    # or, where the hardware profile says padding pays, from the profile.
    channel_multiple: int | None = None
    # bytes of weights this pass may still add to the model in all (constant folding); None: no cap.
    # The PassManager sets it before each pass from the run's growth budget and what earlier passes added.
    fold_budget: int | None = None
    # the onnxruntime execution provider the model is deployed on (--runtime onnxruntime:PROVIDER), for the
    # fused forms whose speed depends on its kernels
    provider: str = "CPUExecutionProvider"
    # the runtime decisions are taken on (--runtime): a pass that answers one runtime's own rewrites asks it
    runtime: str = "onnxruntime"


class Refused(Exception):
    """A matcher's "no", with the first condition that failed: the candidate stays as it is.
    ``PassResult.refusing(node)`` turns it into a refusal recorded on ``node``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PassResult:
    """What a pass did, filled in one way only: ``count(kind)`` for each rewrite (``rewrites`` is
    their sum) and ``refuse(reason, node)`` (or a ``Refused`` raised inside ``refusing(node)``)
    for each candidate looked at and left; ``notes`` are free text. ``counts`` and ``refusals``
    are read-only views."""

    __slots__ = ("_counts", "_reason", "notes")

    def __init__(self, notes: Iterable[str] = ()) -> None:
        self.notes: list[str] = list(notes)
        self._counts: dict[str, int] = {}
        self._reason: dict[str, str] = {}  # node -> why it was left (one reason a node, the latest)

    @property
    def rewrites(self) -> int:
        return sum(self._counts.values())

    @property
    def modified(self) -> bool:
        return self.rewrites > 0

    @property
    def counts(self) -> Mapping[str, int]:
        return MappingProxyType(self._counts)

    @property
    def refusals(self) -> Mapping[str, list[str]]:
        """Reason -> the nodes left for it, in the order they were refused."""
        out: dict[str, list[str]] = {}
        for node, why in self._reason.items():
            out.setdefault(why, []).append(node)
        return MappingProxyType(out)

    def count(self, kind: str, n: int = 1, node: gs.Node | None = None) -> None:
        """``n`` rewrites of ``kind`` (none when ``n`` is 0); with ``node``, a refusal recorded on it
        earlier in this result is withdrawn (it was rewritten after all)."""
        if n < 0:
            raise ValueError(f"a negative count of {kind}: {n}")
        if n:
            self._counts[kind] = self._counts.get(kind, 0) + n
        if node is not None:
            self._reason.pop(_node_key(node), None)

    def refuse(self, reason: str, node: gs.Node | str) -> None:
        """``node`` (or a node's name) was looked at and left, because of ``reason``."""
        key = node if isinstance(node, str) else _node_key(node)
        self._reason.pop(key, None)  # (re-inserted: the order is that of the latest refusal)
        self._reason[key] = reason

    @contextlib.contextmanager
    def refusing(self, node: gs.Node) -> Iterator[None]:
        """Run a matcher: a ``Refused`` it raises becomes a refusal on ``node``."""
        try:
            yield
        except Refused as r:
            self.refuse(r.reason, node)

    def then(self, later: PassResult, live: set[str]) -> None:
        """Add a later round: its counts and notes to these; the refusals become the later round's,
        for the nodes still in the graph (``live``): what the last round left is what stays."""
        for kind, n in later._counts.items():
            self.count(kind, n)
        self.notes.extend(later.notes)
        self._reason = {node: why for node, why in later._reason.items() if node in live}

    def __repr__(self) -> str:
        return f"PassResult(rewrites={self.rewrites}, counts={self._counts}, refusals={dict(self.refusals)})"


def _node_key(node: gs.Node) -> str:
    """The name a refusal is recorded under: the node's name, else its first output's, else its op."""
    return node.name or (node.outputs[0].name if node.outputs else node.op)


@dataclass
class Validation:
    """What the pipeline's after-pass callback says about a candidate model.

    ``cause`` is None when the candidate is kept; otherwise it says why not, and decides the
    record's status: ``Cause.SLOWER`` rejects the pass, any other cause rolls it back.
    """

    cause: Cause | None = None
    reason: str = ""
    max_abs_error: float | None = None
    verified: bool = False
    cost: CostDelta | None = None
    latency: Latency | None = None
    removes_only: bool = False  # not timed alone: it only removes work; the final comparison times it

    @property
    def ok(self) -> bool:
        return self.cause is None


class Pass:
    """A graph rewrite on an onnx-graphsurgeon graph."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_shapes: ClassVar[bool] = False  # run onnx shape inference before importing the graph
    # timed against its input even when it only removes work: it changes which kernels run
    # (element types, layouts) in ways the node count and the roofline do not see
    changes_kernels: ClassVar[bool] = False
    # op types of which the main graph must hold one for this pass to find anything to rewrite;
    # empty: any graph may hold work. Checked on the ModelProto, before the graph is imported
    # (on a large graph the import and shape inference cost more than the matching).
    needs_ops: ClassVar[frozenset[str]] = frozenset()
    # how many times the template may run the pass on its own output: a pass whose rewrites open
    # new matches (a fold that makes the next node's inputs constant) says so here
    rounds: ClassVar[int] = 1

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        """The pass's result when it cannot rewrite anything in ``model``, found without importing
        the graph; None when it may have work. A pass with a cheaper or sharper test overrides it."""
        if self.needs_ops and not any(n.op_type in self.needs_ops for n in model.graph.node):
            return PassResult()
        return None

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def tidied(self, graph: gs.Graph, model: ModelProto, result: PassResult) -> None:
        """Called after ``run`` with the graph cleaned up (dead nodes gone) and in topological order,
        before the template decides whether to export: a pass that counts what the tidying itself
        removed (cleanup) adds it to ``result`` here. Most passes have nothing to add."""

    def apply(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:
        """The one template: import, run (up to ``rounds`` times, while a round rewrites), tidy,
        export only when something was rewritten (an export copies every weight), with distinct
        tensor names as a safety net. A pass that is ``idle`` on the model does not import it."""
        idle = self.idle(model, ctx)
        if idle is not None:
            return model, idle
        with untouched(model):
            graph = import_with_shapes(model) if self.needs_shapes else import_graph(model)
            result = self._rounds(graph, ctx)
            self.tidied(graph, model, result)
            if result.rewrites == 0:
                return model, result
            distinct_names(graph)
            return export_like(graph, model), result

    def _rounds(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        """The pass's fixed point: ``run`` again on its own output while it rewrites something, at
        most ``rounds`` times; the refusals are those of the last round, for nodes still there.
        The rounds share one copy of ``ctx``: a budget one round spends is spent for the next."""
        ctx = dataclasses.replace(ctx)
        total = PassResult()
        for _ in range(max(self.rounds, 1)):
            res = self.run(graph, ctx)
            cleanup(graph).toposort()
            total.then(res, {_node_key(n) for n in graph.nodes})
            if not res.rewrites:
                break
        return total


def distinct_names(graph: gs.Graph) -> int:
    """Give a fresh name to every tensor whose name another, different tensor already has: a
    safety net under every pass (two new constants named alike would read each other's values
    once exported). Graph inputs and outputs keep their names. Returns how many were renamed."""
    keep = {id(t) for t in list(graph.inputs) + list(graph.outputs)}
    owner: dict[str, gs.Tensor] = {}
    clashes: list[gs.Tensor] = []
    for node in graph.nodes:
        for t in list(node.inputs) + list(node.outputs):
            if not t.name:
                continue
            other = owner.setdefault(t.name, t)
            if other is not t:
                if id(t) in keep:
                    owner[t.name] = t
                    clashes.append(other)
                else:
                    clashes.append(t)
    if not clashes:
        return 0
    taken = set(owner)
    renamed = 0
    for t in {id(t): t for t in clashes}.values():
        i, base = 1, t.name
        while f"{base}_{i}" in taken:
            i += 1
        t.name = f"{base}_{i}"
        taken.add(t.name)
        renamed += 1
    return renamed


class ModelPass(Pass):
    """A pass that works on the ModelProto directly (e.g. wrapping onnxsim)."""

    def run_model(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:  # pragma: no cover
        raise NotImplementedError

    def apply(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:
        idle = self.idle(model, ctx)
        return (model, idle) if idle is not None else self.run_model(model, ctx)


def infer_value_info(model: ModelProto) -> list[onnx.ValueInfoProto]:
    """ONNX shape inference (with data propagation) on a copy of the graph that leaves large weights
    out (``model_io.weightless``), so nothing big is copied or serialized."""
    skeleton = weightless(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - shapes are a help, never a requirement
        return []
    return list(inferred.graph.value_info) + [o for o in inferred.graph.output]


def import_graph(model: ModelProto) -> gs.Graph:
    """``gs.import_onnx`` that leaves ``model`` as it was: graphsurgeon keeps the model's
    ``opset_import`` container itself as ``graph.import_domains`` and export appends new
    domains to it, which would change the caller's model. The graph gets its own copies."""
    graph = gs.import_onnx(model)
    graph.import_domains = [onnx.helper.make_opsetid(o.domain, o.version) for o in model.opset_import]
    read_external_lazily(graph, _read_external)
    return graph


def _read_external(tensor: onnx.TensorProto):
    """A weight left on disk (``model_io.load_model_noted(lazy=True)``), read from the run's external
    data folder when a pass asks for its values."""
    import numpy as np

    return np.array(onnx.numpy_helper.to_array(tensor, base_dir=external_dir() or ""))


@contextlib.contextmanager
def untouched(model: ModelProto) -> Iterator[None]:
    """graphsurgeon writes an empty name into the unnamed tensors of Constant nodes it imports
    and exports; put them back as they were, so a pass never changes the model it was given."""
    unnamed = [
        a.t
        for n in model.graph.node
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR and not a.t.HasField("name")
    ]
    try:
        yield
    finally:
        for t in unnamed:
            t.ClearField("name")


def import_with_shapes(model: ModelProto) -> gs.Graph:
    """A graphsurgeon graph whose tensors carry inferred dtypes and (symbolic) shapes.

    The inferred annotations are put on ``model`` only for the import and removed after,
    so the model itself is left as it was.
    """
    infos = infer_value_info(model)
    if not infos:
        return import_graph(model)
    outputs = {o.name for o in model.graph.output}
    n_before = len(model.graph.value_info)
    model.graph.value_info.extend(i for i in infos if i.name not in outputs)
    try:
        return import_graph(model)
    finally:
        del model.graph.value_info[n_before:]


def export_like(graph: gs.Graph, original: ModelProto) -> ModelProto:
    """Export ``graph`` keeping the original model's IR version, metadata and functions.

    Intermediate value_info is dropped: a rewrite may change intermediate shapes
    and a stale annotation is worse than none (shape inference recomputes them).
    Graph inputs and outputs keep their declared types.
    """
    new = gs.export_onnx(graph, do_type_check=False)
    del new.graph.value_info[:]
    new.ir_version = original.ir_version or new.ir_version
    for f in ("producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(new, f, getattr(original, f))
    del new.metadata_props[:]
    new.metadata_props.extend(original.metadata_props)
    if not new.functions and original.functions:
        new.functions.extend(original.functions)
    # keep every opset import of the original (gs drops unused custom domains)
    have = {o.domain for o in new.opset_import}
    for o in original.opset_import:
        if o.domain not in have:
            new.opset_import.append(o)
    return new


def graph_signature(model: ModelProto) -> str:
    """A digest of what the graph computes (nodes, initializers, output names), ignoring annotations."""
    h = hashlib.sha256()
    for n in model.graph.node:
        h.update(n.SerializeToString(deterministic=True))
    for t in model.graph.initializer:
        h.update(t.name.encode())
        if t.HasField("raw_data") and len(t.dims) and _numel(t) > SIGNATURE_HASH_ELEMENTS:
            # large weights: name, type and shape (hashing their bytes costs seconds on big models)
            h.update(repr((t.data_type, tuple(t.dims), t.data_location)).encode())
        else:
            h.update(t.SerializeToString(deterministic=True))
    for o in model.graph.output:
        h.update(o.name.encode())
    return h.hexdigest()


def constant_names(model: ModelProto) -> set[str]:
    """The main graph's tensors known before it runs: initializers and Constant nodes' outputs."""
    return {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }


def _numel(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n


def _reads(node: onnx.NodeProto) -> list[str]:
    """Names a node reads: its inputs and the outer-scope names its subgraphs (If, Loop, Scan) use."""
    names = list(node.input)
    for g in _subgraphs(node):
        local = {i.name for i in g.input} | {t.name for t in g.initializer} | {o for n in g.node for o in n.output}
        names += [x for n in g.node for x in _reads(n) if x not in local]
    return names


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [
        g
        for a in node.attribute
        for g in (
            [a.g]
            if a.type == onnx.AttributeProto.GRAPH
            else list(a.graphs)
            if a.type == onnx.AttributeProto.GRAPHS
            else []
        )
    ]


def _sorted_graph(g: onnx.GraphProto) -> bool:
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    produced = {o for n in g.node for o in n.output}
    for node in g.node:
        if any(i not in known and i in produced for i in _reads(node)) or not all(
            _sorted_graph(sg) for sg in _subgraphs(node)
        ):
            return False
        known.update(node.output)
    return True


def toposorted(model: ModelProto) -> bool:
    """Whether every node, in the main graph and in every subgraph, comes after the producers of
    what it reads (a subgraph's outer-scope names included)."""
    return _sorted_graph(model.graph)


def toposort(model: ModelProto) -> bool:
    """Put every graph's nodes (main graph and subgraphs) in topological order in place, stable:
    nodes already in order keep it. Returns whether any order changed."""
    return _sort_graph(model.graph)


def _sort_graph(g: onnx.GraphProto) -> bool:
    changed = False
    for node in g.node:
        for sg in _subgraphs(node):
            changed |= _sort_graph(sg)
    nodes = list(g.node)
    produced = {o for n in nodes for o in n.output if o}
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    waiting = {i: {x for x in _reads(n) if x in produced and x not in known} for i, n in enumerate(nodes)}
    readers: dict[str, list[int]] = {}
    for i, need in waiting.items():
        for x in need:
            readers.setdefault(x, []).append(i)
    ready = [i for i, need in waiting.items() if not need]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for o in nodes[i].output:
            for j in readers.pop(o, []):
                waiting[j].discard(o)
                if not waiting[j]:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ValueError(f"graph {g.name!r} has a cycle")
    if order == list(range(len(nodes))):
        return changed
    copies = [onnx.NodeProto() for _ in order]
    for c, i in zip(copies, order):
        c.CopyFrom(nodes[i])
    del g.node[:]
    g.node.extend(copies)
    return True


def weight_bytes(model: ModelProto) -> int:
    """Bytes of the model's weights, initializers and Constant node values, from their dims
    (nothing is loaded)."""
    consts = [
        a.t
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    ]
    return sum(_numel(t) * _itemsize(t.data_type) for t in list(model.graph.initializer) + consts)


def _itemsize(data_type: int) -> int:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 1


def growth_budget(weights: int, fold_limit: int) -> int:
    """How many bytes of weights constant folding may add to a model in all: the larger of the
    per-tensor fold limit and 10% of the weights it has. A model that builds its weights at run time
    (ConstantOfShape/Expand, as the zoo's "light" models do) would otherwise grow many times over."""
    return max(int(fold_limit), int(weights * FOLD_GROWTH_SHARE))


def count_nodes(model: ModelProto) -> int:
    return len(model.graph.node)


AfterPass = Callable[[str, ModelProto], Validation]


class PassManager:
    """Runs passes in order, validating each, rolling back the ones that fail.

    ``skip`` maps pipeline positions not to run to the (status, cause, reason) their record gets,
    or to the record to repeat
    (the pipeline's back-off uses it); the model goes on unchanged past them.
    """

    def __init__(
        self,
        passes: Sequence[Pass],
        ctx: PassContext,
        after_pass: AfterPass | None = None,
        *,
        fixed_point: bool = False,
        max_iterations: int = 4,
        on_start: Callable[[str, int], None] | None = None,
        on_end: Callable[[PassRecord], None] | None = None,
        debug: bool = False,
        skip: Mapping[int, PassRecord | tuple[Status, Cause, str]] | None = None,
    ) -> None:
        self.passes = list(passes)
        self.ctx = ctx
        self.after_pass = after_pass
        self.fixed_point = fixed_point
        self.max_iterations = max_iterations if fixed_point else 1
        self.on_start = on_start
        self.on_end = on_end
        self.debug = debug
        self.skip = dict(skip or {})
        self.records: list[PassRecord] = []

    def _context(self, model: ModelProto) -> PassContext:
        """The context for the next pass: the fold budget less what earlier passes added."""
        if self._growth_budget is None:
            return self.ctx
        added = weight_bytes(model) - self._weights0
        return dataclasses.replace(self.ctx, fold_budget=max(self._growth_budget - max(added, 0), 0))

    def run(self, model: ModelProto) -> ModelProto:
        self._weights0 = weight_bytes(model)
        self._growth_budget = (
            self.ctx.fold_budget
            if self.ctx.fold_budget is not None
            else growth_budget(self._weights0, self.ctx.fold_limit)
        )
        position = 0
        for iteration in range(1, self.max_iterations + 1):
            changed = 0
            for p in self.passes:
                if position in self.skip:
                    rec = self._skipped(p, position, iteration)
                    rec.nodes_before = rec.nodes_after = count_nodes(model)
                else:
                    model, rec = self._run_one(p, model, iteration)
                    rec.position = position
                self.records.append(rec)
                if self.on_end:
                    self.on_end(rec)
                if rec.status is Status.APPLIED:
                    changed += rec.rewrites
                position += 1
            if not changed:
                break
        return model

    def _skipped(self, p: Pass, position: int, iteration: int) -> PassRecord:
        """The record of a position not run: a record given in ``skip`` repeated (a pass the gate
        rejected keeps what it measured and would have saved), or one made from (status, cause, reason)."""
        spec = self.skip[position]
        if isinstance(spec, PassRecord):
            return dataclasses.replace(spec, iteration=iteration, position=position)
        status, cause, reason = spec
        return PassRecord(
            name=p.name, iteration=iteration, status=status, cause=cause, reason=reason, position=position
        )

    def _run_one(self, p: Pass, model: ModelProto, iteration: int) -> tuple[ModelProto, PassRecord]:
        rec = PassRecord(name=p.name, iteration=iteration, nodes_before=count_nodes(model))
        rec.nodes_after = rec.nodes_before
        if self.on_start:
            self.on_start(p.name, iteration)
        t0 = time.perf_counter()
        try:
            candidate, result = p.apply(model, self._context(model))
        except Exception as e:  # noqa: BLE001 - one broken pass must never lose the model
            rec.seconds = time.perf_counter() - t0
            rec.status, rec.cause = Status.ROLLED_BACK, Cause.RAISED
            rec.reason = f"pass raised {type(e).__name__}: {first_line(e, '')}".rstrip(": ")
            if self.debug:
                rec.notes.append(traceback.format_exc())
            return model, rec
        rec.seconds = time.perf_counter() - t0
        rec.rewrites = result.rewrites
        rec.notes.extend(result.notes)
        rec.counts, rec.refusals = dict(result.counts), {k: list(v) for k, v in result.refusals.items()}
        if result.rewrites == 0 or candidate is model:
            rec.rewrites = 0
            return model, rec
        if self.after_pass is not None:
            v = self.after_pass(p.name, candidate)
            rec.verified, rec.max_abs_error = v.verified, v.max_abs_error
            rec.cost, rec.latency, rec.removes_only = v.cost, v.latency, v.removes_only
            if not v.ok:
                rec.cause, rec.reason = v.cause, v.reason
                rec.status = Status.REJECTED if v.cause is Cause.SLOWER else Status.ROLLED_BACK
                return model, rec
        rec.nodes_after = count_nodes(candidate)
        rec.status = Status.APPLIED
        return candidate, rec
