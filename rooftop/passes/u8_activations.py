"""u8-activations: int8 activations become uint8 (zero point + 128), for onnxruntime's fast kernels.

``quantize_static``'s default writes int8 activations with int8 weights. onnxruntime's x86
integer kernels (QLinearConv, QLinearMatMul, QGemm, the com.microsoft QLinear ops) are
fast for uint8 activations with int8 weights; with int8 activations they fall back to
slow paths (measured 5x slower on an int8 ResNet-18). onnxruntime's own QDQ handling
converts int8 activations to uint8 before it fuses; this pass writes that into the model.

Algebra (exact): for an activation quantized as ``y = sat_int8(round(x / s) + z)``,

    sat_uint8(round(x / s) + (z + 128)) = sat_int8(round(x / s) + z) + 128

and ``DQ(y; s, z) = (y - z)·s = ((y + 128) - (z + 128))·s``. So a QuantizeLinear with an
int8 zero point ``z`` and every DequantizeLinear that reads its output get the uint8 zero
point ``z + 128`` and the same scale: every dequantized value is bit-identical. Weights
(DequantizeLinear of constants) stay int8. New zero-point constants are created (a zero
point shared with a weight's DequantizeLinear is never changed).

Runs only with ``--target onnxruntime``: other runtimes (TensorRT among them) want int8
symmetric activations. Refuses, by reason: a QuantizeLinear without an explicit zero
point (its output is uint8 already), one that quantizes a constant (a weight written as
Q(float W) → DQ, as PyTorch's QAT export does: weights stay int8), a zero point that is not an int8 constant, an
``output_dtype`` attribute, a quantized tensor that is a graph output (its type is
observable), a consumer that is not a DequantizeLinear with a constant int8 zero point.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import Namer, const_value, is_graph_output
from rooftop.passes.base import Pass, PassContext, PassResult


def _int8_zero_point(node: gs.Node) -> np.ndarray | None:
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return None
    zp = const_value(node.inputs[2])
    return zp if zp is not None and zp.dtype == np.int8 else None


SILENT = {
    "no explicit zero point (uint8 already)",
    "uint8 already",
    "input is a constant (a weight, which stays int8)",
}  # not activations


def _refusal(graph: gs.Graph, q: gs.Node) -> str | None:
    """Why the output of QuantizeLinear ``q`` cannot become uint8 (None: it can)."""
    if len(q.inputs) < 3 or not q.inputs[2].name:
        return "no explicit zero point (uint8 already)"
    zp = const_value(q.inputs[2])
    if zp is not None and zp.dtype == np.uint8:
        return "uint8 already"
    if _int8_zero_point(q) is None:
        return "zero point is not an int8 constant"
    if "output_dtype" in q.attrs:
        return "output_dtype attribute"
    if const_value(q.inputs[0]) is not None:
        return "input is a constant (a weight, which stays int8)"
    y = q.outputs[0]
    if is_graph_output(graph, y):
        return "quantized tensor is a graph output"
    for c in y.outputs:
        if c.op != "DequantizeLinear" or c.inputs[0] is not y:
            return f"consumer {c.op} is not a DequantizeLinear"
        if _int8_zero_point(c) is None:
            return "a consumer's zero point is not an int8 constant"
    return None


def _shift(names: Namer, node: gs.Node) -> None:
    zp = _int8_zero_point(node)
    assert zp is not None
    u8 = np.asarray(zp.astype(np.int16) + 128).astype(np.uint8)
    node.inputs[2] = gs.Constant(names.fresh(f"{node.inputs[2].name}_u8"), u8)


class U8Activations(Pass):
    name = "u8-activations"
    changes_kernels = True
    summary = "--target onnxruntime: int8 activations become uint8 (zero point + 128, exact) for the fast u8·s8 kernels"

    needs_ops = frozenset({"QuantizeLinear"})

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        if ctx.target != "onnxruntime":
            return PassResult(["portable target: activations keep their type"])
        return super().idle(model, ctx)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        converted = 0
        names = Namer(graph)
        for q in [n for n in graph.nodes if n.op == "QuantizeLinear"]:
            why = _refusal(graph, q)
            if why is not None:
                if why not in SILENT:
                    res.refuse(why, q)
                continue
            y = q.outputs[0]
            for c in list(y.outputs):
                _shift(names, c)
            _shift(names, q)
            y.dtype = np.uint8
            converted += 1
        res.count("int8-activation-to-uint8", converted)
        if converted:
            res.notes.append(f"int8 activations made uint8: {converted}")
        res.notes += [f"left int8 ({why}): {len(nodes)}" for why, nodes in sorted(res.refusals.items())]
        return res
