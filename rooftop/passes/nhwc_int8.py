"""nhwc-int8 (``--target onnxruntime`` only): run quantized convolutions channels-last.

onnxruntime's int8 convolution kernels work on NHWC data; at ORT_ENABLE_ALL its
layout transformer rewrites QLinearConv to the channels-last com.microsoft
QLinearConv and cancels the transposes between neighbours. This pass writes that
graph out, so the model runs the fast int8 path without depending on the runtime's
own layout optimizer:

1. every 4-D QLinearConv (standard domain) becomes com.microsoft QLinearConv with
   ``channels_last=1`` between ``Transpose(0,2,3,1)`` and ``Transpose(0,3,1,2)``
   (weights keep their OIHW layout; only activations change);
2. a to-NCHW Transpose is pushed below ops that do not care about the layout when all
   their activation inputs come from such transposes (QLinearAdd, QLinearMul, Relu, Clip with scalar bounds,
   per-tensor QuantizeLinear/DequantizeLinear), below QLinearGlobalAveragePool (which
   gets ``channels_last=1``) and below a uint8/int8 MaxPool (which becomes NhwcMaxPool);
3. Transpose pairs that compose to the identity cancel.

What stays: transposes at graph outputs and before layout-sensitive ops. The
rewrite is exact (same integer kernels, other memory order). Refuses: QLinearConv
that is not 4-D, portable target (com.microsoft ops would not be portable).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import Namer, bypass, cleanup, const_value
from rooftop.passes.base import Pass, PassContext, PassResult

TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]
AGNOSTIC = {"QLinearAdd", "QLinearMul", "Relu"}


def _is_to_nchw(t: gs.Tensor) -> gs.Node | None:
    if len(t.inputs) == 1 and t.inputs[0].op == "Transpose" and list(t.inputs[0].attrs.get("perm", [])) == TO_NCHW:
        return t.inputs[0]
    return None


class NhwcInt8(Pass):
    name = "nhwc-int8"
    summary = (
        "(--target onnxruntime) quantized Convs run channels-last: "
        "com.microsoft QLinearConv with transposes pushed away and cancelled"
    )
    needs_shapes = True
    needs_ops = frozenset({"QLinearConv"})
    rounds = 256  # a transpose moves one node down per round, through chains of elementwise ops

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        return PassResult() if ctx.target != "onnxruntime" else super().idle(model, ctx)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return _Run(graph).run(graph)


class _Run:
    """The state of one nhwc-int8 run: fresh names for the transposes it writes."""

    def __init__(self, graph: gs.Graph) -> None:
        self.names = Namer(graph)

    def run(self, graph: gs.Graph) -> PassResult:
        """One round: the QLinearConvs not yet channels-last converted, every transpose pushed one
        node down, adjacent inverse pairs cancelled (the template repeats it while it rewrites)."""
        res = PassResult()
        for node in list(graph.nodes):
            if node.op != "QLinearConv" or node.domain not in ("", "ai.onnx", None):
                continue
            if self._rank4(node):
                self._convert(graph, node)
                res.count("qlinearconv-channels-last", node=node)
            else:
                res.refuse("weight is not a 4-D constant (only 2-D convolutions run channels-last)", node)
        if not any(n.op == "QLinearConv" and n.domain == "com.microsoft" for n in graph.nodes):
            return res
        res.count("transpose-pushed", sum(self._push(graph, node) for node in list(graph.nodes)))
        cleanup(graph).toposort()
        res.count("transpose-pair-cancelled", self._cancel(graph))
        _transposes_left(graph, res)
        return res

    @staticmethod
    def _rank4(node: gs.Node) -> bool:
        w = const_value(node.inputs[3])
        return w is not None and w.ndim == 4

    def _transpose(self, graph: gs.Graph, x: gs.Tensor, perm: list[int], out: gs.Tensor | None = None) -> gs.Tensor:
        y = out if out is not None else gs.Variable(self.names.fresh(f"{x.name}_t"), dtype=x.dtype)
        graph.nodes.append(gs.Node("Transpose", self.names.fresh(f"{x.name}_transpose"), {"perm": perm}, [x], [y]))
        return y

    def _convert(self, graph: gs.Graph, node: gs.Node) -> None:
        x, y = node.inputs[0], node.outputs[0]
        node.inputs[0] = self._transpose(graph, x, TO_NHWC)
        y_nhwc = gs.Variable(f"{y.name}_nhwc", dtype=y.dtype)
        node.outputs[0] = y_nhwc
        node.domain = "com.microsoft"
        node.attrs["channels_last"] = 1
        self._transpose(graph, y_nhwc, TO_NCHW, out=y)

    def _push(self, graph: gs.Graph, node: gs.Node) -> int:
        """Move to-NCHW transposes from the inputs of ``node`` to its output."""
        op = node.op
        if op in AGNOSTIC or op in ("QuantizeLinear", "DequantizeLinear"):
            data = [0, 3] if op in ("QLinearAdd", "QLinearMul") else [0]
            if op in ("QuantizeLinear", "DequantizeLinear"):
                s = const_value(node.inputs[1])
                if s is None or s.size != 1:
                    return 0
        elif op == "Clip" and all(
            not t.name or (const_value(t) is not None and const_value(t).size == 1) for t in node.inputs[1:]
        ):
            data = [0]  # scalar bounds: elementwise, any layout
        elif op == "QLinearGlobalAveragePool" and not int(node.attrs.get("channels_last", 0)):
            data = [0]
        elif op == "MaxPool" and node.inputs[0].dtype in (np.uint8, np.int8) and len(node.outputs) == 1:
            data = [0]
        else:
            return 0
        ts = [_is_to_nchw(node.inputs[i]) for i in data]
        if any(t is None for t in ts):
            return 0
        for i, t in zip(data, ts):
            node.inputs[i] = t.inputs[0]
        if op == "QLinearGlobalAveragePool":
            node.attrs["channels_last"] = 1
        if op == "MaxPool":
            node.op, node.domain = "NhwcMaxPool", "com.microsoft"
            node.attrs.pop("storage_order", None)
        y = node.outputs[0]
        y_nhwc = gs.Variable(f"{y.name}_nhwc", dtype=y.dtype)
        node.outputs[0] = y_nhwc
        self._transpose(graph, y_nhwc, TO_NCHW, out=y)
        return 1

    @staticmethod
    def _cancel(graph: gs.Graph) -> int:
        n = 0
        for node in list(graph.nodes):
            if node.op != "Transpose" or list(node.attrs.get("perm", [])) != TO_NHWC:
                continue
            prev = _is_to_nchw(node.inputs[0])
            if prev is not None and bypass(graph, node, prev.inputs[0], node.outputs[0]):
                n += 1
        cleanup(graph).toposort()
        return n


def _transposes_left(graph: gs.Graph, res: PassResult) -> None:
    """Why each transpose back to NCHW stays: what reads the channels-first tensor."""
    outputs = {id(t) for t in graph.outputs}
    for node in graph.nodes:
        if node.op != "Transpose" or list(node.attrs.get("perm", [])) != TO_NCHW:
            continue
        y = node.outputs[0]
        if id(y) in outputs:
            res.refuse("transpose to NCHW stays: its tensor is a graph output", node)
        else:
            readers = sorted({c.op for c in y.outputs})
            res.refuse(f"transpose to NCHW stays: read by {', '.join(readers)} (layout-sensitive or not int8)", node)
