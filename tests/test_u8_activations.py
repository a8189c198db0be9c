"""u8-activations: int8 activations (quantize_static's default) become uint8 with zero point + 128."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import init, make_model, ops, run, vi
from onnx import helper
from test_requant import float_cnn, float_mlp, quantize

from rooftop.passes import PassContext
from rooftop.passes.u8_activations import U8Activations

ORT = PassContext(target="onnxruntime")


def zero_points(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    return {
        n.name or n.output[0]: inits[n.input[2]]
        for n in m.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
    }


def weight_dqs(m: onnx.ModelProto) -> list[onnx.NodeProto]:
    inits = {t.name for t in m.graph.initializer}
    return [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]


@pytest.mark.parametrize("build", [float_cnn, float_mlp], ids=["cnn", "mlp"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
def test_quantize_static_default_becomes_uint8(tmp_path, build, per_channel):
    src, shapes = build(tmp_path)
    q = onnx.load(quantize(src, shapes, tmp_path / "q.onnx", per_channel, "s8"))
    n_q = ops(q).count("QuantizeLinear")
    out, res = U8Activations().apply(q, ORT)
    assert res.rewrites == n_q  # every activation Q: all feed only DequantizeLinear
    onnx.checker.check_model(out)
    before, after = zero_points(q), zero_points(out)
    for n in out.graph.node:
        key = n.name or n.output[0]
        if n.op_type == "QuantizeLinear" or (n.op_type == "DequantizeLinear" and n not in weight_dqs(out)):
            assert after[key].dtype == np.uint8 and np.array_equal(
                after[key].astype(int), before[key].astype(int) + 128
            ), key
    for n in weight_dqs(out):  # weights (int8) and biases (int32) keep their zero points
        key = n.name or n.output[0]
        assert after[key].dtype == before[key].dtype and after[key].dtype in (np.int8, np.int32)
    assert ops(out) == ops(q)
    r = np.random.default_rng(5)
    feeds = {k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    np.testing.assert_array_equal(run(out, feeds)[0], run(q, feeds)[0])  # bit-identical: a change of representation
    assert U8Activations().apply(out, ORT)[1].rewrites == 0  # idempotent


def test_portable_target_keeps_int8(tmp_path):
    src, shapes = float_cnn(tmp_path)
    q = onnx.load(quantize(src, shapes, tmp_path / "q.onnx", False, "s8"))
    out, res = U8Activations().apply(q, PassContext(target="portable"))
    assert res.rewrites == 0 and out is q


def _q_dq(consumer_op: str | None, output_q: bool = False):
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    outputs = [vi("y", [4])]
    if consumer_op:
        nodes.append(helper.make_node(consumer_op, ["q"], ["other"], name="other"))
        outputs.append(vi("other", [4], onnx.TensorProto.INT8))
    if output_q:
        outputs.append(vi("q", [4], onnx.TensorProto.INT8))
    return make_model(
        nodes, [vi("x", [4])], outputs, [init("s", np.array(0.1, np.float32)), init("z", np.array(3, np.int8))]
    )


@pytest.mark.parametrize(
    "model,reason",
    [
        (_q_dq("Identity"), "consumer Identity is not a DequantizeLinear"),
        (_q_dq(None, output_q=True), "quantized tensor is a graph output"),
    ],
)
def test_refusals(model, reason):
    out, res = U8Activations().apply(model, ORT)
    assert res.rewrites == 0 and out is model
    assert f"left int8 ({reason}): 1" in res.notes


def test_zero_point_shared_with_a_weight_is_not_changed():
    w = np.array([1, -2, 3, -4], np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["a"]),
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [4])],
        [vi("y", [4])],
        [init("s", np.array(0.1, np.float32)), init("z", np.array(-5, np.int8)), init("w", w)],
    )
    out, res = U8Activations().apply(m, ORT)
    assert res.rewrites == 1
    zps = {n.output[0]: n.input[2] for n in out.graph.node if n.op_type != "Add"}
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}
    assert (
        inits[zps["b"]].dtype == np.int8 and inits[zps["b"]] == -5
    )  # the weight's DQ keeps the shared int8 zero point
    assert inits[zps["q"]].dtype == np.uint8 and inits[zps["q"]] == 123
    x = np.linspace(-20, 20, 4).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_dynamic_quantization_passes_through(tmp_path):
    """quantize_dynamic's DynamicQuantizeLinear + MatMulInteger graph: nothing to convert, nothing broken."""
    from onnxruntime.quantization import quantize_dynamic
    from test_requant import float_mlp

    import rooftop

    src, shapes = float_mlp(tmp_path)
    dst = tmp_path / "dyn.onnx"
    quantize_dynamic(str(src), str(dst))
    before = ops(onnx.load(dst))
    assert "DynamicQuantizeLinear" in before and "MatMulInteger" in before
    out, rep = rooftop.optimize(dst, target="onnxruntime", time=False, hardware="xeon-avx512")
    after = ops(out)
    assert after.count("DynamicQuantizeLinear") == before.count("DynamicQuantizeLinear")
    assert after.count("MatMulInteger") == before.count("MatMulInteger")
    assert next(r for r in rep.passes if r.name == "u8-activations").rewrites == 0
    assert rep.final_check is not None and rep.final_check.ok


def test_the_change_of_kernels_is_timed_against_its_input(tmp_path):
    """Same ops, same node count, same predicted bytes: but other integer kernels run, so the pass is
    timed alone (changes_kernels), not only with the final model; and by the stable rule it is kept
    only when it measures faster (confirmed), never on a measurement within the noise."""
    import rooftop
    from rooftop.records import Latency

    src, shapes = float_mlp(tmp_path)
    q = quantize(src, shapes, tmp_path / "q.onnx", False, "s8")
    calls = []

    def even(before, after, level, stop):
        calls.append(stop)
        return Latency(
            level=level, threads=1, rounds=10, ms_before=1.0, ms_after=1.0, ratio=1.0, ci=(1.0, 1.0), iqr=(1.0, 1.0)
        )

    _, rep = rooftop.optimize(
        q, passes=["u8-activations"], target="onnxruntime", comparator=even, hardware="xeon-avx512"
    )
    (rec,) = rep.passes
    assert rec.status.value == "rejected" and not rec.removes_only and rec.latency is not None
    assert "changes the kernels onnxruntime runs and measured no faster" in rec.reason
    assert calls == ["pay"]  # timed until it is settled which side of ×0.94 it lies

    def faster(before, after, level, stop):
        calls.append(stop)
        return Latency(
            level=level, threads=1, rounds=10, ms_before=1.0, ms_after=0.6, ratio=0.6, ci=(0.55, 0.65), iqr=(0.6, 0.6)
        )

    calls.clear()
    _, rep = rooftop.optimize(
        q, passes=["u8-activations"], target="onnxruntime", comparator=faster, hardware="xeon-avx512"
    )
    (rec,) = rep.passes
    assert rec.status.value == "applied" and rec.latency.ratio == 0.6
    assert calls[:2] == ["pay", "pay"]  # a "faster" is measured again before it is believed
