"""pad-channels: chains, branches, residuals, depthwise, concat, head, fp16; equal outputs; idempotence;
aligned models untouched; every Conv aligned on the odd-channel sample."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS, init, make_model, ops, optimize, run, vi
from onnx import TensorProto, helper, numpy_helper

from rooftop.passes import PassContext
from rooftop.passes.pad_channels import PadChannels

R = np.random.default_rng(0)


def f32(*s, dtype=np.float32):
    return R.standard_normal(s).astype(dtype)


def pad(m, n=8):
    return PadChannels().apply(m, PassContext(channel_multiple=n))


def same(m, out, shape, dtype=np.float32, tol=1e-5):
    onnx.checker.check_model(out)
    x = f32(*shape, dtype=dtype)
    got, ref = run(out, {"x": x}), run(m, {"x": x})
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def conv_channels(m):
    """(in, out) channels of every Conv, from the weights."""
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    res = []
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            g = next((a.i for a in n.attribute if a.name == "group"), 1)
            res.append((w.shape[1] * g, w.shape[0]))
    return res


def chain(c1=12, c2=20, act="Relu"):
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node(act, ["a"], ["r"]),
        helper.make_node("Conv", ["r", "W2"], ["y"]),
    ]
    return make_model(
        nodes,
        [vi("x", [1, 3, 6, 6])],
        [vi("y", [1, c2, 6, 6])],
        [init("W1", f32(c1, 3, 3, 3)), init("B1", f32(c1)), init("W2", f32(c2, c1, 1, 1))],
    )


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "HardSigmoid", "Clip"])
def test_chain(act):
    m = chain(act=act)
    out, res = pad(m)
    # the 12-channel conv; the 20-channel output is a graph output (no Conv after it)
    assert res.counts["conv-output-padded"] == 1
    assert conv_channels(out) == [(3, 16), (16, 20)]
    assert ops(out) == ops(m)  # no slicing needed: the next Conv absorbs the padding
    same(m, out, (1, 3, 6, 6))
    out2, res2 = pad(out)
    assert res2.rewrites == 0  # idempotent


def test_aligned_model_untouched():
    m = chain(c1=16, c2=24)
    out, res = pad(m)
    assert res.rewrites == 0 and out is m


def test_small_channel_counts_left_alone():
    m = chain(c1=5)
    out, res = pad(m)
    assert res.rewrites == 0


def test_output_and_reshape_are_sliced():
    """A padded tensor that is also a graph output and feeds a Flatten head gets its padding sliced off."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["feat"]),
        helper.make_node("Conv", ["feat", "W2"], ["b"]),
        helper.make_node("Flatten", ["feat"], ["f"]),
        helper.make_node("Gemm", ["f", "G"], ["y"], transB=1),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 2, 2])],
        [vi("feat", [1, 10, 2, 2]), vi("b", [1, 4, 2, 2]), vi("y", [1, 5])],
        [init("W1", f32(10, 3, 1, 1)), init("W2", f32(4, 10, 1, 1)), init("G", f32(5, 40))],
    )
    out, res = pad(m)
    assert res.counts["conv-output-padded"] == 1
    assert [o.name for o in out.graph.output] == ["feat", "b", "y"]
    assert ops(out).count("Slice") == 1  # one slice serves the output and the Flatten
    same(m, out, (1, 3, 2, 2))


def test_residual_bn_depthwise_and_concat():
    c = 20
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["a", "s", "b", "m", "v"], ["an"]),
        helper.make_node("Relu", ["an"], ["r"]),
        helper.make_node("Conv", ["r", "Wdw", "Bdw"], ["d"], group=c, pads=[1, 1, 1, 1]),  # depthwise
        helper.make_node("Add", ["d", "r"], ["res"]),  # residual of two padded tensors
        helper.make_node("Mul", ["res", "k"], ["scaled"]),  # per-channel constant
        helper.make_node("Conv", ["x", "W3"], ["side"]),  # 9 channels: padded to 16 as well
        helper.make_node("Concat", ["scaled", "side"], ["cat"], axis=1),
        helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "W4"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 8, 8])],
        [vi("y", [1, 6, 4, 4])],
        [
            init("W1", f32(c, 3, 3, 3)),
            init("s", (R.random(c) + 0.5).astype(np.float32)),
            init("b", f32(c)),
            init("m", f32(c)),
            init("v", (R.random(c) + 0.5).astype(np.float32)),
            init("Wdw", f32(c, 1, 3, 3)),
            init("Bdw", f32(c)),
            init("k", f32(1, c, 1, 1)),
            init("W3", f32(9, 3, 1, 1)),
            init("W4", f32(6, c + 9, 1, 1)),
        ],
    )
    out, res = pad(m)
    assert res.counts["conv-output-padded"] == 2
    # padded conv, depthwise grown to 24 groups, the side conv padded, the last Conv takes the concatenated layout
    assert sorted(conv_channels(out)) == sorted([(3, 24), (24, 24), (3, 16), (24 + 16, 6)])
    assert "Slice" not in ops(out) and "Gather" not in ops(out)
    same(m, out, (1, 3, 8, 8))


def test_fp16():
    m = chain()
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    out, res = pad(m)
    assert res.counts["conv-output-padded"] == 1
    assert {t.data_type for t in out.graph.initializer} == {TensorProto.FLOAT16}
    same(m, out, (1, 3, 6, 6), dtype=np.float16, tol=2e-2)


def test_not_run_without_multiple_or_profile():
    out, res = PadChannels().apply(chain(), PassContext())
    assert res.rewrites == 0


def test_odd_channel_sample_every_conv_aligned():
    src = MODELS / "odd_channels.onnx"
    out, rep = optimize(src, channel_multiple=16)
    rec = next(r for r in rep.passes if r.name == "pad-channels")
    assert rec.status == "applied" and rec.counts["conv-output-padded"] == 6  # 23, 45, 45, 91, 37, 181 output channels
    assert rec.cost.after.flops > rec.cost.before.flops  # the report shows what padding costs
    for i, (cin, cout) in enumerate(conv_channels(out)):
        assert cout % 16 == 0, (i, cin, cout)
        assert i == 0 or cin % 16 == 0, (i, cin, cout)  # the stem reads the 3-channel image
    original = onnx.load(src)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"input": x})[0], run(original, {"input": x})[0], rtol=1e-5, atol=1e-5)


def test_two_unnamed_convs_absorbing_padding_get_their_own_weights():
    """Regression: new weights were named from node.name, so two unnamed Convs that both absorb
    the padding wrote the same tensor name and one read the other's weights."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "W2"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["ar", "W3"], ["y2"], pads=[1, 1, 1, 1]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 8, 8])],
        [vi("y1", [1, 8, 8, 8]), vi("y2", [1, 16, 8, 8])],
        [init("W1", f32(23, 3, 3, 3)), init("W2", f32(8, 23, 3, 3)), init("W3", f32(16, 23, 3, 3))],
    )
    assert all(not n.name for n in m.graph.node)
    out, res = pad(m)
    assert res.counts["conv-output-padded"] == 1  # the 23-channel output
    names = [t.name for t in out.graph.initializer]
    assert len(names) == len(set(names)) == 3
    assert conv_channels(out) == [(3, 24), (24, 8), (24, 16)]
    same(m, out, (1, 3, 8, 8))


def test_conv_with_a_run_time_bias_is_not_half_padded():
    """Regression: the weights were padded before the bias was found not constant, leaving a
    Conv with 24 output channels and a 23-channel bias."""
    nodes = [
        helper.make_node("Conv", ["x", "W1", "bias"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "W2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 8, 8]), vi("bias", [23])],
        [vi("y", [1, 8, 8, 8])],
        [init("W1", f32(23, 3, 3, 3)), init("W2", f32(8, 23, 3, 3))],
    )
    out, res = pad(m)
    assert res.rewrites == 0 and out is m
    assert "left unpadded (bias not constant): 1" in res.notes


def test_slice_at_opset_9_takes_attributes():
    """Before opset 10 Slice has starts/ends/axes as attributes (the zoo's old models: the checker
    rejected the input form and the pass was rolled back on light Inception-v1)."""
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["a"]),
        helper.make_node("Relu", ["a"], ["feat"]),
        helper.make_node("Conv", ["feat", "W2"], ["b"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 2, 2])],
        [vi("feat", [1, 10, 2, 2]), vi("b", [1, 4, 2, 2])],
        [init("W1", f32(10, 3, 1, 1)), init("W2", f32(4, 10, 1, 1))],
        opset=9,
    )
    out, res = pad(m)
    assert res.counts["conv-output-padded"] == 1 and ops(out).count("Slice") == 1
    sl = next(n for n in out.graph.node if n.op_type == "Slice")
    assert len(sl.input) == 1 and {a.name for a in sl.attribute} == {"starts", "ends", "axes"}
    same(m, out, (1, 3, 2, 2))
