"""Masks computed from run-time lengths only: is this one causal?

An exporter writes a causal mask as a small graph of the sequence lengths (Shape → Trilu of
ones, or Range/Less/Where over positions, with or without a past length). Such a mask holds no
data: it is a function of the symbolic dims of the tensors its Shape nodes read. ``causal_mask``
evaluates that graph with onnx's reference evaluator at two assignments of distinct small primes
to every symbol and compares it with the causal pattern ``keep[i, j] = j ≤ i + (T − S)`` over its
own last two dims (S, T). Which symbols those are need not be known (shape inference often names
the sequence length afresh after a Reshape): the mask meets scores of shape (…, S_q, T_k) in a
Where, which broadcasts only if S = S_q and T = T_k once S ≥ 2 and T ≥ 2; and with no two symbols
equal in an assignment, a mask over the wrong pair of lengths is not square or not causal. The
pipeline's verification at two sizes of every dynamic axis stands behind it.

Refuses (the reason is returned): a mask that reads a tensor's values (a padding mask, an input),
a dim of unknown size, a graph of more than MAX_NODES nodes or with subgraphs, a pattern that is
not causal at one of the assignments.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from rooftop.passes._graph import const_value
from rooftop.passes.base import Refused

MAX_NODES = 64
PRIMES = ((3, 5, 7, 11, 13), (17, 19, 23, 29, 31))


def causal_mask(keep: gs.Tensor, negate: bool, opset: int, square: bool) -> None:
    """Returns when ``keep`` (``not keep`` when ``negate``) is causal at every sample, with at least
    two queries (it does not broadcast over them) and, when ``square``, as many keys as queries;
    else ``Refused`` says why not."""
    nodes, leaves = _subgraph(keep)
    symbols = sorted({d for t in leaves for d in t.shape if isinstance(d, str)})
    if len(symbols) > len(PRIMES[0]):
        raise Refused("the mask depends on more run-time lengths than the check assigns")
    for primes in PRIMES:
        try:
            value = _evaluate(keep, nodes, dict(zip(symbols, primes, strict=False)), opset)
        except Exception as e:  # noqa: BLE001 - the reference evaluator raises what its kernels raise
            raise Refused(f"the mask could not be evaluated from the lengths ({type(e).__name__})") from None
        if not _is_causal(~value if negate else value, square):
            raise Refused("the mask is computed from the lengths but is not causal")


def _subgraph(t: gs.Tensor):
    """(nodes in topological order, tensors read by Shape nodes); ``Refused`` when the mask is not a
    function of lengths."""
    order: list[gs.Node] = []
    leaves: list[gs.Tensor] = []
    seen: set[int] = set()

    def visit(x: gs.Tensor) -> None:
        if not x.name or const_value(x) is not None or id(x) in seen:
            return
        seen.add(id(x))
        if len(x.inputs) != 1:
            raise Refused("the mask reads a tensor's values (a padding mask or an input), not only lengths")
        node = x.inputs[0]
        if node.op == "Shape":
            shape = node.inputs[0].shape
            if shape is None or any(d is None or (isinstance(d, int) and d < 0) for d in shape):
                raise Refused("the mask reads the length of a tensor of unknown shape")
            leaves.append(node.inputs[0])
            order.append(node)
            return
        if node.domain not in ("", "ai.onnx", None) or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
            raise Refused("the mask is computed by a custom op or a subgraph")
        for i in node.inputs:
            visit(i)
        order.append(node)
        if len(order) > MAX_NODES:
            raise Refused("the mask's graph is too large to evaluate")

    visit(t)
    return order, leaves


def _evaluate(t: gs.Tensor, nodes: list[gs.Node], env: dict, opset: int) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    if not nodes:
        return np.asarray(const_value(t)).astype(bool)
    inits, protos, names = [], [], set()
    for n in nodes:
        if n.op == "Shape":
            dims = np.array([env.get(d, d) for d in n.inputs[0].shape], np.int64)
            start, end = int(n.attrs.get("start", 0)), n.attrs.get("end")
            inits.append(
                numpy_helper.from_array(dims[start:] if end is None else dims[start : int(end)], n.outputs[0].name)
            )
            continue
        for i in n.inputs:
            v = const_value(i) if i.name and i.name not in names else None
            if v is not None:
                inits.append(numpy_helper.from_array(np.asarray(v), i.name))
                names.add(i.name)
        attrs = {
            k: (numpy_helper.from_array(np.asarray(v.values)) if isinstance(v, gs.Constant) else v)
            for k, v in n.attrs.items()
        }
        protos.append(helper.make_node(n.op, [i.name for i in n.inputs], [o.name for o in n.outputs], **attrs))
    out = helper.make_tensor_value_info(t.name, 0, None)
    graph = helper.make_graph(protos, "mask", [], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return np.asarray(ReferenceEvaluator(model).run(None, {})[0]).astype(bool)


def _is_causal(keep: np.ndarray, square: bool) -> bool:
    """``keep`` is (…, S, T) with S ≥ 2, T ≥ S (T = S when ``square``) and every (S, T) slice
    ``j ≤ i + (T − S)``: the last query sees every key, each earlier one a key fewer."""
    if keep.ndim < 2 or keep.ndim > 4:
        return False
    s, t = keep.shape[-2:]
    if s < 2 or t < s or (square and t != s):
        return False
    want = np.arange(t)[None, :] <= np.arange(s)[:, None] + (t - s)
    return bool(np.all(keep.reshape(-1, s, t) == want))
