"""fold-conv-bn: fold BatchNormalization and per-channel constant affine ops into the weights
of the linear op before them (the activation after a Conv is conv-activation's work).

Algebra. A linear producer computes, per output channel ``o``::

    y[o] = sum_i W[o, i] * x[i] + B[o]

and a per-channel affine follower computes ``z[o] = a[o] * y[o] + b[o]``, so::

    z[o] = sum_i (a[o] * W[o, i]) * x[i] + (a[o] * B[o] + b[o])

i.e. ``W' = a ⊙_o W`` and ``B' = a ⊙ B + b``. The followers and their ``(a, b)``:

- BatchNormalization (inference): ``a = scale / sqrt(var + eps)``, ``b = bias - mean * a``
- Mul by a constant ``c``: ``a = c, b = 0``;  Div by ``c``: ``a = 1 / c, b = 0``
- Add ``c``: ``a = 1, b = c``;  Sub ``c`` (``y - c``): ``a = 1, b = -c``; ``c - y``: ``a = -1, b = c``

A scalar before the producer folds into its weights alone: ``(c · x) ⋆ W + B = x ⋆ (c · W) + B``
for a Mul by a scalar constant ``c`` (Div: ``1 / c``) whose product only the producer reads, as
its data input (Conv's zero padding scales with it). onnxsim leaves one where it folded the 0.5 of
a GELU into the next Conv and gelu-fusion wrote ``2 · Gelu(x)`` back.

For the followers, ``c`` is a scalar or broadcasts along the output-channel axis only
(``[C]``, ``[C,1,1]``, ``[1,C,1,1]`` for a Conv; ``[N]``/``[1,N]`` for Gemm/MatMul).
The output-channel axis of the weights: Conv ``W[Cout, Cin/g, k...]`` axis 0;
ConvTranspose ``W[Cin, Cout/g, k...]``: channel ``o = g*(Cout/g) + j`` lives at
``W[g*Cin/g : (g+1)*Cin/g, j]``; Gemm ``B[K, N]`` axis 1 (``B[N, K]`` axis 0 with
``transB``), its bias ``C`` becomes ``beta * C * a + b`` with ``beta = 1``;
MatMul with a constant 2-D ``B[K, N]`` axis 1. A MatMul has no bias: a Mul folds
into it, an Add directly after it is its bias and BN/Mul after that Add fold
into both; a BatchNormalization directly after a bias-less MatMul on a rank-2
tensor becomes an Add of ``b``.

Per-channel arithmetic is float64; weights are multiplied in float32 (float64 weights in float64)
and cast back to the weight dtype (fp16 models stay fp16).
New weights are always new initializers: a weight shared with another node is
never changed under that node.

Refuses (the node is left as it is): training-mode BatchNormalization
(``training_mode=1`` or its extra outputs used); non-constant weights, bias or
follower parameters; a producer output with another consumer or that is a
graph output (the unscaled value is observable); a scalar Mul/Div before the producer whose
product another node reads too; a constant that broadcasts
over non-channel axes or would grow the output's rank; non-float weights;
a Div by a constant with zeros.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import Weight, const_weight, eval_const, is_graph_output, single_consumer
from rooftop.passes.base import Pass, PassContext, PassResult, Refused, constant_names

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass
class Linear:
    """A producer whose output channels can absorb a per-channel affine map."""

    node: gs.Node
    weight: Weight | np.ndarray  # a Weight until folded (read only then), the folded array after
    bias: np.ndarray | None  # length C (already multiplied by Gemm's beta), or None
    channels: int
    out_rank: int | None  # rank of the output tensor when known
    chan_axis: int  # output-channel axis of the *output tensor* (1 for Conv/BN, -1 for MatMul)
    bias_add: gs.Node | None = None  # MatMul's bias Add, if any
    out: gs.Tensor | None = None  # the tensor the followers read


def _float(a: Weight | np.ndarray | None) -> bool:
    return a is not None and a.dtype.kind == "f"


def _per_channel(c: np.ndarray, C: int, out_rank: int | None, chan_axis: int) -> np.ndarray | None:
    """``c`` as a length-C vector if it broadcasts along the channel axis only, else None."""
    c = np.asarray(c)
    if c.size == 1:
        if out_rank is not None and c.ndim > out_rank:
            return None
        if out_rank is None and c.ndim > 1:
            return None
        return np.full(C, c.reshape(()).astype(np.float64))
    if out_rank is None:
        if chan_axis != -1 or c.ndim != 1:
            return None
        out_rank = 1
    if c.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - c.ndim) + c.shape
    ax = chan_axis % out_rank
    for i, d in enumerate(shape):
        if i == ax:
            if d not in (1, C):
                return None
        elif d != 1:
            return None
    if shape[ax] != C:
        return None
    return c.reshape(-1).astype(np.float64)


def _candidate(f: gs.Node) -> bool:
    """A follower worth a refusal line: a BatchNormalization, or Mul/Add/Sub/Div by a constant."""
    if f.op == "BatchNormalization":
        return True
    return f.op in ("Mul", "Add", "Sub", "Div") and any(isinstance(t, gs.Constant) for t in f.inputs)


def _unreached_batchnorms(graph: gs.Graph, res: PassResult) -> None:
    """BatchNormalizations no producer reached (after a Relu, a Concat, a graph input ...): say why."""
    named = {n for names in res.refusals.values() for n in names}
    for bn in graph.nodes:
        if bn.op != "BatchNormalization" or not bn.inputs or (bn.name or bn.outputs[0].name) in named:
            continue
        x = bn.inputs[0]
        prod = x.inputs[0] if len(x.inputs) == 1 else None
        if prod is None:
            res.refuse("input is not produced by a node (graph input or constant)", bn)
        elif prod.op not in PRODUCERS:
            res.refuse(f"follows {prod.op}, not a Conv, ConvTranspose, Gemm or MatMul", bn)
        elif len(x.outputs) > 1 or is_graph_output(graph, x):
            res.refuse(f"the {prod.op} output has other consumers", bn)
        else:
            with res.refusing(bn):
                _linear(prod, graph)
                res.refuse(f"the {prod.op} cannot absorb it", bn)


def _follower_affine(node: gs.Node, y: gs.Tensor, lin: Linear, graph: gs.Graph) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of a per-channel affine follower of ``y``; ``Refused`` with the reason it is not one."""
    C = lin.channels
    if node.op == "BatchNormalization":
        if node.inputs[0] is not y:
            raise Refused("BN reads the tensor as a parameter")
        if int(node.attrs.get("training_mode", 0)) != 0:
            raise Refused("training-mode BatchNormalization")
        if any(o.outputs or is_graph_output(graph, o) for o in node.outputs[1:]):
            raise Refused("BatchNormalization running statistics are used")
        if lin.chan_axis != 1 and lin.out_rank != 2:
            raise Refused("BatchNormalization channel axis is not the producer's output-channel axis")
        vals = [eval_const(t) for t in node.inputs[1:5]]
        if any(v is None for v in vals):
            raise Refused("BatchNormalization parameters are not constant")
        scale, bias, mean, var = (np.asarray(v, dtype=np.float64).reshape(-1) for v in vals)  # type: ignore[arg-type]
        if not all(v.size in (1, C) for v in (scale, bias, mean, var)):
            raise Refused("BatchNormalization parameter length does not match channels")
        eps = float(node.attrs.get("epsilon", 1e-5))
        a = scale / np.sqrt(var + eps)
        b = bias - mean * a
        return np.broadcast_to(a, (C,)).copy(), np.broadcast_to(b, (C,)).copy()
    if node.op not in ("Mul", "Add", "Sub", "Div") or len(node.inputs) != 2:
        raise Refused(f"{node.op} is not a per-channel affine op")
    if node.inputs[0] is y and node.inputs[1] is y:
        raise Refused("both operands are the producer's output")
    y_first = node.inputs[0] is y
    other = node.inputs[1] if y_first else node.inputs[0]
    c = eval_const(other)
    if c is None:
        raise Refused(f"{node.op} operand is not constant")
    if c.dtype.kind != "f":
        raise Refused(f"{node.op} constant is not float")
    v = _per_channel(c, C, lin.out_rank, lin.chan_axis)
    if v is None:
        raise Refused(f"{node.op} constant of shape {list(c.shape)} is not per-channel")
    one, zero = np.ones(C), np.zeros(C)
    if node.op == "Mul":
        return v, zero
    if node.op == "Add":
        return one, v
    if node.op == "Sub":
        return (one, -v) if y_first else (-one, v)
    if not y_first:
        raise Refused("constant divided by the tensor is not affine")
    if np.any(v == 0):
        raise Refused("division by a constant with zeros")
    return 1.0 / v, zero


def _linear(node: gs.Node, graph: gs.Graph) -> Linear:
    """Describe ``node`` as a foldable producer; ``Refused`` says why it is not one."""
    if node.op in ("Conv", "ConvTranspose"):
        W = const_weight(node.inputs[1]) if len(node.inputs) > 1 else None
        if not _float(W):
            raise Refused("weights are not a float constant")
        B = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            # exporters may build a zero bias at run time (Expand/CastLike of constants): evaluate it
            B = eval_const(node.inputs[2])
            if B is None:
                raise Refused("bias is not constant")
        if node.op == "Conv":
            C = W.shape[0]
        else:
            g = int(node.attrs.get("group", 1))
            C = W.shape[1] * g
        return Linear(node, W, None if B is None else B.astype(np.float64).reshape(-1), C, W.ndim, 1)
    if node.op == "Gemm":
        B = const_weight(node.inputs[1])
        if not _float(B) or B.ndim != 2:
            raise Refused("Gemm B is not a 2-D float constant")
        transB = int(node.attrs.get("transB", 0))
        N = B.shape[0] if transB else B.shape[1]
        bias = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            c = eval_const(node.inputs[2])
            if c is None:
                raise Refused("Gemm C is not constant")
            if c.size not in (1, N) or (c.ndim == 2 and c.shape[0] != 1):
                raise Refused("Gemm C is not per-column")
            bias = np.broadcast_to(c.astype(np.float64).reshape(-1), (N,)) * float(node.attrs.get("beta", 1.0))
        return Linear(node, B, bias, N, 2, 1)
    if node.op == "MatMul":
        B = const_weight(node.inputs[1])
        if not _float(B) or B.ndim != 2:
            raise Refused("MatMul B is not a 2-D float constant")
        a_shape = node.inputs[0].shape if isinstance(node.inputs[0], gs.Variable) else None
        rank = max(len(a_shape), 2) if a_shape is not None else None
        lin = Linear(node, B, None, B.shape[1], rank, -1)
        y = node.outputs[0]
        nxt = single_consumer(y)
        if nxt is not None and nxt.op == "Add" and not is_graph_output(graph, y):
            with contextlib.suppress(Refused):  # an Add that is not a bias is a follower, or nothing
                a, b = _follower_affine(nxt, y, lin, graph)
                if np.all(a == 1):
                    lin.bias, lin.bias_add = b, nxt
        return lin
    raise Refused(f"{node.op} is not a linear producer")


def _apply(lin: Linear, a: np.ndarray, b: np.ndarray) -> None:
    """Fold ``z = a*y + b`` into ``lin`` in place (its arrays, not the graph).

    The per-channel factors are float64; the weight is multiplied in float32 (float64 weights
    in float64) after rounding the factor once: one rounding per weight, and no float64 copy
    of a weight that may be gigabytes."""
    W = _wide(lin)
    aw = a.astype(W.dtype)
    node = lin.node
    if node.op == "Conv":
        W = W * aw.reshape((-1,) + (1,) * (W.ndim - 1))
    elif node.op == "ConvTranspose":
        g = int(node.attrs.get("group", 1))
        cin, cog = W.shape[0], W.shape[1]
        Wg = W.reshape((g, cin // g, cog) + W.shape[2:])
        Wg = Wg * aw.reshape((g, 1, cog) + (1,) * (W.ndim - 2))
        W = Wg.reshape(W.shape)
    elif node.op == "Gemm" and int(node.attrs.get("transB", 0)):
        W = W * aw[:, None]
    else:  # Gemm (B[K, N]) and MatMul
        W = W * aw[None, :]
    lin.weight = W
    base = lin.bias if lin.bias is not None else np.zeros(lin.channels)
    lin.bias = base * a + b


def _wide(lin: Linear) -> np.ndarray:
    """``lin``'s weight in float32 (float64 when stored so) for the folding arithmetic."""
    wide = np.float64 if lin.weight.dtype == np.float64 else np.float32
    return np.asarray(lin.weight.values if isinstance(lin.weight, Weight) else lin.weight).astype(wide, copy=False)


def _write(lin: Linear, dtype: np.dtype, name: str) -> None:
    """Put the folded weights and bias back on the node as fresh constants."""
    node = lin.node
    node.inputs[1] = gs.Constant(f"{name}_W", lin.weight.astype(dtype, copy=False))
    bias = lin.bias
    if bias is None:
        return
    if lin.bias_add is not None:
        add = lin.bias_add
        i = 1 if add.inputs[0] is node.outputs[0] else 0
        add.inputs[i] = gs.Constant(f"{name}_B", bias.astype(dtype))
        return
    if node.op == "MatMul":  # bias-less producer that still needs one: caller handles
        return
    while len(node.inputs) < 3:
        node.inputs.append(gs.Variable.empty())
    node.inputs[2] = gs.Constant(f"{name}_B", bias.astype(dtype))
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0


def _copy_bytes(node: gs.Node) -> int:
    """Bytes a fold adds: the weight's size when another node reads it too (it is copied, not
    changed under that node), else nothing (the folded weight replaces it)."""
    w = node.inputs[1]
    if len(w.outputs) < 2:
        return 0
    cw = const_weight(w)
    return 0 if cw is None else int(np.prod(cw.shape)) * cw.dtype.itemsize


class FoldConvBN(Pass):
    name = "fold-conv-bn"
    summary = "fold BatchNorm and per-channel Mul/Add/Sub/Div into Conv, ConvTranspose, Gemm, MatMul weights"
    needs_shapes = True

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        """Idle when no linear producer has a constant weight (a QDQ graph's weights are DequantizeLinear outputs)."""
        consts = constant_names(model)
        linear = any(n.op_type in PRODUCERS and len(n.input) > 1 and n.input[1] in consts for n in model.graph.node)
        return None if linear else PassResult()

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        folded: dict[str, int] = {}
        budget = ctx.fold_budget  # bytes of weights this run may add (copies of shared weights)
        for node in list(graph.nodes):
            if node.op not in PRODUCERS or not node.outputs:
                continue
            try:
                lin = _linear(node, graph)
            except Refused:
                continue  # (a BatchNorm it leaves says why: _unreached_batchnorms)
            dtype = lin.weight.dtype
            lead = _leading_scalar(graph, node, res)
            if lead is not None:  # its weight scaled now, its bias not
                W = _wide(lin)
                lin.weight = W * W.dtype.type(lead[2])
            removed, bn_to_add = _followers(graph, node, lin, res)
            if not removed and bn_to_add is None and lead is None:
                continue
            copy = _copy_bytes(node)
            if copy and budget is not None:
                if copy > budget:
                    res.refuse(
                        "weight shared with other nodes: a folded copy would grow the weights beyond the fold budget",
                        removed[0] if removed else node,
                    )
                    continue
                budget -= copy
            _write(lin, dtype, node.name or node.outputs[0].name)
            _absorb(lin, node, removed)
            if lead is not None:
                scale, node.inputs[0] = lead[0], lead[1]
                folded[f"scalar {scale.op}"] = folded.get(f"scalar {scale.op}", 0) + 1
                scale.inputs.clear()
                scale.outputs.clear()
                res.count(f"scalar-into-{node.op.lower()}")
            for f in removed:
                folded[f.op] = folded.get(f.op, 0) + 1
                res.count(f"{'bn' if f.op == 'BatchNormalization' else 'affine'}-into-{node.op.lower()}")
            if bn_to_add is not None:
                _bn_as_add(*bn_to_add, dtype)
                folded["BatchNormalization→Add"] = folded.get("BatchNormalization→Add", 0) + 1
                res.count("bn-to-add")
        _unreached_batchnorms(graph, res)
        for what, n in folded.items():
            res.notes.append(f"folded {n} {what}")
        return res


def _leading_scalar(graph: gs.Graph, node: gs.Node, res: PassResult) -> tuple[gs.Node, gs.Tensor, float] | None:
    """(the Mul or Div, the tensor it scales, the factor) when the producer's data input is that
    tensor times a scalar constant, read by the producer alone; a scaled input read elsewhere too
    is refused with that reason."""
    x = node.inputs[0]
    m = x.inputs[0] if len(x.inputs) == 1 else None
    if m is None or m.op not in ("Mul", "Div") or len(m.inputs) != 2:
        return None
    sides = [eval_const(t) for t in m.inputs]
    i = 1 if m.op == "Div" or sides[0] is None else 0  # the constant's side
    c = sides[i]
    if c is None or sides[1 - i] is not None or c.size != 1 or c.dtype.kind != "f":
        return None
    if single_consumer(x) is not node or is_graph_output(graph, x) or any(t is x for t in node.inputs[1:]):
        res.refuse(f"the scalar {m.op} before the {node.op} is read by another node too", m)
        return None
    c = float(c.reshape(()))
    if m.op == "Div" and c == 0:
        return None
    return m, m.inputs[1 - i], 1.0 / c if m.op == "Div" else c


def _followers(
    graph: gs.Graph, node: gs.Node, lin: Linear, res: PassResult
) -> tuple[list[gs.Node], tuple[gs.Node, np.ndarray] | None]:
    """Walk the chain of per-channel affine followers, applying each to ``lin``'s arrays (the graph
    is not changed yet). Returns the followers taken, and a BatchNorm that must become Add(b) (after
    a bias-less MatMul on a rank-2 tensor)."""
    y = lin.bias_add.outputs[0] if lin.bias_add is not None else node.outputs[0]
    removed: list[gs.Node] = []
    while not is_graph_output(graph, y):
        f = single_consumer(y)
        if f is None:
            break
        try:
            a, b = _follower_affine(f, y, lin, graph)
        except Refused as r:
            if _candidate(f):
                res.refuse(r.reason, f)
            break
        if node.op == "MatMul" and lin.bias_add is None and np.any(b != 0):
            # a bias-less MatMul cannot take b: BN on a 2-D tensor becomes Add(b)
            if f.op == "BatchNormalization" and lin.out_rank == 2:
                _apply(lin, a, np.zeros_like(b))
                lin.bias = None
                return removed, (f, b)
            break
        _apply(lin, a, b)
        removed.append(f)
        y = f.outputs[0]
    return removed, None


def _absorb(lin: Linear, node: gs.Node, removed: list[gs.Node]) -> None:
    """The producer (or its bias Add) now writes the last follower's output."""
    if not removed:
        return
    tail = lin.bias_add if lin.bias_add is not None else node
    final_out = removed[-1].outputs[0]
    for f in removed:
        f.outputs.clear()
        f.inputs.clear()
    tail.outputs[0] = final_out


def _bn_as_add(bn: gs.Node, b: np.ndarray, dtype: np.dtype) -> None:
    x = bn.inputs[0]
    bn.op = "Add"
    bn.attrs.clear()
    while len(bn.outputs) > 1:
        bn.outputs.pop()
    bn.inputs.clear()
    bn.inputs.extend([x, gs.Constant(f"{bn.name or x.name}_shift", b.astype(dtype))])
