"""The example of docs/adding-a-pass.md, run: a 30-line pass and its negative twins."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from helpers import init, make_model, ops, rng, run, vi
from onnx import helper

from rooftop.passes._graph import bypass, const_value
from rooftop.passes.base import Pass, PassContext, PassResult


class MulByOne(Pass):
    """mul-by-one: ``x * 1`` is ``x``. Exact for every dtype (IEEE: x·1 = x, NaN stays NaN).

    Refuses: a constant that is not all ones; a constant with more dims than ``x`` (the product
    would broadcast to a wider shape)."""

    name = "mul-by-one"
    summary = "drop multiplications by a constant one"
    needs_ops = frozenset({"Mul"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        for node in [n for n in graph.nodes if n.op == "Mul"]:
            x, c = node.inputs
            one = const_value(c)
            if one is None:
                continue  # not a candidate: no constant factor
            if not np.all(one == 1):
                res.refuse("the constant is not all ones", node)
            elif x.shape is None or one.ndim > len(x.shape):
                res.refuse("the product may be wider than x", node)
            elif bypass(graph, node, x, node.outputs[0]):
                res.count("x*1 removed")
            else:
                res.refuse("the product is a graph output whose name cannot move", node)
        return res


def mul_model(factor: np.ndarray):
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["y"], name="mul"),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    return make_model(nodes, [vi("x", [2, 3])], [vi("z", [2, 3])], [init("c", factor)])


def test_mul_by_one_goes():
    m = mul_model(np.ones((1,), np.float32))
    out, res = MulByOne().apply(m, PassContext())
    assert res.counts == {"x*1 removed": 1} and not res.refusals and ops(out) == ["Relu"]
    x = rng().standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_its_negative_twins_stay_and_say_why():
    for factor, reason in (
        (np.full((1,), 2.0, np.float32), "the constant is not all ones"),
        (np.ones((1, 1, 1), np.float32), "the product may be wider than x"),
    ):
        m = mul_model(factor)
        same, res = MulByOne().apply(m, PassContext())
        assert same is m and res.rewrites == 0 and res.refusals == {reason: ["mul"]}
    idle = make_model([helper.make_node("Relu", ["x"], ["z"])], [vi("x", [2, 3])], [vi("z", [2, 3])])
    assert MulByOne().idle(idle, PassContext()) is not None  # no Mul: the graph is never imported
