"""gelu-fusion: GELU written out as elementwise ops becomes one Gelu.

Algebra (every op reads and writes the whole activation; the fused op reads it once):

- erf form (``nn.GELU()``): ``0.5 · x · (1 + erf(x / √2))`` — ``x / √2`` as ``Div(x, 1.4142…)`` or
  ``Mul(x, 0.7071…)``, the halving before or after the product — is ``Gelu(x)`` (opset 20), or
  com.microsoft ``Gelu`` with ``--target onnxruntime`` at any opset.
- tanh form (``nn.GELU(approximate="tanh")``, GPT-2's ``gelu_new``):
  ``0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))`` — ``x³`` as ``Pow(x, 3)`` or
  ``x · x · x`` — is ``Gelu(x; approximate="tanh")`` (opset 20), or com.microsoft ``FastGelu``.

Without its halving (``x · (1 + erf(x / √2))``: onnxsim folds the 0.5 into the next Conv's weights,
as in Whisper's TorchScript export) the form is ``2 · Gelu(x)``: Gelu, then Mul by 2 (two passes
over the activation instead of four).

With ``--target onnxruntime``, ``Gelu(y + b)`` with a constant 1-D bias over the last axis becomes
com.microsoft ``BiasGelu(y, b)`` (``FastGelu(y, b)`` for the tanh form): the bias add in the same pass.

Constants must match to 1e-3 relative; the fused op computes the same function (verified).

Refuses (ops left, reason on the Erf/Tanh): the portable target at an opset below 20 (the
reason names ``--opset 20``); an intermediate read by another node or a graph output; the
product not taken with the same x that went into the erf/tanh.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._graph import Namer
from rooftop.passes._match import matches, near, only_consumer, other_input, producer, replace, scalar
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

GELU_OPSET = 20
SQRT2 = math.sqrt(2.0)
SQRT_2_PI = math.sqrt(2.0 / math.pi)


class GeluFusion(Pass):
    name = "gelu-fusion"
    summary = (
        "decomposed GELU (erf and tanh forms) → Gelu (opset 20; "
        "com.microsoft Gelu/FastGelu for onnxruntime; BiasGelu there)"
    )
    needs_shapes = True
    needs_ops = frozenset({"Erf", "Tanh", "Gelu", "FastGelu"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        opset = int(graph.opset or 0)
        names = Namer(graph)
        for node, (x, out, nodes, doubled) in matches(graph, res, ("Erf", "Tanh"), _gelu_form):
            approx = "tanh" if node.op == "Tanh" else "none"
            if opset >= GELU_OPSET:
                op, domain, attrs = "Gelu", None, ({"approximate": "tanh"} if approx == "tanh" else {})
            elif ctx.target == "onnxruntime":
                op, domain, attrs = ("FastGelu" if approx == "tanh" else "Gelu"), "com.microsoft", {}
            else:
                res.refuse(
                    f"opset {opset} < {GELU_OPSET}: Gelu needs {GELU_OPSET} (--opset {GELU_OPSET} enables it)", node
                )
                continue
            y = gs.Variable(names.fresh(f"{out.name}_gelu"), dtype=out.dtype) if doubled else out
            replace(graph, nodes, gs.Node(op, names.fresh(f"{out.name}_gelu"), attrs, [x], [y], domain=domain))
            if doubled:
                two = gs.Constant(names.fresh(f"{out.name}_two"), np.array(2.0, dtype=_dtype(out, x)))
                graph.nodes.append(gs.Node("Mul", names.fresh(f"{out.name}_double"), {}, [y, two], [out]))
            res.count(f"gelu-{'tanh' if approx == 'tanh' else 'erf'}-into-{op}" + ("-doubled" if doubled else ""))
        if ctx.target == "onnxruntime":
            for node in list(graph.nodes):
                if node.op in ("Gelu", "FastGelu") and node.outputs and node.inputs:
                    _bias_gelu(graph, node, res)
        return res


def _dtype(*ts: gs.Tensor):
    """The float type of the activation (float32 where shape inference left none)."""
    return next((t.dtype for t in ts if t.dtype is not None), np.float32)


def _gelu_form(graph: gs.Graph, node: gs.Node):
    return _erf_form(graph, node) if node.op == "Erf" else _tanh_form(graph, node)


def _last_dim(t: gs.Tensor) -> int | None:
    """The size of the last axis: from the shape, or (where shape inference stopped at a
    com.microsoft op) from the constant weight of the MatMul that writes it."""
    if t.shape and isinstance(t.shape[-1], int):
        return int(t.shape[-1])
    mm = producer(t, "MatMul")
    if mm is not None and isinstance(mm.inputs[1], gs.Constant) and len(mm.inputs[1].shape) == 2:
        return int(mm.inputs[1].shape[1])
    return None


def _bias_gelu(graph: gs.Graph, gelu: gs.Node, res: PassResult) -> None:
    """``Gelu(y + b)`` with a constant 1-D bias → com.microsoft BiasGelu(y, b) (erf form) or
    FastGelu(y, b) (tanh form): the bias add is done in the same pass over the activation."""
    approx = gelu.attrs.get("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    add = producer(gelu.inputs[0], "Add")
    if add is None or only_consumer(add.outputs[0], graph) is not gelu or len(add.inputs) != 2:
        return
    bias = next((t for t in add.inputs if isinstance(t, gs.Constant) and len(t.shape) == 1), None)
    y = other_input(add, bias) if bias is not None else None
    if y is None or isinstance(y, gs.Constant) or _last_dim(y) != bias.shape[0]:
        return
    op = "FastGelu" if gelu.op == "FastGelu" or approx == "tanh" else "BiasGelu"
    if gelu.op == "FastGelu" and len(gelu.inputs) > 1:
        return
    out = gelu.outputs[0]
    replace(graph, [add, gelu], gs.Node(op, f"{out.name}_biasgelu", {}, [y, bias], [out], domain="com.microsoft"))
    res.count(f"bias-gelu-into-{op}")


def _erf_form(graph: gs.Graph, erf: gs.Node):
    """(x, output, nodes, doubled) of ``0.5 · x · (1 + erf(x/√2))`` around this Erf, or None; ``Refused``."""
    scaled = producer(erf.inputs[0], "Div", "Mul")
    if scaled is None or len(scaled.inputs) != 2:
        return None
    if scaled.op == "Div" and near(scalar(scaled.inputs[1]), SQRT2):
        x = scaled.inputs[0]
    elif scaled.op == "Mul" and any(near(scalar(t), 1 / SQRT2) for t in scaled.inputs):
        x = next(t for t in scaled.inputs if not near(scalar(t), 1 / SQRT2))
    else:
        return None
    if only_consumer(scaled.outputs[0], graph) is not erf:
        raise Refused("x/√2 is read by another node")
    m = _one_plus_times_half(graph, erf, x, [scaled, erf])
    if m is None:
        raise Refused("erf(x/√2) is not followed by 0.5 · x · (1 + ·), each read once")
    return m


def _tanh_form(graph: gs.Graph, tanh: gs.Node):
    """(x, output, nodes, doubled) of ``0.5 · x · (1 + tanh(√(2/π)(x + 0.044715 x³)))``, or None; ``Refused``."""
    outer = producer(tanh.inputs[0], "Mul")
    if outer is None or len(outer.inputs) != 2:
        return None
    inner_t = next((t for t in outer.inputs if not near(scalar(t), SQRT_2_PI)), None)
    if inner_t is None or not any(near(scalar(t), SQRT_2_PI) for t in outer.inputs):
        return None
    inner = producer(inner_t, "Add")
    if inner is None or len(inner.inputs) != 2:
        raise Refused("the argument of tanh(√(2/π) · ·) is not x + 0.044715 · x³")
    for x in inner.inputs:
        cube_part = other_input(inner, x)
        nodes = _cubic(cube_part, x)
        if nodes is not None:
            body = [*nodes, inner, outer, tanh]
            if any(only_consumer(n.outputs[0], graph) is None for n in body[:-1]):
                raise Refused("a part of the tanh argument is read by another node")
            m = _one_plus_times_half(graph, tanh, x, body)
            if m is None:
                raise Refused("tanh(√(2/π)(x + 0.044715 x³)) is not followed by 0.5 · x · (1 + ·), each read once")
            return m
    raise Refused("the argument of tanh(√(2/π) · ·) is not x + 0.044715 · x³")


def _cubic(t: gs.Tensor, x: gs.Tensor) -> list[gs.Node] | None:
    """The nodes of ``0.044715 · x³`` producing ``t`` (x³ as Pow(x, 3) or x·x·x), or None."""
    mul = producer(t, "Mul")
    if mul is None or len(mul.inputs) != 2:
        return None
    cube_t = next((u for u in mul.inputs if near(scalar(u), 0.044715)), None)
    if cube_t is None:
        return None
    cube_t = other_input(mul, cube_t)
    p = producer(cube_t, "Pow", "Mul")
    if p is None:
        return None
    if p.op == "Pow" and p.inputs[0] is x and near(scalar(p.inputs[1]), 3.0, 1e-6):
        return [p, mul]
    if p.op == "Mul":
        sq_t = other_input(p, x)
        sq = producer(sq_t, "Mul") if sq_t is not None else None
        if sq is not None and sq.inputs[0] is x and sq.inputs[1] is x:
            return [sq, p, mul]
    return None


def _one_plus_times_half(graph: gs.Graph, f: gs.Node, x: gs.Tensor, body: list[gs.Node]):
    """After erf/tanh: ``(1 + ·) · x · 0.5`` in either order of the two products; ``doubled`` when
    the 0.5 is missing (``x · (1 + ·)`` = 2 · Gelu(x))."""
    add = only_consumer(f.outputs[0], graph, "Add")
    if add is None or not near(scalar(other_input(add, f.outputs[0])), 1.0, 1e-6):
        return None
    m1 = only_consumer(add.outputs[0], graph, "Mul")
    if m1 is None:
        a = add.outputs[0]
        observed = len(a.outputs) > 1 or any(o is a for o in graph.outputs)
        if observed:
            raise Refused(f"(1 + {f.op.lower()}) is read by another node or is a graph output")
        return None
    other = other_input(m1, add.outputs[0])
    if other is x:  # x · (1 + f), then · 0.5
        m2 = only_consumer(m1.outputs[0], graph, "Mul")
        if m2 is None or not near(scalar(other_input(m2, m1.outputs[0])), 0.5, 1e-6):
            return x, m1.outputs[0], [*body, add, m1], True  # 2 · Gelu(x): the 0.5 went elsewhere
        return x, m2.outputs[0], [*body, add, m1, m2], False
    half = producer(other, "Mul") if other is not None else None
    if half is not None and x in half.inputs and near(scalar(other_input(half, x)), 0.5, 1e-6):
        if only_consumer(half.outputs[0], graph) is not m1:
            raise Refused("0.5 · x is read by another node")
        return x, m1.outputs[0], [*body, half, add, m1], False
    if other is not None and near(scalar(other), 0.5, 1e-6):  # 0.5 · (1 + f), then · x
        m2 = only_consumer(m1.outputs[0], graph, "Mul")
        if m2 is not None and other_input(m2, m1.outputs[0]) is x:
            return x, m2.outputs[0], [*body, add, m1, m2], False
    raise Refused("the product is not taken with the x that went in")
