"""shape-chains: fold shape computations, also under dynamic axes.

Exporters compute shapes at run time: ``x.view(x.size(0), -1)`` becomes
Shape → Gather → Unsqueeze → Concat → Reshape. Each is a kernel launch and a
tiny tensor round trip, and a run-time Reshape target blocks other fusions.
onnxsim folds such chains only when every dim is static; this pass reasons
about the dims symbolically instead.

Symbolic values. Every 0-D or 1-D integer tensor of a shape computation is
evaluated to a list of elements, each an ``int`` or a symbol:
``("param", name)`` for a named dynamic dim (equal names are equal dims, across
tensors), ``("dim", tensor, axis)`` for an anonymous dim of one tensor, or
``(op, a, b)`` for arithmetic on those. Shape, Gather, Slice, Concat,
Unsqueeze, Squeeze, Cast, Identity, Reshape, Add/Sub/Mul/Div propagate them;
any node whose inputs are all known constants (Range, Equal, Where, ... through
onnx's reference evaluator) is evaluated, and ConstantOfShape/Expand/Tile
results only under ``--fold-limit``.

Rewrites:
- a tensor whose value is fully known (``Shape→Gather(1)`` of a
  ``[batch, 3, 224, 224]`` tensor is the constant 3) becomes a constant;
- a Reshape whose target mixes constants and dims of its own input becomes a
  constant target: the dim at the same position → ``0`` (copy; only when
  ``allowzero=0``), at most one other symbolic element → ``-1``;
- Squeeze∘Unsqueeze and Unsqueeze∘Squeeze on the same axes, Transpose∘Transpose
  (merged, or removed when the composition is the identity), identity Transpose,
  Reshape∘Reshape (when the second target copies nothing with 0), Cast to the
  dtype it already has, Expand to the shape it already has, Slice over the whole
  tensor, Reshape to the shape it already has, Flatten of a rank-2 tensor on
  axis 1: removed or merged.

Dynamic axes stay dynamic: a symbol is never replaced by a number, only by
``0``/``-1`` in a Reshape target where ONNX semantics make that exact. Refuses:
values over the fold limit, nodes in custom domains, Reshape with
``allowzero=1`` (0 would mean an empty dim), anything whose shapes or ranks it
cannot infer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from rooftop.limits import SMALL_CONSTANT_BYTES
from rooftop.passes import _fold
from rooftop.passes._graph import bypass, const_value, const_weight, is_graph_output
from rooftop.passes.base import Pass, PassContext, PassResult

Elem = Any  # int | tuple
INT_TYPES = (np.int64, np.int32)
BIG = 2**62
SMALL_CONSTANT = SMALL_CONSTANT_BYTES  # shape vectors and scalars fold free of the growth budget
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
FOLDABLE = {
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "CastLike",
    "Identity",
    "Reshape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Range",
    "Equal",
    "Where",
    "Less",
    "Greater",
    "Not",
    "And",
    "Or",
    "Min",
    "Max",
    "Abs",
    "Neg",
    "ReduceProd",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ConstantOfShape",
    "Expand",
    "Tile",
    "Size",
    "Floor",
    "Ceil",
    "Sqrt",
    "Mod",
    "GatherElements",
    "Transpose",
    "Flatten",
    "Constant",
}


class Val:
    """A shape-like value: fully constant (``const``) or a 0-D/1-D list of symbolic elements."""

    __slots__ = ("const", "elems", "scalar")

    def __init__(self, const: np.ndarray | None = None, elems: list[Elem] | None = None, scalar: bool = False) -> None:
        self.const = const
        self.elems = elems
        self.scalar = scalar

    @staticmethod
    def of_elems(elems: list[Elem], scalar: bool = False) -> Val:
        if all(isinstance(e, int) for e in elems):
            arr = np.array(elems, dtype=np.int64)
            return Val(const=arr.reshape(()) if scalar else arr, elems=list(elems), scalar=scalar)
        return Val(elems=list(elems), scalar=scalar)

    def as_elems(self) -> list[Elem] | None:
        if self.elems is not None:
            return self.elems
        c = self.const
        if c is not None and c.dtype.kind in "iu" and c.ndim <= 1 and c.size <= 64:
            return [int(v) for v in c.reshape(-1)]
        return None

    @property
    def is_scalar(self) -> bool:
        return self.scalar if self.const is None else self.const.ndim == 0


def dim_elem(t: gs.Tensor, axis: int) -> Elem | None:
    shape = t.shape
    if shape is None or axis >= len(shape):
        return None
    d = shape[axis]
    if isinstance(d, (int, np.integer)) and d >= 0:
        return int(d)
    if isinstance(d, str) and d:
        return ("param", d)
    return ("dim", t.name, axis)


def _arith(op: str, a: Elem, b: Elem) -> Elem:
    if isinstance(a, int) and isinstance(b, int):
        if op == "Add":
            return a + b
        if op == "Sub":
            return a - b
        if op == "Mul":
            return a * b
        if op == "Div" and b != 0:
            q = abs(a) // abs(b)
            return q if (a >= 0) == (b > 0) else -q  # ONNX integer Div truncates
        return (op, a, b)
    if op == "Mul" and (a == 1 or b == 1):
        return b if a == 1 else a
    if op in ("Add", "Sub") and b == 0:
        return a
    if op == "Add" and a == 0:
        return b
    if op == "Div" and b == 1:
        return a
    return (op, a, b)


def _is_dim(e: Elem) -> bool:
    """True for a symbol that stands for a tensor dimension (never negative)."""
    return isinstance(e, tuple) and e[0] in ("param", "dim")


def _axes(node: gs.Node, vals: dict[str, Val]) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = vals.get(node.inputs[1].name)
        if v is None or v.const is None:
            return None
        return [int(a) for a in np.atleast_1d(v.const)]
    ax = node.attrs.get("axes")
    return None if ax is None else [int(a) for a in ax]


# ---- one rule an op type: the value of a node's output from its inputs' values (None: unknown) --

Rule = Callable[[gs.Node, list[Val | None], dict[str, Val]], list[Val | None] | None]


def _constant(node: gs.Node, ins, vals) -> list[Val | None] | None:
    c = const_value(node.outputs[0])
    return [Val(const=c)] if c is not None else None


def _shape(node: gs.Node, ins, vals) -> list[Val | None] | None:
    x = node.inputs[0]
    if x.shape is None:
        return None
    elems = [dim_elem(x, i) for i in range(len(x.shape))]
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return [Val.of_elems(elems[start:] if end is None else elems[start : int(end)])]


def _size(node: gs.Node, ins, vals) -> list[Val | None] | None:
    x = node.inputs[0]
    if x.shape is not None and all(isinstance(d, int) for d in x.shape):
        return [Val(const=np.array(int(np.prod(x.shape)), np.int64))]
    return None


def _identity(node: gs.Node, ins, vals) -> list[Val | None] | None:
    return [ins[0]] if ins[0] is not None else None


def _cast_like(node: gs.Node, ins, vals) -> list[Val | None] | None:
    """Only the dtype of the second input matters, and it is static."""
    if ins[0] is None or node.inputs[1].dtype is None:
        return None
    to = np.dtype(node.inputs[1].dtype)
    if ins[0].const is not None:
        return [Val(const=ins[0].const.astype(to))]
    return [ins[0]] if to.kind in "iu" else None


def _gather(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is None or ins[1] is None or ins[1].const is None:
        return None
    elems = ins[0].as_elems()
    if elems is None or int(node.attrs.get("axis", 0)) != 0 or ins[0].is_scalar:
        return None
    idx = ins[1].const
    return [Val.of_elems([elems[int(i)] for i in np.atleast_1d(idx).reshape(-1)], scalar=idx.ndim == 0)]


def _unsqueeze(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is not None and ins[0].is_scalar and _axes(node, vals) in ([0], [-1]):
        return [Val.of_elems(ins[0].as_elems() or [], scalar=False)]
    return None


def _squeeze(node: gs.Node, ins, vals) -> list[Val | None] | None:
    elems = ins[0].as_elems() if ins[0] is not None else None
    if elems is not None and len(elems) == 1 and not ins[0].is_scalar and _axes(node, vals) in (None, [0], [-1]):
        return [Val.of_elems(elems, scalar=True)]
    return None


def _concat(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if int(node.attrs.get("axis", 0)) not in (0, -1):
        return None
    parts: list[Elem] = []
    for v in ins:
        e = v.as_elems() if v is not None and not v.is_scalar else None
        if e is None:
            return None
        parts += e
    return [Val.of_elems(parts)]


def _cast(node: gs.Node, ins, vals) -> list[Val | None] | None:
    to = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    return [ins[0]] if ins[0] is not None and np.dtype(to).kind in "iu" else None


def _reshape(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is None or ins[1] is None or ins[1].const is None:
        return None
    tgt = ins[1].const.reshape(-1)
    e = ins[0].as_elems()
    if e is not None and (list(tgt) in ([-1], [len(e)])):
        return [Val.of_elems(e)]
    if e is not None and len(e) == 1 and tgt.size == 0:
        return [Val.of_elems(e, scalar=True)]
    return None


def _slice(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is None or ins[0].is_scalar:
        return None
    e = ins[0].as_elems()
    rest = [v.const if v is not None else None for v in ins[1:]]
    if e is None or any(r is None for r in rest[:2]) or (len(rest) > 2 and node.inputs[3].name and rest[2] is None):
        return None
    starts, ends = int(rest[0].reshape(-1)[0]), int(rest[1].reshape(-1)[0])
    if len(rest) > 2 and rest[2] is not None and int(rest[2].reshape(-1)[0]) not in (0, -1):
        return None
    steps = int(rest[3].reshape(-1)[0]) if len(rest) > 3 and rest[3] is not None else 1
    return [Val.of_elems(e[slice(*slice(starts, min(ends, BIG), steps).indices(len(e)))])]


def _broadcast_pair(a: list[Elem] | None, b: list[Elem] | None) -> tuple[list[Elem], list[Elem]] | None:
    """Two element lists of equal length (a length-1 list repeated), or None."""
    if a is None or b is None:
        return None
    if len(a) == len(b):
        return a, b
    if len(a) == 1:
        return a * len(b), b
    if len(b) == 1:
        return a, b * len(a)
    return None


def _equal_elem(x: Elem, y: Elem) -> bool | None:
    if isinstance(x, int) and isinstance(y, int):
        return x == y
    if (isinstance(y, int) and y < 0 and _is_dim(x)) or (isinstance(x, int) and x < 0 and _is_dim(y)):
        return False  # a dim is never negative
    return True if x == y else None


def _equal(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is None or ins[1] is None:
        return None
    pair = _broadcast_pair(ins[0].as_elems(), ins[1].as_elems())
    if pair is None:
        return None
    out = [_equal_elem(x, y) for x, y in zip(*pair)]
    if any(o is None for o in out):
        return None
    arr = np.array(out, dtype=bool)
    return [Val(const=arr.reshape(()) if ins[0].is_scalar and ins[1].is_scalar else arr)]


def _where(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if any(v is None for v in ins) or ins[0].const is None:
        return None
    cond = np.atleast_1d(ins[0].const).astype(bool)
    a, b = ins[1].as_elems(), ins[2].as_elems()
    if a is None or b is None:
        return None
    n_out = max(len(cond), len(a), len(b))
    if any(len(z) not in (1, n_out) for z in (cond, a, b)):
        return None
    pick = lambda z, i: z[0] if len(z) == 1 else z[i]  # noqa: E731
    return [Val.of_elems([pick(a, i) if pick(cond, i) else pick(b, i) for i in range(n_out)])]


def _arithmetic(node: gs.Node, ins, vals) -> list[Val | None] | None:
    if ins[0] is None or ins[1] is None:
        return None
    pair = _broadcast_pair(ins[0].as_elems(), ins[1].as_elems())
    if pair is None:
        return None
    return [Val.of_elems([_arith(node.op, x, y) for x, y in zip(*pair)], scalar=ins[0].is_scalar and ins[1].is_scalar)]


_BEFORE_FOLDING: dict[str, Rule] = {
    "Constant": _constant,
    "Shape": _shape,
    "Size": _size,
    "Identity": _identity,
    "CastLike": _cast_like,
}
_SYMBOLIC: dict[str, Rule] = {
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": _concat,
    "Cast": _cast,
    "Reshape": _reshape,
    "Slice": _slice,
    "Equal": _equal,
    "Where": _where,
    "Add": _arithmetic,
    "Sub": _arithmetic,
    "Mul": _arithmetic,
    "Div": _arithmetic,
}


class ShapeChains(Pass):
    name = "shape-chains"
    summary = (
        "fold Shape/Gather/Unsqueeze/Concat chains (also with dynamic axes), constant "
        "Reshape targets with 0/-1, cancel Squeeze/Unsqueeze, Transpose, Reshape, Cast pairs"
    )
    needs_shapes = True

    rounds = 8  # a fold or a rebuilt shape makes the next node's inputs known

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        one = _Run(int(ctx.fold_limit), graph.opset, ctx.fold_budget)
        res = one.round(graph)
        ctx.fold_budget = one.budget  # what is left for the next round (the template's own copy of ctx)
        return res


class _Run:
    """The state of one shape-chains run: the fold limit and the graph's opset."""

    def __init__(self, limit: int, opset: int | None, budget: int | None = None) -> None:
        self.limit = limit
        self._opset = opset
        self.budget = budget  # bytes of new constants this run may add in all (None: no cap)
        self.over_budget: set[str] = set()
        self.over_limit: set[str] = set()  # tensors whose value is known but too large to fold

    def round(self, graph: gs.Graph) -> PassResult:
        """Evaluate, then every rule once (the template repeats the round while it rewrites); what
        could have folded and stays gets its reason."""
        res = PassResult()
        vals = self._evaluate(graph)
        self._fold_constants(graph, vals, res)
        self._dedupe(graph, vals, res)
        self._reshape_targets(graph, vals, res)
        self._rebuild(graph, vals, res)
        _cancel(graph, vals, res)
        self._left(graph, res)
        return res

    def _left(self, graph: gs.Graph, res: PassResult) -> None:
        """Why what could have folded stays: values over the fold limit, and each Shape/Size left."""
        for node in graph.nodes:
            if node.domain not in ("", "ai.onnx", None) or not node.outputs:
                continue
            x = node.inputs[0] if node.inputs else None
            if node.outputs[0].name in self.over_limit:
                res.refuse("its folded value would be larger than --fold-limit", node)
            elif node.outputs[0].name in self.over_budget:
                res.refuse("folding it would grow the model's weights beyond the fold budget", node)
            elif node.op not in ("Shape", "Size"):
                continue
            elif x.shape is None:
                res.refuse("input shape unknown (shape inference gave none)", node)
            else:
                res.refuse("reads a dynamic dim: stays computed at run time", node)

    def _evaluate(self, graph: gs.Graph) -> dict[str, Val]:
        vals: dict[str, Val] = {}
        for t in graph.tensors().values():
            if isinstance(t, gs.Constant):
                w = const_weight(t)  # the size first: a weight over the limit is never read
                if w is not None and int(np.prod(w.shape)) * w.dtype.itemsize <= self.limit:
                    vals[t.name] = Val(const=w.values)
        for node in graph.nodes:
            if node.domain not in ("", "ai.onnx", None):
                continue
            try:
                out = self._eval_node(node, vals)
            except Exception:  # noqa: BLE001 - an op we cannot evaluate is simply unknown
                out = None
            if out is None:
                continue
            for t, v in zip(node.outputs, out):
                if v is not None and t.name:
                    if v.const is not None and v.const.nbytes > self.limit:
                        self.over_limit.add(t.name)
                        continue
                    vals[t.name] = v
        return vals

    def _eval_node(self, node: gs.Node, vals: dict[str, Val]) -> list[Val | None] | None:
        """The node's outputs as values: its own rule first (Shape, Size, Identity, CastLike), then
        constant folding when every input is known, then the partly symbolic rule of its op type."""
        ins = [vals.get(t.name) if t.name else None for t in node.inputs]
        first = _BEFORE_FOLDING.get(node.op)
        got = first(node, ins, vals) if first is not None else None
        if got is not None:
            return got
        if all(v is not None and v.const is not None for v in ins):
            if node.op in FOLDABLE and node.op not in NONDETERMINISTIC and node.op != "Constant":
                return self._fold_node(node, vals)
            return None
        rule = _SYMBOLIC.get(node.op)
        return rule(node, ins, vals) if rule is not None else None

    def _fold_node(self, node: gs.Node, vals: dict[str, Val]) -> list[Val | None] | None:
        feeds = {t.name: vals[t.name].const for t in node.inputs if t.name}
        if sum(v.nbytes for v in feeds.values()) > self.limit:
            return None
        size = _output_nbytes(node, feeds)
        if size is not None and size > self.limit:  # known before computing it: never materialized
            self.over_limit.add(node.outputs[0].name)
            return None
        opset = self._opset or onnx.defs.onnx_opset_version()
        outs = None
        if len(node.outputs) == 1 and all(t.name for t in node.inputs):
            outs = _fold.fold(node.op, [feeds[t.name] for t in node.inputs], node.attrs, opset)
        if outs is None:
            from onnx.reference import ReferenceEvaluator
            from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

            outs = ReferenceEvaluator(OnnxExporter.export_node(node), opsets={"": opset}).run(None, feeds)
        res: list[Val | None] = []
        for t, o in zip(node.outputs, outs):
            o = np.asarray(o)
            if o.nbytes > self.limit:
                self.over_limit.add(t.name)
            res.append(Val(const=o) if o.nbytes <= self.limit else None)
        return res

    # -- rules ---------------------------------------------------------------------------------

    def _fold_constants(self, graph: gs.Graph, vals: dict[str, Val], res: PassResult) -> int:
        n = 0
        for node in list(graph.nodes):
            if node.op == "Constant" or node.domain not in ("", "ai.onnx", None) or not node.outputs:
                continue
            outs = node.outputs
            if not all(
                t.name in vals and vals[t.name].const is not None
                for t in outs
                if t.outputs or is_graph_output(graph, t)
            ):
                continue
            if any(is_graph_output(graph, t) for t in outs):
                continue
            if not any(t.outputs for t in outs):
                continue
            size = sum(vals[t.name].const.nbytes for t in outs if t.outputs)
            if self.budget is not None and size > SMALL_CONSTANT:
                if size > self.budget:
                    self.over_budget.add(outs[0].name)
                    continue
                self.budget -= size
            for t in list(outs):
                if not t.outputs:
                    continue
                c = vals[t.name].const
                const = gs.Constant(t.name + "_folded", np.ascontiguousarray(c))
                for consumer in list(t.outputs):
                    for i, inp in enumerate(consumer.inputs):
                        if inp is t:
                            consumer.inputs[i] = const
            res.count(f"folded {node.op}")
            n += 1
        return n

    def _dedupe(self, graph: gs.Graph, vals: dict[str, Val], res: PassResult) -> int:
        """Tensors that hold the same symbolic shape value (say ``[batch, seq]`` computed again in
        every layer) are computed once: later copies read the first one."""
        first: dict[tuple, gs.Tensor] = {}
        n = 0
        for node in list(graph.nodes):
            for t in node.outputs:
                v = vals.get(t.name)
                if v is None or v.elems is None or v.const is not None or t.dtype is None:
                    continue
                key = (tuple(v.elems), v.is_scalar, np.dtype(t.dtype).str)
                keep = first.get(key)
                if keep is None:
                    first[key] = t
                    continue
                if keep is t or is_graph_output(graph, t) or not t.outputs:
                    continue
                for consumer in list(t.outputs):
                    for i, inp in enumerate(consumer.inputs):
                        if inp is t:
                            consumer.inputs[i] = keep
                res.count("shape value computed once")
                n += 1
        return n

    def _rebuild(self, graph: gs.Graph, vals: dict[str, Val], res: PassResult) -> int:
        """A 1-D shape value made of dims and constants, assembled by Shape→Gather→Unsqueeze→Concat,
        is rebuilt as ``Concat(Shape(t, start, end), const, ...)``: one Shape node per run of
        consecutive dims of one tensor (opset 15+)."""
        if (self._opset or 0) < 15:
            return 0
        by_name = graph.tensors()
        # where each named dim can first be read: graph inputs, then node outputs in topological order
        param_src: dict[str, tuple[gs.Tensor, int]] = {}
        for t in list(graph.inputs) + [o for nd in graph.nodes for o in nd.outputs]:
            for i, d in enumerate(t.shape or []):
                if isinstance(d, str) and d:
                    param_src.setdefault(d, (t, i))
        n = 0
        done: dict[str, gs.Tensor] = {}
        for node in list(graph.nodes):
            if node.op in ("Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice", "Identity"):
                continue  # rebuild where the value is used, not inside the chain
            for i, t in enumerate(list(node.inputs)):
                if not t.name or isinstance(t, gs.Constant) or t.name in done:
                    if t.name in done:
                        node.inputs[i] = done[t.name]
                    continue
                v = vals.get(t.name)
                if v is None or v.elems is None or v.const is not None or v.is_scalar or not t.inputs:
                    continue
                if np.dtype(t.dtype or np.int64) != np.int64 or self._canonical(t):
                    continue
                pieces = self._pieces(v.elems, by_name, param_src)
                if pieces is None:
                    continue
                parts: list[gs.Tensor] = []
                for kind, a, b in pieces:
                    if isinstance(kind, str):
                        parts.append(gs.Constant(f"{t.name}_c{len(parts)}", np.array(a, dtype=np.int64)))
                    else:
                        out = gs.Variable(f"{t.name}_s{len(parts)}", dtype=np.int64, shape=[b - a])
                        graph.nodes.append(
                            gs.Node("Shape", f"{t.name}_shape{len(parts)}", {"start": a, "end": b}, [kind], [out])
                        )
                        parts.append(out)
                if len(parts) == 1 and isinstance(parts[0], gs.Variable):
                    new = parts[0]
                else:
                    new = gs.Variable(f"{t.name}_rebuilt", dtype=np.int64, shape=[len(v.elems)])
                    graph.nodes.append(gs.Node("Concat", f"{t.name}_concat", {"axis": 0}, parts, [new]))
                node.inputs[i] = new
                done[t.name] = new
                res.count("shape value rebuilt from Shape(start, end)")
                n += 1
        return n

    @staticmethod
    def _canonical(t: gs.Tensor) -> bool:
        p = t.inputs[0]
        if p.op == "Shape":
            return True
        if p.op == "Concat":
            return all(
                isinstance(x, gs.Constant) or (x.inputs and x.inputs[0].op in ("Shape", "Constant")) for x in p.inputs
            )
        return False

    @staticmethod
    def _pieces(elems, by_name, param_src) -> list[tuple] | None:
        """[("const", [ints], None) | (tensor, start, end)] covering ``elems`` in order."""
        out: list[list] = []
        for e in elems:
            if isinstance(e, int):
                if out and isinstance(out[-1][0], str):
                    out[-1][1].append(e)
                else:
                    out.append(["const", [e], None])
                continue
            if not _is_dim(e):
                return None
            if e[0] == "dim":
                src = by_name.get(e[1])
                if src is None:
                    return None
                axis = e[2]
            else:
                if e[1] not in param_src:
                    return None
                src, axis = param_src[e[1]]
            last = out[-1] if out else None
            if last is not None and last[0] is src and last[2] == axis:
                last[2] = axis + 1
            else:
                out.append([src, axis, axis + 1])
        return [tuple(p) for p in out]

    def _reshape_targets(self, graph: gs.Graph, vals: dict[str, Val], res: PassResult) -> int:
        n = 0
        for node in graph.nodes:
            if node.op != "Reshape" or len(node.inputs) < 2 or isinstance(node.inputs[1], gs.Constant):
                continue
            v = vals.get(node.inputs[1].name)
            if v is None or v.elems is None:
                continue
            x = node.inputs[0]
            allowzero = int(node.attrs.get("allowzero", 0))
            new: list[int] = []
            unknown = 0
            for k, e in enumerate(v.elems):
                if isinstance(e, int):
                    if e == 0 and allowzero:
                        new.append(0)
                    elif e == -1:
                        unknown += 1
                        new.append(-1)
                    else:
                        new.append(e)
                elif not allowzero and x.shape is not None and k < len(x.shape) and dim_elem(x, k) == e:
                    new.append(0)
                else:
                    unknown += 1
                    new.append(-1)
            if unknown > 1:
                continue
            node.inputs[1] = gs.Constant(f"{node.name or node.outputs[0].name}_shape", np.array(new, dtype=np.int64))
            res.count("Reshape target made constant")
            n += 1
        return n


# -- pairs that cancel or merge, ops that do nothing --------------------------------------------


def _cancel(graph: gs.Graph, vals: dict[str, Val], res: PassResult) -> int:
    """Pairs that cancel or merge and single ops that do nothing: one rule an op type. A rule
    returns (tensor the output equals, what) to bypass the node, or (None, what) when it
    rewrote the node in place (a merged pair)."""
    n = 0
    for node in list(graph.nodes):
        if not node.outputs or not node.inputs or node.domain not in ("", "ai.onnx", None):
            continue
        rule = _CANCEL.get(node.op)
        got = rule(node, vals) if rule is not None else None
        if got is None:
            continue
        keep, what = got
        if keep is None:
            res.count(what)
            n += 1
        elif keep is not node.outputs[0] and bypass(graph, node, keep, node.outputs[0]):
            res.count(what)
            n += 1
    return n


def _cancel_squeeze_pair(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    prev = _producer(node.inputs[0])
    if prev is None or prev.op not in ("Squeeze", "Unsqueeze") or prev.op == node.op:
        return None
    a1, a2 = _axes(prev, vals), _axes(node, vals)
    big = node.inputs[0] if node.op == "Squeeze" else prev.inputs[0]  # the larger-rank tensor of the two
    rank = len(big.shape) if big.shape is not None else None
    if a1 is None or a2 is None or (rank is None and not all(a >= 0 for a in a1 + a2)):
        return None
    norm = (lambda ax: sorted(a % rank for a in ax)) if rank is not None else sorted
    return (prev.inputs[0], f"{prev.op}/{node.op} pair removed") if norm(a1) == norm(a2) else None


def _cancel_transpose(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    perm = node.attrs.get("perm")
    if perm is None:
        return None
    perm = list(perm)
    if perm == list(range(len(perm))):
        return node.inputs[0], "identity Transpose removed"
    prev = _producer(node.inputs[0])
    if prev is None or prev.op != "Transpose" or prev.attrs.get("perm") is None:
        return None
    p1 = list(prev.attrs["perm"])
    q = [p1[i] for i in perm]
    if q == list(range(len(q))):
        return prev.inputs[0], "Transpose pair cancelled"
    node.inputs[0] = prev.inputs[0]
    node.attrs["perm"] = q
    return None, "Transpose pair merged"


def _cancel_reshape(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    if len(node.inputs) < 2:
        return None
    tgt = const_value(node.inputs[1])
    if tgt is None:
        return None
    prev = _producer(node.inputs[0])
    if prev is not None and prev.op == "Reshape" and not int(prev.attrs.get("allowzero", 0)) and not np.any(tgt == 0):
        node.inputs[0] = prev.inputs[0]
        return None, "Reshape pair merged"
    if _same_shape_target(node.inputs[0], tgt, int(node.attrs.get("allowzero", 0)), node.outputs[0]):
        return node.inputs[0], "no-op Reshape removed"
    return None


def _cancel_cast(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    x = node.inputs[0]
    to = onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"]))
    return (x, "no-op Cast removed") if x.dtype is not None and np.dtype(x.dtype) == np.dtype(to) else None


def _cancel_expand(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    x = node.inputs[0]
    v = vals.get(node.inputs[1].name) if len(node.inputs) > 1 else None
    e = v.as_elems() if v is not None else None
    if e is None or x.shape is None or len(e) != len(x.shape):
        return None
    return (x, "no-op Expand removed") if all(el == 1 or el == dim_elem(x, k) for k, el in enumerate(e)) else None


def _cancel_slice(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    return (node.inputs[0], "whole-tensor Slice removed") if _whole_slice(node, vals) else None


def _cancel_flatten(node: gs.Node, vals: dict[str, Val]) -> tuple[gs.Tensor | None, str] | None:
    x = node.inputs[0]
    if x.shape is not None and len(x.shape) == 2 and int(node.attrs.get("axis", 1)) in (1, -1):
        return x, "no-op Flatten removed"
    return None


def _same_shape_target(x: gs.Tensor, tgt: np.ndarray, allowzero: int, y: gs.Tensor) -> bool:
    shape = x.shape
    if shape is None or tgt.ndim != 1 or len(tgt) != len(shape):
        return False
    unknown = 0
    for k, t in enumerate(int(v) for v in tgt):
        d = shape[k]
        if t == 0 and not allowzero:
            continue
        if t == -1:
            unknown += 1
            continue
        if not (isinstance(d, int) and d == t):
            return False
    if unknown == 0:
        return True
    # one -1 among otherwise equal dims: it infers the remaining dim, which is then equal too
    return unknown == 1


def _whole_slice(node: gs.Node, vals: dict[str, Val]) -> bool:
    x = node.inputs[0]
    if x.shape is None or len(node.inputs) < 3:
        return False
    get = [const_value(t) if t.name else None for t in node.inputs[1:]]
    starts, ends = get[0], get[1]
    axes = get[2] if len(get) > 2 else None
    steps = get[3] if len(get) > 3 else None
    if starts is None or ends is None or (len(node.inputs) > 3 and node.inputs[3].name and axes is None):
        return False
    if len(node.inputs) > 4 and node.inputs[4].name and steps is None:
        return False
    rank = len(x.shape)
    axes_l = [int(a) % rank for a in (axes if axes is not None else range(len(starts)))]
    for i, ax in enumerate(axes_l):
        s, e = int(starts[i]), int(ends[i])
        st = int(steps[i]) if steps is not None else 1
        if st != 1 or s != 0:
            return False
        d = x.shape[ax]
        if e >= 2**31 - 1:
            continue
        if isinstance(d, int) and e >= d:
            continue
        return False
    return True


def _output_nbytes(node: gs.Node, feeds: dict[str, np.ndarray]) -> int | None:
    """Bytes of the output of an op that makes a large tensor from small inputs, before it is
    computed (ConstantOfShape, Expand, Tile); None for other ops (their output is at most as
    large as what they read, give or take)."""
    ins = [feeds.get(t.name) if t.name else None for t in node.inputs]
    try:
        if node.op == "ConstantOfShape":
            value = node.attrs.get("value")
            item = np.dtype(value.dtype).itemsize if value is not None else 4
            return int(np.prod(ins[0].astype(np.int64))) * item
        if node.op == "Expand":
            shape = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1].reshape(-1)))
            return int(np.prod(shape)) * ins[0].dtype.itemsize
        if node.op == "Tile":
            return int(ins[0].nbytes * np.prod(ins[1].astype(np.int64)))
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return None


def _producer(t: gs.Tensor) -> gs.Node | None:
    return t.inputs[0] if len(t.inputs) == 1 else None


_CANCEL: dict[str, Callable[..., tuple[gs.Tensor | None, str] | None]] = {
    "Squeeze": _cancel_squeeze_pair,
    "Unsqueeze": _cancel_squeeze_pair,
    "Transpose": _cancel_transpose,
    "Reshape": _cancel_reshape,
    "Cast": _cancel_cast,
    "Expand": _cancel_expand,
    "Slice": _cancel_slice,
    "Flatten": _cancel_flatten,
}
