"""conv-activation: with ``--target onnxruntime``, a float32 Conv followed by its activation becomes
one com.microsoft FusedConv (the activation is applied in the Conv's output loop, so the Conv's
output is written once instead of written, read and written again).

Algebra. ``y = act(Conv(x, W, B))`` is ``FusedConv(x, W, B; activation=act, activation_params=p)``
with ``p``: LeakyRelu ``[alpha]``; HardSigmoid ``[alpha, beta]``; Clip ``[min, max]`` (a missing
bound is ±FLT_MAX); Relu, Sigmoid, Tanh none. Exact: same convolution, same activation, applied
to each output element before it is stored.

Refuses (the pair is left as it is): the portable target (FusedConv is not a standard op); a
Conv whose weight is not a float32 constant (onnxruntime's FusedConv is float32 only); a Conv
output with more than one consumer or that is a graph output (the pre-activation value is
observable); a Clip whose bounds are not constant scalars.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import const_value, const_weight, is_graph_output, single_consumer
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "Clip")
_FLT_MAX = float(np.finfo(np.float32).max)


def _scalar(t: gs.Tensor | None) -> float | None:
    """The value of an optional scalar input: None when absent, a float; ``Refused`` otherwise."""
    if t is None or not t.name:
        return None
    v = const_value(t)
    if v is None or v.size != 1:
        raise Refused("Clip bounds are not constant scalars")
    return float(v.reshape(-1)[0])


def _params(act: gs.Node) -> list[float]:
    """FusedConv's ``activation_params`` for an activation node; ``Refused`` says why it has none."""
    if act.op == "LeakyRelu":
        return [float(act.attrs.get("alpha", 0.01))]
    if act.op == "HardSigmoid":
        return [float(act.attrs.get("alpha", 0.2)), float(act.attrs.get("beta", 0.5))]
    if act.op != "Clip":
        return []
    lo = float(act.attrs["min"]) if "min" in act.attrs else None
    hi = float(act.attrs["max"]) if "max" in act.attrs else None
    ins = list(act.inputs) + [None, None]
    lo_in, hi_in = _scalar(ins[1]), _scalar(ins[2])
    lo = lo_in if lo_in is not None else lo
    hi = hi_in if hi_in is not None else hi
    return [lo if lo is not None else -_FLT_MAX, hi if hi is not None else _FLT_MAX]


def _refusal(conv: gs.Node, graph: gs.Graph) -> str:
    """Why this Conv cannot take its activation ('' when it can); a Conv with no activation after
    it is not a candidate (reported as ``no activation``, not listed)."""
    y = conv.outputs[0]
    act = single_consumer(y)
    if act is None:
        return "its output has other consumers" if any(c.op in ACTIVATIONS for c in y.outputs) else "no activation"
    if act.op not in ACTIVATIONS:
        return "no activation"
    if is_graph_output(graph, y):
        return "its output is a graph output"
    w = const_weight(conv.inputs[1]) if len(conv.inputs) > 1 else None
    if w is None or w.dtype != np.float32:
        return "weight is not a float32 constant"
    return ""


class ConvActivation(Pass):
    name = "conv-activation"
    summary = "onnxruntime target: Conv + Relu/LeakyRelu/Clip/Sigmoid/Tanh/HardSigmoid → com.microsoft FusedConv"

    needs_ops = frozenset({"Conv"})

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        return PassResult() if ctx.target != "onnxruntime" else super().idle(model, ctx)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        if ctx.target != "onnxruntime":
            return res
        for conv in list(graph.nodes):
            if conv.op != "Conv" or conv.domain not in ("", "ai.onnx", None) or not conv.outputs:
                continue
            why = _refusal(conv, graph)
            if why == "no activation":
                continue
            with res.refusing(conv):
                if why:
                    raise Refused(why)
                act = single_consumer(conv.outputs[0])
                _fuse(conv, act, _params(act))
                res.count(f"{act.op.lower()}-into-fusedconv")
        if res.rewrites:
            res.notes.append(f"fused {res.rewrites} activations into FusedConv")
        return res


def _fuse(conv: gs.Node, act: gs.Node, params: list[float]) -> None:
    conv.op = "FusedConv"
    conv.domain = "com.microsoft"
    conv.attrs["activation"] = act.op
    if params:
        conv.attrs["activation_params"] = params
    conv.outputs[0] = act.outputs[0]
    act.outputs.clear()
    act.inputs.clear()
