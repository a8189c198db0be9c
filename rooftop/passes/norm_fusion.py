"""norm-fusion: LayerNorm and RMSNorm written out as a dozen ops become one normalization op.

Every op of a decomposed norm reads and writes the whole activation: the textbook memory-bound
case. One fused op reads it once and writes it once.

Algebra. Over the last k axes (the reduced ones), with ``mean`` a ReduceMean keeping dims:

- LayerNorm, as exporters write it:
  ``d = x - mean(x); y = d / sqrt(mean(d²) + ε) [* γ] [+ β]``
  (``d²`` as ``Pow(d, 2)`` or ``d * d``; ``/ s`` as ``Div`` or ``* Reciprocal(s)``)
  is ``LayerNormalization(x, γ or 1, β; axis=-k, epsilon=ε)`` (opset 17).
- RMSNorm (T5, LLaMA): ``y = x / sqrt(mean(x²) + ε) [* γ]`` (``Reciprocal``, ``Div(1, s)`` and
  ``Div(x, s)`` forms) is ``RMSNormalization(x, γ or 1; axis=-k, epsilon=ε)`` (opset 23).
  (onnxruntime's own SimplifiedLayerNormalization lives in the standard domain, where the ONNX
  checker does not know it, and it does not load from com.microsoft: no older-opset form.)

With ``--target onnxruntime`` a LayerNormalization over the last axis of a residual sum
``a + b`` (equal shapes) then becomes com.microsoft ``SkipLayerNormalization(a, b, γ, β)``, the sum
kept as its fourth output when something else reads it: one pass over the activation for both;
an RMSNormalization of such a sum likewise becomes ``SkipSimplifiedLayerNormalization(a, b, γ)``.
Below the standard op's opset a decomposed norm of such a sum goes straight to its Skip… form
(the com.microsoft ops need no opset); one of anything else is refused with the opset.
On the CPU execution provider the LayerNorm Skip form is refused: onnxruntime's CPU
SkipLayerNormalization runs slower than its Add + LayerNormalization where the next residual
reads the sum, and gains nothing where it does not (onnxruntime fuses that form into the same
kernel itself; residual-sum keeps it out) (benchmarks/bench_skip_layernorm.py);
SkipSimplifiedLayerNormalization does not lose, and stays.

The fused ops compute in float32 like the pattern; results agree to rounding (verified).
LayerNorm is matched first, so its centred half is never taken for an RMSNorm.

Refuses (the ops are left, the reason recorded on the first ReduceMean or the square): the
model's opset below the op's (``--opset`` converts the model; the reason names the opset);
ε not a constant; reduced axes other than the trailing ones; a second ReduceMean over other
axes; γ or β not constants, or not shaped like the normalized dims; an intermediate read by
another node or a graph output; normalized dims unknown when there is no γ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import Namer, const_value
from rooftop.passes._match import (
    STANDARD,
    near,
    only_consumer,
    other_input,
    producer,
    reduce_axes,
    replace,
    same_shape,
    scalar,
    trailing,
)
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

CPU = "CPUExecutionProvider"
LAYERNORM_OPSET = 17
RMSNORM_OPSET = 23
SKIP_FORMS = {
    "LayerNormalization": ("SkipLayerNormalization", "layernorm"),
    "RMSNormalization": ("SkipSimplifiedLayerNormalization", "rmsnorm"),
}


@dataclass
class Norm:
    """A matched normalization: input, output, ε, how many trailing axes, affine constants."""

    x: gs.Tensor
    out: gs.Tensor
    eps: float
    k: int
    nodes: list[gs.Node] = field(default_factory=list)
    scale: gs.Tensor | None = None
    bias: gs.Tensor | None = None


class NormFusion(Pass):
    name = "norm-fusion"
    summary = "decomposed LayerNorm / RMSNorm → LayerNormalization (opset 17) / RMSNormalization (opset 23)"
    needs_shapes = True

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        """Idle without a decomposed norm's ReduceMean and Sqrt (a global average pool is a
        ReduceMean alone) or, for the onnxruntime target, a normalization op to put a skip into."""
        ops = {n.op_type for n in model.graph.node}
        if {"ReduceMean", "Sqrt"} <= ops or (ctx.target == "onnxruntime" and ops & set(SKIP_FORMS)):
            return None
        return PassResult()

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return _Run(ctx.target, ctx.provider, graph).run(graph)


class _Run:
    def __init__(self, target: str, provider: str, graph: gs.Graph) -> None:
        self.target = target
        self.provider = provider
        self.opset = int(graph.opset or 0)
        self.names = Namer(graph)
        self.res = PassResult()

    def run(self, graph: gs.Graph) -> PassResult:
        for node in list(graph.nodes):
            if node.op == "ReduceMean" and node.domain in STANDARD and node.outputs:
                with self.res.refusing(node):
                    self._try(graph, _layernorm(graph, node), "layernorm")
        for node in list(graph.nodes):
            if node.op in ("Pow", "Mul") and node.domain in STANDARD and node.outputs:
                with self.res.refusing(node):
                    self._try(graph, _rmsnorm(graph, node), "rmsnorm")
        if self.target == "onnxruntime":
            for node in list(graph.nodes):
                if node.op in SKIP_FORMS and node.domain in STANDARD and node.outputs:
                    with self.res.refusing(node):
                        self._skip(graph, node)
        if self.res.rewrites:
            self.res.notes.append(", ".join(f"{k} {v}" for k, v in sorted(self.res.counts.items())))
        return self.res

    def _try(self, graph: gs.Graph, m: Norm | None, kind: str) -> None:
        """Write the matched norm ``m`` (None: not a candidate); raises ``Refused``."""
        if m is None:
            return
        op, domain, need = self._op(kind)
        via_skip = op is None and self.target == "onnxruntime" and not _skip_refusal_for(m.x, -m.k, kind, self.provider)
        if via_skip:  # below the op's opset: becomes its com.microsoft Skip… form in this run
            op = "LayerNormalization" if kind == "layernorm" else "RMSNormalization"
        if op is None:
            raise Refused(
                f"opset {self.opset} < {need}: {'LayerNormalization' if kind == 'layernorm' else 'RMSNormalization'} "
                f"needs {need} (--opset {need} enables it)"
            )
        scale = m.scale if m.scale is not None else _ones(m, self.names)
        inputs = [m.x, scale] + ([m.bias] if m.bias is not None else [])
        replace(
            graph,
            m.nodes,
            gs.Node(
                op,
                self.names.fresh(f"{m.out.name}_{kind}"),
                {"axis": -m.k, "epsilon": float(m.eps)},
                inputs,
                [m.out],
                domain=domain,
            ),
        )
        if not via_skip:  # (else counted as the Skip… op it becomes)
            self.res.count(f"{kind}-into-{op}")

    def _skip(self, graph: gs.Graph, ln: gs.Node) -> None:
        """``LayerNormalization(a + b)`` over the last axis → com.microsoft SkipLayerNormalization(a, b)
        (``RMSNormalization`` → SkipSimplifiedLayerNormalization): the residual sum and the norm in
        one pass over the activation; the sum stays available as its fourth output when something
        else reads it (the next residual branch)."""
        add = _residual_add(ln.inputs[0])
        if add is None:
            return
        why = _skip_refusal_for(ln.inputs[0], int(ln.attrs.get("axis", -1)), SKIP_FORMS[ln.op][1], self.provider)
        if why:
            raise Refused(why)
        s, (a, b) = add.outputs[0], add.inputs
        inputs = [a, b, ln.inputs[1]] + ([ln.inputs[2]] if len(ln.inputs) > 2 and ln.inputs[2].name else [])
        outputs = [ln.outputs[0]]
        if len(s.outputs) > 1 or any(o is s for o in graph.outputs):
            outputs += [gs.Variable.empty(), gs.Variable.empty(), s]
        eps = float(ln.attrs.get("epsilon", 1e-5))
        op, kind = SKIP_FORMS[ln.op]
        replace(
            graph,
            [add, ln],
            gs.Node(
                op,
                self.names.fresh(f"{outputs[0].name}_skipln"),
                {"epsilon": eps},
                inputs,
                outputs,
                domain="com.microsoft",
            ),
        )
        self.res.count(f"add-{kind}-into-{op}")

    def _op(self, kind: str) -> tuple[str | None, str | None, int]:
        if kind == "layernorm":
            return (
                ("LayerNormalization", None, LAYERNORM_OPSET)
                if self.opset >= LAYERNORM_OPSET
                else (None, None, LAYERNORM_OPSET)
            )
        return ("RMSNormalization", None, RMSNORM_OPSET) if self.opset >= RMSNORM_OPSET else (None, None, RMSNORM_OPSET)


def _residual_add(x: gs.Tensor) -> gs.Node | None:
    add = producer(x, "Add")
    if add is None or len(add.inputs) != 2 or any(isinstance(t, gs.Constant) for t in add.inputs):
        return None
    return add


def _skip_refusal_for(x: gs.Tensor, axis: int, kind: str, provider: str) -> str:
    """Why a norm (``kind``) of ``x`` over ``axis`` cannot be its Skip… form ('' if it can;
    "not a residual sum" when x is not the sum of two tensors)."""
    add = _residual_add(x)
    if add is None:
        return "not a residual sum"
    if kind == "layernorm" and provider == CPU:
        return (
            "SkipLayerNormalization runs slower than Add + LayerNormalization on onnxruntime's CPU kernels "
            "(onnxruntime fuses the norm itself)"
        )
    a, b = add.inputs
    rank = len(x.shape) if x.shape is not None else None
    if rank is None or axis not in (-1, rank - 1):
        return "SkipLayerNormalization normalizes the last axis only"
    if rank not in (2, 3):
        return "SkipLayerNormalization takes 2-D or 3-D input"
    if not same_shape(a.shape, b.shape):
        return "the residual Add broadcasts (or its shapes are unknown)"
    if np.dtype(x.dtype) != np.float32 and np.dtype(x.dtype) != np.float16:
        return "SkipLayerNormalization takes float32/float16"
    return ""


def _layernorm(graph: gs.Graph, m1: gs.Node) -> Norm | None:
    """Match ``x - mean(x)`` → variance → normalize → affine from its first ReduceMean."""
    axes = reduce_axes(m1)
    x = m1.inputs[0]
    sub = only_consumer(m1.outputs[0], graph, "Sub")
    if sub is None or sub.inputs[0] is not x or sub.inputs[1] is not m1.outputs[0]:
        return None  # not x - mean(x): not a LayerNorm's first ReduceMean
    if axes is None:
        raise Refused("ReduceMean axes are not constant (or keepdims=0)")
    d = sub.outputs[0]
    if len({id(n) for n in d.outputs}) != 2 or any(o is d for o in graph.outputs):
        raise Refused("the centred value x - mean(x) is read by more than the square and the division")
    sq = next((c for c in d.outputs if _is_square(c, d)), None)
    if sq is None:
        raise Refused("the centred value x - mean(x) is not squared (no variance over the same axes)")
    tail = _variance_tail(graph, sq, axes)
    nodes, eps, norm_node, n_out = tail
    if norm_node not in d.outputs:
        raise Refused("the normalization does not divide the centred value")
    return _finish(graph, x, [m1, sub, sq] + nodes, eps, axes, n_out, with_bias=True)


def _rmsnorm(graph: gs.Graph, sq: gs.Node) -> Norm | None:
    """Match ``x * rsqrt(mean(x²) + ε)`` from its square."""
    if not sq.inputs:
        return None
    x = sq.inputs[0]
    if not _is_square(sq, x):
        return None
    sub = producer(x, "Sub")
    if sub is not None and len(sub.inputs) == 2 and producer(sub.inputs[1], "ReduceMean") is not None:
        return None  # the square of a centred value: a LayerNorm's, matched (or refused) as one
    m = only_consumer(sq.outputs[0], graph, "ReduceMean")
    if m is None:
        return None
    axes = reduce_axes(m)
    if axes is None:
        raise Refused("ReduceMean axes are not constant (or keepdims=0)")
    tail = _variance_tail(graph, sq, axes, x=x)
    nodes, eps, norm_node, n_out = tail
    return _finish(graph, x, [sq] + nodes, eps, axes, n_out, with_bias=False)


def _is_square(node: gs.Node, t: gs.Tensor) -> bool:
    if node.op == "Pow" and len(node.inputs) == 2 and node.inputs[0] is t:
        return near(scalar(node.inputs[1]), 2.0, 1e-6)
    return node.op == "Mul" and len(node.inputs) == 2 and node.inputs[0] is t and node.inputs[1] is t


def _variance_tail(graph: gs.Graph, sq: gs.Node, axes: list[int], x: gs.Tensor | None = None):
    """From the square: ReduceMean → Add ε → Sqrt → divide (Div, or Reciprocal/Div(1, ·) then Mul).
    ``x``: the tensor divided (LayerNorm: the centred value, found as the square's input).
    Returns (nodes, ε, the dividing node, its output); raises ``Refused``."""
    d = sq.inputs[0] if x is None else x
    m2 = only_consumer(sq.outputs[0], graph, "ReduceMean")
    if m2 is None:
        raise Refused("the square is not averaged by a ReduceMean")
    if reduce_axes(m2) != axes:
        raise Refused("the two ReduceMeans reduce different axes")
    add = only_consumer(m2.outputs[0], graph, "Add")
    if add is None:
        raise Refused("no epsilon is added to the variance")
    eps = scalar(other_input(add, m2.outputs[0]))
    if eps is None:
        raise Refused("epsilon is not a constant")
    sqrt = only_consumer(add.outputs[0], graph, "Sqrt")
    if sqrt is None:
        raise Refused("the variance is not followed by Sqrt")
    s = sqrt.outputs[0]
    div = only_consumer(s, graph, "Div", "Reciprocal")
    if div is None:
        raise Refused("the Sqrt is read by more than one node, or not by Div/Reciprocal")
    if div.op == "Div" and div.inputs[0] is d and div.inputs[1] is s:
        return [m2, add, sqrt, div], eps, div, div.outputs[0]
    if div.op == "Reciprocal" or (div.op == "Div" and div.inputs[1] is s and near(scalar(div.inputs[0]), 1.0, 1e-6)):
        mul = only_consumer(div.outputs[0], graph, "Mul")
        if mul is not None and other_input(mul, div.outputs[0]) is d:
            return [m2, add, sqrt, div, mul], eps, mul, mul.outputs[0]
    raise Refused("the normalization does not divide the input by the Sqrt")


def _finish(
    graph: gs.Graph, x: gs.Tensor, nodes: list[gs.Node], eps: float, axes: list[int], n_out: gs.Tensor, with_bias: bool
) -> Norm:
    rank = len(x.shape) if x.shape is not None else None
    k = trailing(axes, rank)
    if k is None:
        raise Refused("normalized axes are not the last ones")
    if not isinstance(x, gs.Variable) or x.dtype is None or np.dtype(x.dtype).kind != "f":
        raise Refused("the input is not a float tensor")
    m = Norm(x, n_out, eps, k, list(nodes))
    mul = only_consumer(n_out, graph, "Mul")
    if mul is not None:
        g = _affine(other_input(mul, n_out), x, k)
        if g is not None:
            m.scale, m.out = g, mul.outputs[0]
            m.nodes.append(mul)
    if with_bias:
        add = only_consumer(m.out, graph, "Add")
        if add is not None:
            b = _affine(other_input(add, m.out), x, k)
            if b is not None:
                m.bias, m.out = b, add.outputs[0]
                m.nodes.append(add)
    return m


def _affine(t: gs.Tensor | None, x: gs.Tensor, k: int) -> gs.Constant | None:
    """γ or β as a constant shaped like the normalized dims; None when ``t`` is not a constant at
    all (then the Mul/Add is not part of the norm); ``Refused`` when it is one of the wrong shape."""
    if t is None:
        return None
    v = const_value(t)
    if v is None:
        return None
    if v.dtype != np.dtype(x.dtype):
        raise Refused(f"scale/bias is {v.dtype}, the input {np.dtype(x.dtype)}")
    dims = _normalized_dims(x, k)
    squeezed = v.reshape(v.shape[next((i for i, d in enumerate(v.shape) if d != 1), v.ndim) :]) if v.ndim > k else v
    if squeezed.ndim > k or (dims is not None and squeezed.size != int(np.prod(dims))):
        raise Refused("scale/bias is not shaped like the normalized dims")
    if dims is None:
        if k != 1:
            raise Refused("normalized dims unknown")
        dims = [squeezed.size]
    if tuple(v.shape) == tuple(dims) and isinstance(t, gs.Constant):
        return t
    return gs.Constant(f"{t.name}_norm", np.ascontiguousarray(np.broadcast_to(squeezed, dims)).astype(v.dtype))


def _normalized_dims(x: gs.Tensor, k: int) -> list[int] | None:
    if x.shape is None or len(x.shape) < k:
        return None
    dims = list(x.shape[-k:])
    return [int(d) for d in dims] if all(isinstance(d, int) for d in dims) else None


def _ones(m: Norm, names: Namer) -> gs.Constant:
    dims = _normalized_dims(m.x, m.k)
    if dims is None:
        raise Refused("no scale and the normalized dims are unknown")
    return gs.Constant(names.fresh(f"{m.out.name}_ones"), np.ones(dims, np.dtype(m.x.dtype)))
