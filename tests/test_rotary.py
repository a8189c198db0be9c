"""rotary-fusion: transformers' rotate_half rotary embedding becomes RotaryEmbedding (opset 23)."""

from __future__ import annotations

import numpy as np
from helpers import init, make_model, ops, run, vi
from onnx import helper

from rooftop.passes import PassContext
from rooftop.passes.rotary_fusion import RotaryFusion

B, N, S, H = 2, 4, 5, 16


def rotary_graph(*, opset: int = 23, second_half: str = "f", cut: int = H // 2):
    """q·cos + rotate_half(q)·sin as transformers writes it: q (B, N, S, H); cos and sin of
    Concat(f, f) over a (1, S, H/2) angle table, unsqueezed at axis 1."""
    ax = lambda n, v: init(n, np.array(v, np.int64))  # noqa: E731
    nodes = [
        helper.make_node("Transpose", ["x"], ["q"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["f", second_half], ["emb"], axis=-1),
        helper.make_node("Cos", ["emb"], ["cos3"]),
        helper.make_node("Sin", ["emb"], ["sin3"]),
        helper.make_node("Unsqueeze", ["cos3", "one"], ["cos"]),
        helper.make_node("Unsqueeze", ["sin3", "one"], ["sin"]),
        helper.make_node("Slice", ["q", "zero", "cut", "last"], ["x1"]),
        helper.make_node("Slice", ["q", "cut", "big", "last"], ["x2"]),
        helper.make_node("Neg", ["x2"], ["nx2"]),
        helper.make_node("Concat", ["nx2", "x1"], ["turned"], axis=-1),
        helper.make_node("Mul", ["q", "cos"], ["qc"]),
        helper.make_node("Mul", ["turned", "sin"], ["ts"]),
        helper.make_node("Add", ["qc", "ts"], ["y"], name="rotary_add"),
    ]
    inits = [ax("one", [1]), ax("zero", [0]), ax("cut", [cut]), ax("big", [2**62]), ax("last", [-1])]
    inputs = [vi("x", [B, S, N, H]), vi("f", [1, S, H // 2])]
    inputs += [vi("g", [1, S, H // 2])] if second_half == "g" else []
    return make_model(nodes, inputs, [vi("y", [B, N, S, H])], inits, opset=opset)


def feeds(m):
    r = np.random.default_rng(0)
    return {
        i.name: r.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in m.graph.input
    }


def test_rotate_half_becomes_one_rotaryembedding():
    m = rotary_graph()
    out, res = RotaryFusion().apply(m, PassContext())
    assert res.counts == {"rotate-half-into-RotaryEmbedding": 1} and not res.refusals
    # the half tables sliced and expanded over the batch, once each, to one (B, 1, 1) target
    want = ["Transpose", "Concat", "Cos", "Sin", "Slice", "Slice", "Shape", "Concat", "Expand", "Expand"]
    assert sorted(ops(out)) == sorted([*want, "RotaryEmbedding"])
    f = feeds(m)
    np.testing.assert_allclose(run(out, f)[0], run(m, f)[0], rtol=1e-5, atol=1e-5)


def test_refusals_name_the_first_condition_that_failed():
    cases = {
        "opset 17 < 23: RotaryEmbedding needs 23 (--opset 23 enables it)": rotary_graph(opset=17),
        "the two halves of the cosines are not proved equal": rotary_graph(second_half="g"),
        "x is not cut in two halves at H/2 of its last axis": rotary_graph(cut=H // 2 - 2),
    }
    for reason, m in cases.items():
        out, res = RotaryFusion().apply(m, PassContext())
        assert res.rewrites == 0 and res.refusals == {reason: ["rotary_add"]}, reason
        assert out is m


def test_an_add_of_two_products_without_rotate_half_is_no_candidate():
    nodes = [
        helper.make_node("Mul", ["a", "b"], ["ab"]),
        helper.make_node("Mul", ["a", "c"], ["ac"]),
        helper.make_node("Add", ["ab", "ac"], ["y"]),
        helper.make_node("Neg", ["y"], ["z"]),
    ]
    m = make_model(nodes, [vi(n, [2, 3]) for n in "abc"], [vi("z", [2, 3])], opset=23)
    _, res = RotaryFusion().apply(m, PassContext())
    assert res.rewrites == 0 and not res.refusals
