"""attention-fusion: the decomposed attention of BERT- and ViT-style exports becomes com.microsoft
Attention (one GEMM for Q, K and V) with --target onnxruntime and the standard Attention at opset
23; GPT-2's Where-masked scores and a split into heads that is not constant are refused with their
reasons."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import HAS_TORCH, ROOT, init, make_model, needs_torch, ops, optimize, run, small_transformer, vi
from onnx import TensorProto, helper

from rooftop.passes import PassContext
from rooftop.passes.attention_fusion import AttentionFusion

B, S, N, H = 2, 6, 2, 4
D = N * H


def attention_graph(
    mask: bool = True, heads_const: bool = True, opset: int = 17, where: str | None = None, rotated: bool = False
):
    """x → three projections → heads → softmax(Q·Kᵀ/√H + mask) · V → back to (B, S, D).

    ``where``: the scores masked by ``Where(keep, scores, fill)`` instead, keep built from the
    run-time length as exporters write it (Shape → ConstantOfShape → Trilu): "causal" (lower
    triangle, fill -inf), "upper" (Trilu upper=1: not causal), "input" (keep is a graph input),
    "small-fill" (causal, fill -1). ``rotated``: q and k scaled after the split into heads, so
    that they reach the product as (B, N, S, H) tensors (the 4-D form)."""
    r = np.random.default_rng(0)
    inits = [init(f"w{c}", r.standard_normal((D, D)).astype(np.float32) * 0.3) for c in "qkv"]
    inits += [init(f"b{c}", r.standard_normal(D).astype(np.float32) * 0.1) for c in "qkv"]
    inits += [
        init("split", np.array([0, 0, N, H], np.int64)),
        init("merge", np.array([0, 0, D], np.int64)),
        init("c", np.array(np.sqrt(H), np.float32)),
    ]
    nodes = []
    for c in "qkv":
        nodes += [
            helper.make_node("MatMul", ["x", f"w{c}"], [f"{c}m"]),
            helper.make_node("Add", [f"{c}m", f"b{c}"], [c]),
        ]
        shape = "split" if heads_const else f"{c}_shape"
        if not heads_const:
            nodes.append(helper.make_node("Concat", ["two0", "nh"], [f"{c}_shape"], axis=0))
        nodes.append(helper.make_node("Reshape", [c, shape], [f"{c}4"]))
    if not heads_const:
        inits += [init("two0", np.array([0, 0], np.int64))]
    if rotated:  # q and k scaled per head dim after the split (as a rotary embedding does): the 4-D form
        inits.append(init("rot", np.linspace(0.5, 1.5, H).astype(np.float32).reshape(1, 1, 1, H)))
        nodes += [
            helper.make_node("Transpose", ["q4"], ["q0"], perm=[0, 2, 1, 3]),
            helper.make_node("Mul", ["q0", "rot"], ["qt"]),
            helper.make_node("Transpose", ["k4"], ["k0"], perm=[0, 2, 1, 3]),
            helper.make_node("Mul", ["k0", "rot"], ["k1"]),
            helper.make_node("Transpose", ["k1"], ["kt"], perm=[0, 1, 3, 2]),
        ]
    else:
        nodes += [
            helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        ]
    nodes += [
        helper.make_node("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qt", "kt"], ["s"]),
        helper.make_node("Div", ["s", "c"], ["sc"]),
    ]
    inputs = [vi("x", ["batch", "seq", D])]
    if not heads_const:
        inputs.append(vi("nh", [2], TensorProto.INT64))
    if mask:
        inputs.append(vi("m", ["batch", 1, 1, "seq"]))
        nodes.append(helper.make_node("Add", ["sc", "m"], ["sm_in"]))
    if where:
        nodes += where_mask(where, inits, inputs)
    nodes += [
        helper.make_node("Softmax", ["sm_in" if mask or where else "sc"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "vt"], ["o4"]),
        helper.make_node("Transpose", ["o4"], ["ot"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ot", "merge"], ["y"]),
    ]
    return make_model(nodes, inputs, [vi("y", ["batch", "seq", D])], inits, opset=opset)


def where_mask(kind: str, inits: list, inputs: list) -> list:
    """Nodes computing ``sm_in = Where(keep, sc, fill)``."""
    inits += [
        init("one_i", np.array([1], np.int64)),
        init("fill", np.array(-1.0 if kind == "small-fill" else -np.inf, np.float32)),
    ]
    if kind == "input":
        inputs.append(vi("keep", ["seq", "seq"], TensorProto.BOOL))
        return [helper.make_node("Where", ["keep", "sc", "fill"], ["sm_in"])]
    true = helper.make_tensor("t", TensorProto.BOOL, [1], [True])
    return [
        helper.make_node("Shape", ["x"], ["xs"]),
        helper.make_node("Gather", ["xs", "one_i"], ["len"], axis=0),
        helper.make_node("Concat", ["len", "len"], ["ss"], axis=0),
        helper.make_node("ConstantOfShape", ["ss"], ["ones"], value=true),
        helper.make_node("Trilu", ["ones"], ["keep"], upper=int(kind == "upper")),
        helper.make_node("Where", ["keep", "sc", "fill"], ["sm_in"]),
    ]


def feeds(mask: bool = True, heads: bool = False, seq: int = S):
    r = np.random.default_rng(1)
    x = {"x": r.standard_normal((B, seq, D)).astype(np.float32)}
    if mask:
        x["m"] = np.where(r.random((B, 1, 1, seq)) < 0.3, -1e4, 0.0).astype(np.float32)
    if heads:
        x["nh"] = np.array([N, H], np.int64)
    return x


def test_self_attention_becomes_one_attention_op_for_onnxruntime():
    m = attention_graph()
    out, res = AttentionFusion().apply(m, PassContext(target="onnxruntime"))
    assert res.counts == {"attention-into-Attention": 1}
    # the mask (batch, 1, 1, seq) is expanded over the queries once: Shape, Gather, Concat, Expand
    assert sorted(ops(out)) == ["Attention", "Concat", "Expand", "Gather", "Shape"]
    att = next(n for n in out.graph.node if n.op_type == "Attention")
    assert att.domain == "com.microsoft" and {a.name: a.i for a in att.attribute if a.name == "num_heads"} == {
        "num_heads": N
    }
    for seq in (S, 3):
        x = feeds(seq=seq)
        np.testing.assert_allclose(run(out, x)[0], run(m, x)[0], rtol=1e-5, atol=1e-5)


def test_unmasked_attention_at_opset_23_is_the_standard_op():
    m = attention_graph(mask=False, opset=23)
    out, res = AttentionFusion().apply(m, PassContext())
    assert res.counts == {"attention-into-Attention": 1}
    assert sorted(ops(out)) == ["Add", "Add", "Add", "Attention", "MatMul", "MatMul", "MatMul"]
    assert next(n for n in out.graph.node if n.op_type == "Attention").domain == ""
    x = feeds(mask=False)
    np.testing.assert_allclose(run(out, x)[0], run(m, x)[0], rtol=1e-5, atol=1e-5)


def test_portable_padding_mask_is_expanded_over_the_queries():
    """The standard op's spec lets a (B, 1, 1, T) mask broadcast over the queries; onnxruntime's
    kernel does not (it failed on BERT at opset 23): the mask is expanded once, as for com.microsoft."""
    m = attention_graph(opset=23)
    out, res = AttentionFusion().apply(m, PassContext())
    assert res.counts == {"attention-into-Attention": 1}
    assert sorted(ops(out)) == [
        "Add",
        "Add",
        "Add",
        "Attention",
        "Concat",
        "Expand",
        "Gather",
        "MatMul",
        "MatMul",
        "MatMul",
        "Shape",
    ]
    for seq in (S, 3):
        x = feeds(seq=seq)
        np.testing.assert_allclose(run(out, x)[0], run(m, x)[0], rtol=1e-5, atol=1e-5)


def test_portable_below_opset_23_names_the_opset():
    _, res = AttentionFusion().apply(attention_graph(), PassContext())
    assert res.rewrites == 0
    assert list(res.refusals) == ["opset 17 < 23: Attention needs 23 for the portable target (--opset 23 enables it)"]


@pytest.mark.parametrize("target,opset", [("onnxruntime", 17), ("portable", 23)])
def test_a_causal_where_mask_becomes_a_causal_attention(target, opset):
    m = attention_graph(mask=False, where="causal", opset=opset)
    out, res = AttentionFusion().apply(m, PassContext(target=target))
    assert res.counts == {"attention-into-Attention-causal": 1}
    # the mask's graph (Shape … Trilu) and the Where are gone: the op masks by itself
    assert sorted(ops(out)) == (
        ["Attention"] if target == "onnxruntime" else ["Add", "Add", "Add", "Attention", "MatMul", "MatMul", "MatMul"]
    )
    att = next(n for n in out.graph.node if n.op_type == "Attention")
    flag = "unidirectional" if target == "onnxruntime" else "is_causal"
    assert {a.name: a.i for a in att.attribute if a.name == flag} == {flag: 1}
    for seq in (S, 3):
        x = feeds(mask=False, seq=seq)
        np.testing.assert_allclose(run(out, x)[0], run(m, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("where", [None, "causal"])
def test_the_4d_form_below_opset_23_is_multiheadattention_for_onnxruntime(where):
    m = attention_graph(mask=where is None, where=where, rotated=True)
    out, res = AttentionFusion().apply(m, PassContext(target="onnxruntime"))
    assert res.counts == {"attention-into-MultiHeadAttention" + ("-causal" if where else ""): 1}
    mha = next(n for n in out.graph.node if n.op_type == "MultiHeadAttention")
    assert mha.domain == "com.microsoft" and "Softmax" not in ops(out)
    flags = {a.name: a.i for a in mha.attribute if a.name in ("num_heads", "unidirectional")}
    assert flags == {"num_heads": N, **({"unidirectional": 1} if where else {})}
    for seq in (S, 3):
        x = feeds(mask=where is None, seq=seq)
        np.testing.assert_allclose(run(out, x)[0], run(m, x)[0], rtol=1e-5, atol=1e-5)
    _, portable = AttentionFusion().apply(m, PassContext())  # the portable target waits for opset 23
    assert portable.rewrites == 0 and "--opset 23 enables it" in next(iter(portable.refusals))


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("upper", "scores masked by a Where: the mask is computed from the lengths but is not causal"),
        (
            "input",
            "scores masked by a Where: the mask reads a tensor's values (a padding mask or an input), not only lengths",
        ),
        ("small-fill", "scores masked by a Where whose fill -1 is not -inf or a large negative constant"),
    ],
)
def test_a_where_mask_not_proved_causal_is_refused(kind, reason):
    _, res = AttentionFusion().apply(attention_graph(mask=False, where=kind), PassContext(target="onnxruntime"))
    assert res.rewrites == 0
    assert list(res.refusals) == [reason]


def test_heads_computed_at_run_time_are_refused():
    _, res = AttentionFusion().apply(attention_graph(heads_const=False), PassContext(target="onnxruntime"))
    assert res.rewrites == 0
    assert list(res.refusals) == ["the split into heads is not a constant [·, ·, heads, head size]"]


def test_a_second_reader_of_the_scores_is_refused():
    m = attention_graph()
    m.graph.node.append(helper.make_node("Identity", ["s"], ["scores_out"]))
    m.graph.output.append(vi("scores_out", None))
    _, res = AttentionFusion().apply(m, PassContext(target="onnxruntime"))
    assert list(res.refusals) == ["an intermediate of the attention is read by another node or is a graph output"]


sys.path.insert(0, str(ROOT / "models"))
if HAS_TORCH:
    import archs
    import torch

small = small_transformer


@needs_torch
@pytest.mark.parametrize("exporter,opset", [("legacy", 14), ("dynamo", None)])
@pytest.mark.parametrize("name", ["bert", "vit"])
def test_exports_fuse_attention_for_onnxruntime(tmp_path, name, exporter, opset):
    net, x, axes = small(name)
    src = archs.export_dynamic(net.eval(), x, tmp_path / "m.onnx", axes, exporter=exporter, opset=opset)
    out, report = optimize(src, target="onnxruntime")
    fused = next(r for r in report.passes if r.name == "attention-fusion")
    assert fused.status == "applied" and fused.counts == {"attention-into-Attention": 2} and fused.verified
    assert "Softmax" not in ops(out)
    import onnx

    added = ops(out).count("Expand") - ops(onnx.load(src)).count("Expand")
    assert added == (1 if name == "bert" else 0)  # BERT's padding mask, expanded once for both layers
    assert report.verification.count(" and ") == 1  # two sizes of the dynamic axes
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(run(out, {out.graph.input[0].name: x.numpy()})[0], ref, rtol=1e-3, atol=1e-4)


@needs_torch
@pytest.mark.parametrize("exporter,opset", [("legacy", 14), ("dynamo", None)])
@pytest.mark.parametrize("target", ["onnxruntime", "portable"])
def test_gpt2_causal_attention_is_fused(tmp_path, exporter, opset, target):
    net, x, axes = small("gpt2")
    src = archs.export_dynamic(net.eval(), x, tmp_path / "m.onnx", axes, exporter=exporter, opset=opset)
    out, report = optimize(src, target=target, opset=None if target == "onnxruntime" else 23)
    fused = next(r for r in report.passes if r.name == "attention-fusion")
    assert fused.status == "applied" and fused.counts == {"attention-into-Attention-causal": 2} and fused.verified
    assert not {"Softmax", "Trilu", "Where"} & set(ops(out))
    flag = "unidirectional" if target == "onnxruntime" else "is_causal"
    assert [a.i for n in out.graph.node if n.op_type == "Attention" for a in n.attribute if a.name == flag] == [1, 1]
    assert report.verification.count(" and ") == 1
    with torch.no_grad():
        for seq in (12, 5):
            ids = torch.randint(1, 100, (2, seq))
            np.testing.assert_allclose(
                run(out, {out.graph.input[0].name: ids.numpy()})[0], net(ids).numpy(), rtol=1e-3, atol=1e-4
            )
