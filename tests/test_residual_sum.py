"""residual-sum: the residual Add before a LayerNormalization becomes Sum on onnxruntime's CPU
provider, so that onnxruntime's own SkipLayerNormFusion (whose CPU kernel is slower) does not fire."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import init, make_model, ops, run, vi
from onnx import helper

from rooftop.passes import PassContext
from rooftop.passes.residual_sum import NOT_HERE, ResidualSum

S, H = 7, 16


def post_norm_block(*, sum_read_again: bool = False, skip_shape=(2, S, H), layers: int = 2) -> onnx.ModelProto:
    """``layers`` BERT-style post-norm blocks: h = x·W + b; n = LayerNorm(h + x); x' = n."""
    r = np.random.default_rng(0)
    nodes, inits, cur = [], [init("g", np.linspace(0.5, 1.5, H).astype(np.float32))], "x"
    inits.append(init("beta", np.linspace(-1, 1, H).astype(np.float32)))
    outputs = []
    for i in range(layers):
        inits.append(init(f"W{i}", (r.standard_normal((H, H)) * 0.1).astype(np.float32)))
        inits.append(init(f"b{i}", r.standard_normal(H).astype(np.float32)))
        res = cur if i or skip_shape == (2, S, H) else "skip"
        nodes += [
            helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"h{i}"]),
            helper.make_node("Add", [f"h{i}", res], [f"s{i}"], name=f"residual{i}"),
            helper.make_node("LayerNormalization", [f"s{i}", "g", "beta"], [f"n{i}"], axis=-1, name=f"ln{i}"),
        ]
        if sum_read_again:
            nodes.append(helper.make_node("Relu", [f"s{i}"], [f"r{i}"]))
            outputs.append(vi(f"r{i}", [2, S, H]))
        cur = f"n{i}"
    inputs = [vi("x", [2, S, H])] + ([vi("skip", list(skip_shape))] if skip_shape != (2, S, H) else [])
    return make_model(nodes, inputs, [vi(cur, [2, S, H]), *outputs], inits, opset=17)


def feeds(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    r = np.random.default_rng(1)
    return {
        i.name: r.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in m.graph.input
    }


def fused_by_onnxruntime(m: onnx.ModelProto, tmp_path) -> collections.Counter:
    """The op types onnxruntime's CPU provider runs after its own ORT_ENABLE_ALL rewrites."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "ort_optimized.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)


def test_the_residual_add_becomes_sum_and_onnxruntime_no_longer_fuses_it(tmp_path):
    m = post_norm_block()
    assert fused_by_onnxruntime(m, tmp_path)["SkipLayerNormalization"] == 2  # what the pass keeps out
    out, res = ResidualSum().apply(m, PassContext())
    assert res.counts == {"residual Add → Sum": 2} and not res.refusals
    assert ops(out) == ["MatMul", "Add", "Sum", "LayerNormalization"] * 2
    f = feeds(m)
    np.testing.assert_array_equal(run(out, f)[0], run(m, f)[0])  # the same float additions: bit-equal
    after = fused_by_onnxruntime(out, tmp_path)
    assert after["SkipLayerNormalization"] == 0 and after["LayerNormalization"] == 2 and after["Sum"] == 2
    _, again = ResidualSum().apply(out, PassContext())  # idempotent: a Sum is not a candidate
    assert again.rewrites == 0 and not again.refusals


def test_where_onnxruntime_would_not_fuse_the_add_stays_with_the_reason():
    _, res = ResidualSum().apply(post_norm_block(sum_read_again=True), PassContext())
    assert res.rewrites == 0 and res.refusals == {
        "the sum is read by another node or is a graph output: onnxruntime does not fuse it": ["ln0", "ln1"]
    }
    _, res = ResidualSum().apply(post_norm_block(skip_shape=(2, 1, H)), PassContext())  # a broadcasting residual
    assert res.counts == {"residual Add → Sum": 1} and res.refusals == {
        "the Add's inputs are not 3-D of one shape: onnxruntime does not fuse it": ["ln0"]
    }


@pytest.mark.parametrize(
    "ctx",
    [PassContext(runtime="openvino"), PassContext(target="onnxruntime", provider="CUDAExecutionProvider")],
    ids=["openvino", "cuda"],
)
def test_idle_where_the_slow_kernel_is_not_the_one_deployed(ctx):
    m = post_norm_block()
    out, res = ResidualSum().apply(m, ctx)
    assert out is m and res.rewrites == 0 and res.notes == [NOT_HERE]
