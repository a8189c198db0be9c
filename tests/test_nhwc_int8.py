"""nhwc-int8: quantized Convs channels-last for onnxruntime, transposes pushed away and cancelled."""

from __future__ import annotations

import numpy as np
import onnx
from helpers import MODELS, init, make_model, ops, optimize, run, vi
from onnx import TensorProto, helper

from rooftop.passes import PassContext
from rooftop.passes.nhwc_int8 import NhwcInt8
from rooftop.runtime import make_session


def test_sample_runs_channels_last_with_two_transposes():
    src = MODELS / "resnet_qdq_int8.onnx"
    int8, _ = optimize(src, target="onnxruntime", skip=["nhwc-int8"])
    out, res = NhwcInt8().apply(int8, PassContext(target="onnxruntime"))
    assert res.counts == {"qlinearconv-channels-last": 9, "transpose-pushed": 4, "transpose-pair-cancelled": 8}
    convs = [n for n in out.graph.node if n.op_type == "QLinearConv"]
    assert len(convs) == 9 and all(n.domain == "com.microsoft" for n in convs)
    assert all(a.i == 1 for n in convs for a in n.attribute if a.name == "channels_last")
    assert ops(out).count("Transpose") == 2  # into the first conv, out of the pooled features
    assert list(res.refusals) == ["transpose to NCHW stays: read by Flatten (layout-sensitive or not int8)"]
    onnx.checker.check_model(out)
    original = onnx.load(src)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"input": x})[0], run(int8, {"input": x})[0])  # same kernels: exact
    step = float(onnx.numpy_helper.to_array(next(t for t in original.graph.initializer if t.name == "output_scale")))
    # the documented rule for quantized outputs: one step, or as far as onnxruntime's own fused
    # execution of the original lands from the float-emulated reference (x1.1)
    ref = run(original, {"input": x})[0]
    own = np.abs(make_session(original, optimization="all").run(None, {"input": x})[0] - ref).max()
    assert np.abs(run(out, {"input": x})[0] - ref).max() <= max(step * 1.0001, 1.1 * own)
    out2, res2 = NhwcInt8().apply(out, PassContext(target="onnxruntime"))
    assert res2.rewrites == 0  # idempotent


def test_portable_target_untouched():
    int8, _ = optimize(MODELS / "resnet_qdq_int8.onnx")
    out, res = NhwcInt8().apply(int8, PassContext(target="portable"))
    assert res.rewrites == 0 and out is int8
    assert not any(n.domain == "com.microsoft" for n in out.graph.node)


def test_conv1d_refused_with_reason():
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], name="conv1d")]
    inits = [
        init("xs", np.array(0.1, np.float32)),
        init("xz", np.array(128, np.uint8)),
        init("w", np.ones((4, 2, 3), np.int8)),
        init("ws", np.array(0.05, np.float32)),
        init("wz", np.array(0, np.int8)),
        init("ys", np.array(0.2, np.float32)),
        init("yz", np.array(128, np.uint8)),
    ]
    m = make_model(nodes, [vi("x", [1, 2, 8], TensorProto.UINT8)], [vi("y", [1, 4, 6], TensorProto.UINT8)], inits)
    out, res = NhwcInt8().apply(m, PassContext(target="onnxruntime"))
    assert res.rewrites == 0 and out is m
    assert res.refusals == {"weight is not a 4-D constant (only 2-D convolutions run channels-last)": ["conv1d"]}
