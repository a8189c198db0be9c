"""fold-conv-bn: positive graphs with exact rewrite counts and resulting ops, negative twins,
property tests over shapes, idempotence, numerics in onnxruntime with its optimizations off."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS, cli, init, make_model, ops, run, vi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from rooftop.passes import PassContext
from rooftop.passes.fold_conv_bn import FoldConvBN

R = np.random.default_rng(0)


def f32(*shape):
    return R.standard_normal(shape).astype(np.float32)


def bn_params(prefix: str, c: int, dtype=np.float32):
    return [
        init(f"{prefix}_s", (R.random(c) + 0.5).astype(dtype)),
        init(f"{prefix}_b", (R.standard_normal(c) * 0.1).astype(dtype)),
        init(f"{prefix}_m", (R.standard_normal(c) * 0.1).astype(dtype)),
        init(f"{prefix}_v", (R.random(c) + 0.5).astype(dtype)),
    ]


def bn(x, y, prefix="bn", **attrs):
    return helper.make_node(
        "BatchNormalization", [x, f"{prefix}_s", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y], **attrs
    )


def fold(m, target="portable"):
    return FoldConvBN().apply(m, PassContext(target=target))


def assert_same(m, out, feeds, rtol=1e-4, atol=1e-5):
    onnx.checker.check_model(out)
    for a, b in zip(run(out, feeds), run(m, feeds)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def conv_bn_relu(bias=True, c_in=3, c=8):
    inits = [init("W", f32(c, c_in, 3, 3))] + bn_params("bn", c)
    conv_in = ["x", "W"]
    if bias:
        inits.append(init("B", f32(c)))
        conv_in.append("B")
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
        bn("c", "b"),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    return make_model(nodes, [vi("x", [1, c_in, 8, 8])], [vi("y", [1, c, 8, 8])], inits)


@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn(bias):
    m = conv_bn_relu(bias)
    out, res = fold(m)
    assert res.rewrites == 1
    assert ops(out) == ["Conv", "Relu"]
    assert len(out.graph.node[0].input) == 3  # a bias was created when missing
    assert_same(m, out, {"x": f32(1, 3, 8, 8)})
    out2, res2 = fold(out)
    assert res2.rewrites == 0 and out2 is out  # idempotent


def test_conv_mul_add_split_bn():
    """PaddlePaddle-style BN split into Mul and Add by per-channel constants, in [C,1,1] and [1,C,1,1] forms."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"]),
        helper.make_node("Mul", ["c", "s"], ["m"]),
        helper.make_node("Add", ["shift", "m"], ["y"]),  # constant first: commutative
    ]
    m = make_model(
        nodes,
        [vi("x", [2, 4, 6, 6])],
        [vi("y", [2, 6, 4, 4])],
        [init("W", f32(6, 4, 3, 3)), init("B", f32(6)), init("s", f32(6, 1, 1)), init("shift", f32(1, 6, 1, 1))],
    )
    out, res = fold(m)
    assert res.rewrites == 2 and ops(out) == ["Conv"]
    assert_same(m, out, {"x": f32(2, 4, 6, 6)})


def test_conv_add_then_mul_sub_div():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("Add", ["c", "a"], ["t1"]),
        helper.make_node("Mul", ["t1", "k"], ["t2"]),
        helper.make_node("Sub", ["t2", "d"], ["t3"]),
        helper.make_node("Div", ["t3", "q"], ["t4"]),
        helper.make_node("Sub", ["e", "t4"], ["y"]),  # constant minus tensor: a = -1
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 5, 5])],
        [vi("y", [1, 4, 5, 5])],
        [
            init("W", f32(4, 3, 1, 1)),
            init("a", f32(4, 1, 1)),
            init("k", np.array(1.7, np.float32)),  # scalar
            init("d", f32(1, 4, 1, 1)),
            init("q", (R.random((4, 1, 1)) + 1).astype(np.float32)),
            init("e", f32(4, 1, 1)),
        ],
    )
    out, res = fold(m)
    assert res.rewrites == 5 and ops(out) == ["Conv"]
    assert_same(m, out, {"x": f32(1, 3, 5, 5)})


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_transpose_bn(group):
    cin, cout = 8, 12
    nodes = [helper.make_node("ConvTranspose", ["x", "W"], ["c"], group=group, strides=[2, 2]), bn("c", "y")]
    m = make_model(
        nodes,
        [vi("x", [1, cin, 5, 5])],
        [vi("y", [1, cout, 11, 11])],
        [init("W", f32(cin, cout // group, 3, 3))] + bn_params("bn", cout),
    )
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["ConvTranspose"]
    assert_same(m, out, {"x": f32(1, cin, 5, 5)})


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_gemm_bn(trans_b, with_c):
    k, n = 16, 10
    w = f32(n, k) if trans_b else f32(k, n)
    inputs = ["x", "w"] + (["c"] if with_c else [])
    inits = [init("w", w)] + bn_params("bn", n) + ([init("c", f32(n))] if with_c else [])
    nodes = [helper.make_node("Gemm", inputs, ["g"], transB=trans_b, alpha=0.5, beta=2.0), bn("g", "y")]
    m = make_model(nodes, [vi("x", [3, k])], [vi("y", [3, n])], inits)
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["Gemm"]
    assert_same(m, out, {"x": f32(3, k)})


def test_matmul_bias_add_mul():
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["hb"]),
        helper.make_node("Mul", ["hb", "s"], ["y"]),
    ]
    m = make_model(
        nodes, [vi("x", [2, 5, 8])], [vi("y", [2, 5, 6])], [init("w", f32(8, 6)), init("b", f32(6)), init("s", f32(6))]
    )
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["MatMul", "Add"]
    assert_same(m, out, {"x": f32(2, 5, 8)})


def test_matmul_bn_becomes_add():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), bn("h", "y")]
    m = make_model(nodes, [vi("x", [4, 8])], [vi("y", [4, 6])], [init("w", f32(8, 6))] + bn_params("bn", 6))
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["MatMul", "Add"]
    assert_same(m, out, {"x": f32(4, 8)})


def test_params_in_constant_nodes():
    c = 4
    nodes = [
        helper.make_node(
            "Constant",
            [],
            ["W"],
            value=helper.make_tensor("w", TensorProto.FLOAT, [c, 2, 1, 1], f32(c, 2, 1, 1).ravel()),
        ),
        helper.make_node(
            "Constant", [], ["s"], value=helper.make_tensor("s", TensorProto.FLOAT, [c, 1, 1], f32(c).ravel())
        ),
        helper.make_node("Conv", ["x", "W"], ["cv"]),
        helper.make_node("Mul", ["cv", "s"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, c, 3, 3])])
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["Conv"]
    assert_same(m, out, {"x": f32(1, 2, 3, 3)})


def test_shared_weight_is_not_corrupted():
    """Two Convs share one weight initializer; only one is followed by BN."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c1"]),
        bn("c1", "y1"),
        helper.make_node("Conv", ["x", "W"], ["y2"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 4, 4])],
        [vi("y1", [1, 5, 2, 2]), vi("y2", [1, 5, 2, 2])],
        [init("W", f32(5, 3, 3, 3))] + bn_params("bn", 5),
    )
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["Conv", "Conv"]
    assert out.graph.node[0].input[1] != out.graph.node[1].input[1]
    assert_same(m, out, {"x": f32(1, 3, 4, 4)})


def test_fp16_stays_fp16():
    c = 8
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), bn("c", "y")]
    m = make_model(
        nodes,
        [vi("x", [1, 4, 6, 6], TensorProto.FLOAT16)],
        [vi("y", [1, c, 6, 6], TensorProto.FLOAT16)],
        [init("W", f32(c, 4, 3, 3).astype(np.float16))] + bn_params("bn", c, np.float16),
    )
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["Conv"]
    assert {t.data_type for t in out.graph.initializer} == {TensorProto.FLOAT16}
    assert_same(m, out, {"x": f32(1, 4, 6, 6).astype(np.float16)}, rtol=1e-2, atol=1e-2)


# ---- negative twins: the pass must not rewrite -------------------------------------------


def test_training_mode_bn_not_folded():
    m = conv_bn_relu()
    m.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    out, res = fold(m)
    assert res.rewrites == 0 and ops(out) == ["Conv", "BatchNormalization", "Relu"]


def test_bn_with_running_stat_outputs_used_not_folded():
    m = conv_bn_relu()
    bnode = m.graph.node[1]
    bnode.output.extend(["rm", "rv"])
    m.graph.output.append(vi("rm", [8]))
    out, res = fold(m)
    assert res.rewrites == 0


def test_non_constant_bn_params_not_folded():
    m = conv_bn_relu()
    # make the scale a graph input
    m.graph.initializer.remove(next(t for t in m.graph.initializer if t.name == "bn_s"))
    m.graph.input.append(vi("bn_s", [8]))
    out, res = fold(m)
    assert res.rewrites == 0


def test_conv_output_with_second_consumer_not_folded():
    """A residual reads the Conv output too: the unscaled value is observable."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        bn("c", "b"),
        helper.make_node("Add", ["b", "c"], ["y"]),
    ]
    m = make_model(
        nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 3, 4, 4])], [init("W", f32(3, 3, 3, 3))] + bn_params("bn", 3)
    )
    out, res = fold(m)
    assert res.rewrites == 0


def test_conv_output_is_graph_output_not_folded():
    m = conv_bn_relu()
    m.graph.output.append(vi("c", [1, 8, 8, 8]))
    out, res = fold(m)
    assert res.rewrites == 0


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 4, 4), (4,), (1, 8, 4, 4), (2, 8, 1, 1), (1, 1, 8, 1, 1)],
    ids=["spatial", "last-axis", "full", "batch", "rank-growing"],
)
def test_non_per_channel_mul_not_folded(shape):
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c", "k"], ["y"])]
    m = make_model(
        nodes, [vi("x", [1, 3, 4, 4])], [vi("y", None)], [init("W", f32(8, 3, 3, 3)), init("k", f32(*shape))]
    )
    out, res = fold(m)
    assert res.rewrites == 0


def test_residual_add_of_two_tensors_not_folded():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "x"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 3, 4, 4])], [init("W", f32(3, 3, 3, 3))])
    out, res = fold(m)
    assert res.rewrites == 0


def test_div_by_zero_constant_not_folded():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Div", ["c", "q"], ["y"])]
    q = np.array([1.0, 0.0, 2.0], np.float32).reshape(3, 1, 1)
    m = make_model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 3, 4, 4])], [init("W", f32(3, 3, 1, 1)), init("q", q)])
    out, res = fold(m)
    assert res.rewrites == 0


def test_bn_after_rank3_matmul_not_folded():
    """BN's channel axis is 1; a rank-3 MatMul's output channels are on the last axis."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), bn("h", "y")]
    m = make_model(nodes, [vi("x", [2, 6, 8])], [vi("y", [2, 6, 6])], [init("w", f32(8, 6))] + bn_params("bn", 6))
    out, res = fold(m)
    assert res.rewrites == 0


def test_non_constant_weight_not_folded():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), bn("c", "y")]
    m = make_model(nodes, [vi("x", [1, 3, 4, 4]), vi("W", [4, 3, 1, 1])], [vi("y", [1, 4, 4, 4])], bn_params("bn", 4))
    out, res = fold(m)
    assert res.rewrites == 0


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    groups=st.sampled_from([1, 2, 3]),
    cin_per_group=st.integers(1, 4),
    cout_per_group=st.integers(1, 5),
    k=st.sampled_from([1, 3, 5]),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    bias=st.booleans(),
    fp16=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_conv_bn(groups, cin_per_group, cout_per_group, k, eps, bias, fp16, seed):
    r = np.random.default_rng(seed)
    dt = np.float16 if fp16 else np.float32
    onnx_dt = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    cin, cout = groups * cin_per_group, groups * cout_per_group
    inits = [
        init("W", r.standard_normal((cout, cin_per_group, k, k)).astype(dt)),
        init("s", (r.random(cout) + 0.5).astype(dt)),
        init("b", r.standard_normal(cout).astype(dt)),
        init("m", r.standard_normal(cout).astype(dt)),
        init("v", (r.random(cout) + 0.5).astype(dt)),
    ]
    conv_in = ["x", "W"]
    if bias:
        inits.append(init("B", r.standard_normal(cout).astype(dt)))
        conv_in.append("B")
    nodes = [
        helper.make_node("Conv", conv_in, ["c"], group=groups, pads=[k // 2] * 4),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], epsilon=eps),
    ]
    m = make_model(nodes, [vi("x", [1, cin, 7, 7], onnx_dt)], [vi("y", [1, cout, 7, 7], onnx_dt)], inits)
    out, res = fold(m)
    assert res.rewrites == 1 and ops(out) == ["Conv"]
    x = r.standard_normal((1, cin, 7, 7)).astype(dt)
    got, ref = run(out, {"x": x})[0].astype(np.float64), run(m, {"x": x})[0].astype(np.float64)
    tol = 2e-2 * max(1.0, float(np.abs(ref).max())) if fp16 else 1e-4
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    assert fold(out)[1].rewrites == 0


def _refusal_model(tmp_path):
    """conv1 → bn_train (training mode) ; conv2 → relu → bn_after_relu: two BNs no rewrite can fold."""
    C = 4
    bn_params = [
        init(f"{p}{i}", v)
        for i in (1, 2)
        for p, v in (
            ("s", np.ones(C, np.float32)),
            ("b", np.zeros(C, np.float32)),
            ("m", np.zeros(C, np.float32)),
            ("v", np.ones(C, np.float32)),
        )
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1"),
        helper.make_node(
            "BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["y1"], name="bn_train", training_mode=1
        ),
        helper.make_node("Conv", ["x", "W2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu"),
        helper.make_node("BatchNormalization", ["r2", "s2", "b2", "m2", "v2"], ["y2"], name="bn_after_relu"),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 5, 5])],
        [vi("y1", [1, C, 5, 5]), vi("y2", [1, C, 5, 5])],
        [
            init("W1", R.standard_normal((C, 3, 1, 1)).astype(np.float32)),
            init("W2", R.standard_normal((C, 3, 1, 1)).astype(np.float32)),
        ]
        + bn_params,
        opset=15,
    )
    p = tmp_path / "refuse.onnx"
    onnx.save(m, p)
    return p


def test_refusals_name_the_nodes_and_the_reason(tmp_path):
    out, res = FoldConvBN().apply(onnx.load(_refusal_model(tmp_path)), PassContext())
    assert res.rewrites == 0
    assert res.refusals == {
        "training-mode BatchNormalization": ["bn_train"],
        "follows Relu, not a Conv, ConvTranspose, Gemm or MatMul": ["bn_after_relu"],
    }


def test_explain_cli_and_json(tmp_path):
    import json

    src = _refusal_model(tmp_path)
    res = cli(str(src), "--passes", "fold-conv-bn", "--explain", "fold-conv-bn", "--report", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "left 1: training-mode BatchNormalization\n    bn_train" in res.stdout
    assert "bn_after_relu" in res.stdout
    rep = json.loads((tmp_path / "r.json").read_text())
    fold = rep["passes"][0]
    assert fold["refusals"] == {
        "training-mode BatchNormalization": 1,
        "follows Relu, not a Conv, ConvTranspose, Gemm or MatMul": 1,
    }
    assert fold["refused_nodes"]["training-mode BatchNormalization"] == ["bn_train"]
    bad = cli(str(src), "--explain", "no-such-pass")
    assert bad.returncode == 2 and "no such pass" in bad.stderr


def test_counts_name_each_kind_of_rewrite():
    src = MODELS / "resnet_bn.onnx"
    out, res = FoldConvBN().apply(onnx.load(src), PassContext())
    assert res.counts == {"bn-into-conv": 9} and res.rewrites == 9


def test_shared_weight_copies_count_against_the_fold_budget():
    """Two Convs read one weight: folding a BN into one of them copies the weight. The copy is
    refused when it does not fit the fold budget, and made when it does."""
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c1"], name="conv1"),
        bn("c1", "y1", "bn1"),
        helper.make_node("Conv", ["x", "W"], ["c2"], name="conv2"),
        bn("c2", "y2", "bn2"),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 4, 4])],
        [vi("y1", [1, 8, 4, 4]), vi("y2", [1, 8, 4, 4])],
        [init("W", f32(8, 3, 1, 1))] + bn_params("bn1", 8) + bn_params("bn2", 8),
    )
    out, res = FoldConvBN().apply(m, PassContext(fold_budget=0))
    assert res.rewrites == 0 and ops(out).count("BatchNormalization") == 2
    reason = "weight shared with other nodes: a folded copy would grow the weights beyond the fold budget"
    assert sorted(res.refusals[reason]) == ["y1", "y2"]  # the BatchNormalizations, named by their outputs
    w = 8 * 3 * 4
    out, res = FoldConvBN().apply(m, PassContext(fold_budget=w))  # room for one copy: the second is then unshared
    assert res.rewrites == 2 and "BatchNormalization" not in ops(out)
    assert_same(m, out, {"x": f32(1, 3, 4, 4)})


def scaled_before(op: str, linear: str, c: float = 2.0, read_again: bool = False):
    """x scaled by a scalar (Mul or Div), then a padded Conv with bias or a MatMul."""
    if linear == "Conv":
        lin = helper.make_node("Conv", ["s", "W", "B"], ["y"], pads=[1, 1, 1, 1])
        inits, shapes = [init("W", f32(4, 3, 3, 3)), init("B", f32(4))], ([1, 3, 6, 6], [1, 4, 6, 6])
    else:
        lin = helper.make_node("MatMul", ["s", "W"], ["y"])
        inits, shapes = [init("W", f32(8, 6))], ([2, 5, 8], [2, 5, 6])
    nodes = [helper.make_node(op, ["x", "c"] if op == "Div" else ["c", "x"], ["s"], name="scale"), lin]
    outputs = [vi("y", shapes[1])]
    if read_again:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        outputs.append(vi("r", shapes[0]))
    m = make_model(nodes, [vi("x", shapes[0])], outputs, [*inits, init("c", np.array(c, np.float32))])
    return m, {"x": f32(*shapes[0])}


@pytest.mark.parametrize("op", ["Mul", "Div"])
@pytest.mark.parametrize("linear", ["Conv", "MatMul"])
def test_a_scalar_before_the_linear_op_folds_into_its_weights(op, linear):
    """(c·x) ⋆ W + B = x ⋆ (c·W) + B: the bias is not scaled, the padding scales with x."""
    m, feeds = scaled_before(op, linear, c=2.0 if op == "Mul" else 0.25)
    out, res = fold(m)
    assert ops(out) == [linear] and res.counts == {f"scalar-into-{linear.lower()}": 1}
    assert out.graph.node[0].input[0] == "x"
    assert_same(m, out, feeds)
    # twin: the scaled tensor is read again, so the Mul stays, nothing folds, and it says why
    m2, feeds2 = scaled_before(op, linear, read_again=True)
    out2, res2 = fold(m2)
    assert res2.rewrites == 0 and ops(out2) == [op, linear, "Relu"]
    assert res2.refusals == {f"the scalar {op} before the {linear} is read by another node too": ["scale"]}
