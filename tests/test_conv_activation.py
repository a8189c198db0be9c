"""conv-activation: Conv + activation → com.microsoft FusedConv (onnxruntime target only)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import init, make_model, ops, run, vi
from onnx import helper

from rooftop.passes import PassContext
from rooftop.passes.conv_activation import ConvActivation
from rooftop.passes.fold_conv_bn import FoldConvBN


def f32(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def fuse(m, target="onnxruntime"):
    return ConvActivation().apply(m, PassContext(target=target))


def conv_act(act, attrs=None, extra=(), inits=()):
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node(act, ["c", *extra], ["y"], **(attrs or {})),
    ]
    return make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, 8, 8, 8])], [init("W", f32(8, 3, 3, 3)), *inits])


@pytest.mark.parametrize(
    "act,attrs,extra,params",
    [
        ("Relu", {}, [], None),
        ("LeakyRelu", {"alpha": 0.2}, [], [0.2]),
        ("Sigmoid", {}, [], None),
        ("Tanh", {}, [], None),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, [], [0.3, 0.4]),
        ("Clip", {}, ["lo", "hi"], [0.0, 6.0]),
    ],
)
def test_activation_into_fusedconv(act, attrs, extra, params):
    bounds = [init("lo", np.array(0.0, np.float32)), init("hi", np.array(6.0, np.float32))]
    m = conv_act(act, attrs, extra, bounds if extra else ())
    out, res = fuse(m)
    assert res.rewrites == 1 and res.counts == {f"{act.lower()}-into-fusedconv": 1} and not res.refusals
    node = out.graph.node[0]
    assert ops(out) == ["FusedConv"] and node.domain == "com.microsoft"
    got = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got["activation"] == act.encode()
    if params is not None:
        np.testing.assert_allclose(got["activation_params"], params, rtol=1e-6)
    x = f32(1, 3, 8, 8)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_after_fold_conv_bn_the_whole_block_is_one_node():
    """Conv→BN→ReLU: fold-conv-bn takes the BN, conv-activation the ReLU."""
    c = 8
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "mu", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["y"]),
    ]
    rng = np.random.default_rng(1)
    bnp = [
        init("s", rng.uniform(0.5, 2, c).astype(np.float32)),
        init("b", f32(c)),
        init("mu", f32(c)),
        init("var", rng.uniform(0.5, 2, c).astype(np.float32)),
    ]
    m = make_model(nodes, [vi("x", [1, 3, 8, 8])], [vi("y", [1, c, 8, 8])], [init("W", f32(c, 3, 1, 1)), *bnp])
    folded, _ = FoldConvBN().apply(m, PassContext(target="onnxruntime"))
    out, res = fuse(folded)
    assert ops(out) == ["FusedConv"] and res.rewrites == 1
    x = f32(1, 3, 8, 8)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_portable_target_leaves_it():
    out, res = fuse(conv_act("Relu"), target="portable")
    assert res.rewrites == 0 and ops(out) == ["Conv", "Relu"]


def test_clip_with_dynamic_bound_refused():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"]), helper.make_node("Clip", ["c", "lo"], ["y"])]
    m = make_model(nodes, [vi("x", [1, 3, 4, 4]), vi("lo", [])], [vi("y", [1, 4, 4, 4])], [init("W", f32(4, 3, 1, 1))])
    out, res = fuse(m)
    assert res.rewrites == 0 and ops(out) == ["Conv", "Clip"]
    assert res.refusals == {"Clip bounds are not constant scalars": ["c"]}


def test_shared_output_and_graph_output_refused():
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"]),
        helper.make_node("Neg", ["c"], ["z"]),
    ]
    m = make_model(
        nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4]), vi("z", [1, 4, 4, 4])], [init("W", f32(4, 3, 1, 1))]
    )
    out, res = fuse(m)
    assert res.rewrites == 0 and res.refusals == {"its output has other consumers": ["conv"]}
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    m = make_model(
        nodes, [vi("x", [1, 3, 4, 4])], [vi("y", [1, 4, 4, 4]), vi("c", [1, 4, 4, 4])], [init("W", f32(4, 3, 1, 1))]
    )
    out, res = fuse(m)
    assert res.rewrites == 0 and res.refusals == {"its output is a graph output": ["conv"]}


def test_fp16_weight_refused():
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"])]
    m = make_model(
        nodes, [vi("x", [1, 3, 4, 4], 10)], [vi("y", [1, 4, 4, 4], 10)], [init("W", f32(4, 3, 1, 1).astype(np.float16))]
    )
    out, res = fuse(m)
    assert res.rewrites == 0 and res.refusals == {"weight is not a float32 constant": ["conv"]}
