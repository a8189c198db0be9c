"""Hand-computed FLOPs and bytes for each op family, peak activation memory, unknown ops, roofline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import init, make_model, vi
from onnx import TensorProto, helper

from rooftop.analysis import costs, roofline
from rooftop.analysis.hardware import BUILTIN, HardwareProfile

F = 4  # bytes per float32


def one(node, inputs, outputs, inits=(), **kw):
    m = make_model([node], inputs, outputs, list(inits), **kw)
    return costs.analyze(m, allow_run=False).nodes[0]


def w(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def test_conv_grouped_and_depthwise():
    # N=1, Cin=8, Cout=16, groups=2, 3x3, stride 1, pad 1, 10x10 -> Cin/g = 4
    c = one(
        helper.make_node("Conv", ["x", "W", "B"], ["y"], group=2, pads=[1, 1, 1, 1]),
        [vi("x", [1, 8, 10, 10])],
        [vi("y", [1, 16, 10, 10])],
        [init("W", w(16, 4, 3, 3)), init("B", w(16))],
    )
    assert c.flops == 2 * 1 * 16 * 10 * 10 * 4 * 9 + 16 * 100
    assert c.bytes_read == (8 * 100 + 16 * 4 * 9 + 16) * F
    assert c.bytes_written == 16 * 100 * F
    dw = one(
        helper.make_node("Conv", ["x", "W"], ["y"], group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        [vi("x", [2, 8, 10, 10])],
        [vi("y", [2, 8, 5, 5])],
        [init("W", w(8, 1, 3, 3))],
    )
    assert dw.flops == 2 * 2 * 8 * 5 * 5 * 1 * 9
    assert dw.intensity == pytest.approx(dw.flops / dw.bytes)


def test_conv_transpose():
    # Cin=4, Cout=6 (groups 2 -> W [4, 3, 2, 2]), stride 2, 5x5 -> 10x10
    c = one(
        helper.make_node("ConvTranspose", ["x", "W"], ["y"], group=2, strides=[2, 2]),
        [vi("x", [1, 4, 5, 5])],
        [vi("y", [1, 6, 10, 10])],
        [init("W", w(4, 3, 2, 2))],
    )
    assert c.flops == 2 * (1 * 4 * 5 * 5) * 3 * 4


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_trans(ta, tb):
    M, K, N = 3, 5, 7
    a = [K, M] if ta else [M, K]
    b = w(N, K) if tb else w(K, N)
    c = one(
        helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=ta, transB=tb),
        [vi("a", a)],
        [vi("y", [M, N])],
        [init("b", b), init("c", w(N))],
    )
    assert c.flops == 2 * M * N * K + M * N
    assert c.bytes == (M * K + K * N + N + M * N) * F


def test_batched_matmul_broadcast():
    # [2, 1, 4, 8] @ [3, 8, 5] -> [2, 3, 4, 5]
    c = one(
        helper.make_node("MatMul", ["a", "b"], ["y"]),
        [vi("a", [2, 1, 4, 8]), vi("b", [3, 8, 5])],
        [vi("y", [2, 3, 4, 5])],
    )
    assert c.flops == 2 * (2 * 3 * 4 * 5) * 8
    assert c.bytes == (2 * 4 * 8 + 3 * 8 * 5 + 2 * 3 * 4 * 5) * F


def test_pooling_strides_and_pads():
    # 3x3 max pool, stride 2, pad 1 on 1x4x9x9 -> 5x5; 1 FLOP per element read (output x window)
    c = one(
        helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        [vi("x", [1, 4, 9, 9])],
        [vi("y", [1, 4, 5, 5])],
    )
    assert c.flops == 4 * 5 * 5 * 9
    g = one(helper.make_node("GlobalAveragePool", ["x"], ["y"]), [vi("x", [1, 4, 9, 9])], [vi("y", [1, 4, 1, 1])])
    assert g.flops == 4 * 81


def test_elementwise_add_moves_three_tensors():
    """The note's example: Add of two (N,C,H,W) fp32 tensors moves 3*N*C*H*W*4 bytes."""
    s = [2, 3, 4, 5]
    c = one(helper.make_node("Add", ["a", "b"], ["y"]), [vi("a", s), vi("b", s)], [vi("y", s)])
    n = 2 * 3 * 4 * 5
    assert c.flops == n and c.bytes == 3 * n * F
    assert c.intensity == pytest.approx(1 / 12)


def test_integer_ops_counted_apart():
    # QLinearMatMul [4, 8] x [8, 6] int8
    u8 = TensorProto.UINT8
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])
    inits = [
        init("as", np.array(0.1, np.float32)),
        init("az", np.array(0, np.uint8)),
        init("b", w(8, 6, dtype=np.int8)),
        init("bs", np.array(0.1, np.float32)),
        init("bz", np.array(0, np.int8)),
        init("ys", np.array(0.1, np.float32)),
        init("yz", np.array(0, np.uint8)),
    ]
    c = one(node, [vi("a", [4, 8], u8)], [vi("y", [4, 6], u8)], inits)
    assert c.flops == 0 and c.int_ops == 2 * 4 * 6 * 8 and c.dtype == "int8"
    assert c.bytes == 4 * 8 + 48 + 4 * 6 + 3 * 4 + 3 * 1
    ci = one(
        helper.make_node("ConvInteger", ["x", "W"], ["y"]),
        [vi("x", [1, 2, 4, 4], u8)],
        [vi("y", [1, 3, 2, 2], TensorProto.INT32)],
        [init("W", w(3, 2, 3, 3, dtype=np.uint8))],
    )
    assert ci.int_ops == 2 * 3 * 4 * 2 * 9 and ci.flops == 0
    dq = one(
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"]),
        [vi("x", [10], u8)],
        [vi("y", [10])],
        [init("s", np.array(0.1, np.float32)), init("z", np.array(0, np.uint8))],
    )
    assert dq.int_ops == 20 and dq.bytes_written == 40


def test_metadata_ops_not_charged():
    c = one(
        helper.make_node("Reshape", ["x", "s"], ["y"]),
        [vi("x", [2, 6])],
        [vi("y", [3, 4])],
        [init("s", np.array([3, 4], np.int64))],
    )
    assert c.metadata and c.bytes == 0 and c.flops == 0


def test_unknown_op_is_listed_not_zero():
    m = make_model(
        [helper.make_node("Mystery", ["x"], ["y"], domain="acme")],
        [vi("x", [2])],
        [vi("y", [2])],
        extra_opsets={"acme": 1},
    )
    mc = costs.analyze(m, allow_run=False)
    assert mc.totals.unknown == 1 and not mc.nodes[0].known and "Mystery" in mc.nodes[0].reason


def test_einsum_and_lstm():
    e = one(
        helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik"),
        [vi("a", [2, 3, 4]), vi("b", [2, 4, 5])],
        [vi("y", [2, 3, 5])],
    )
    assert e.flops == 2 * 2 * 3 * 4 * 5
    seq, batch, inp, h = 7, 2, 5, 6
    lstm = one(
        helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=h),
        [vi("x", [seq, batch, inp])],
        [vi("y", [seq, 1, batch, h])],
        [init("W", w(1, 4 * h, inp)), init("R", w(1, 4 * h, h))],
    )
    assert lstm.flops == seq * batch * (8 * h * (inp + h) + 10 * h)


def test_peak_activation_memory():
    # x(16) -> Relu a(16) -> Relu b(16) -> Add(a, b) y(16): a must live until the Add
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [4])], [vi("y", [4])])
    mc = costs.analyze(m, allow_run=False)
    # during the Add: a, b, y alive (x freed after the first Relu) = 3 * 16 bytes
    assert mc.totals.peak_activation_bytes == 3 * 16


def test_roofline_bound_and_prediction():
    hw = HardwareProfile("toy", {"fp32": 100.0}, 10.0, overhead_s=0.5)  # ridge = 10 FLOP/B
    s = [4, 4]
    m = make_model(
        [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("MatMul", ["c", "w"], ["y"])],
        [vi("a", s), vi("b", s)],
        [vi("y", [4, 512])],
        [init("w", w(4, 512))],
    )
    rl = roofline.roofline(costs.analyze(m, allow_run=False), hw)
    add, mm = rl.rows
    assert add.bound == "memory" and add.predicted_s == pytest.approx(3 * 16 * 4 / 10.0 + 0.5)
    assert mm.flops == 2 * 4 * 512 * 4
    assert mm.bound == "memory"  # 16384 FLOP over (64+8192+8192) B is below the ridge
    assert rl.predicted_s == pytest.approx(add.predicted_s + mm.predicted_s)
    assert BUILTIN["xeon-avx512"].ridge() == pytest.approx(48.0)


def test_shapes_inference_cannot_give_come_from_the_profiler_not_from_held_outputs(monkeypatch):
    """A Range whose length is data (shape inference leaves it and all after it unknown): the shapes
    come from one profiled run, without every intermediate tensor returned at once; the memo then
    serves a second analysis of the same tensors without any run."""
    nodes = [
        helper.make_node("ReduceMax", ["n"], ["hi"], keepdims=0),
        helper.make_node("Range", ["zero", "hi", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["rf", "rf"], ["sq"]),
        helper.make_node("Unsqueeze", ["sq", "ax"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("n", [1], TensorProto.INT64)],
        [vi("y", None)],
        [init("zero", np.array(0, np.int64)), init("one", np.array(1, np.int64)), init("ax", np.array([0], np.int64))],
    )

    def held(*a, **k):
        raise AssertionError("every output held at once")

    monkeypatch.setattr(costs, "_shapes_from_run", held)
    memo: dict = {}
    unchanged = m.SerializeToString()  # its nodes have no names: named for the profiler, then not
    c = costs.analyze(m, memo=memo)
    assert m.SerializeToString() == unchanged
    assert c.totals.unknown == 0 and c.shape_source == "onnx shape inference + one onnxruntime run (4 tensors)"
    mul = next(n for n in c.nodes if n.op_type == "Mul")
    k = int(mul.bytes_written / F)  # the Range's length at the generated input (random, within the index bounds)
    assert mul.bytes_read == 2 * k * F and mul.flops == k
    monkeypatch.setattr(costs, "_shapes_from_profile", held)
    again = costs.analyze(m, memo=memo)
    assert (
        again.totals.unknown == 0
        and again.shape_source == "onnx shape inference + an earlier onnxruntime run (4 tensors)"
    )
    # a pass adds a node after the remembered tensors: its shape (and the next one's) follows from
    # them by shape inference, with no run
    nodes2 = nodes[:4] + [helper.make_node("Relu", ["sq"], ["z"]), helper.make_node("Unsqueeze", ["z", "ax"], ["y"])]
    m2 = make_model(nodes2, [vi("n", [1], TensorProto.INT64)], [vi("y", None)], list(m.graph.initializer))
    c2 = costs.analyze(m2, memo=memo)
    assert c2.totals.unknown == 0 and c2.shape_source == "onnx shape inference + an earlier onnxruntime run (3 tensors)"
    relu = next(n for n in c2.nodes if n.op_type == "Relu")
    assert relu.bytes_read == relu.bytes_written == k * F


def test_the_original_is_analysed_from_the_verification_run(monkeypatch):
    """The verifier's first reference run is profiled: the original's analysis takes its shapes
    from it (same bound inputs), with no session or run of its own."""
    import rooftop

    nodes = [
        helper.make_node("ReduceMax", ["n"], ["hi"], keepdims=0),
        helper.make_node("Range", ["zero", "hi", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["rf", "rf"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("n", [1], TensorProto.INT64)],
        [vi("y", None)],
        [init("zero", np.array(0, np.int64)), init("one", np.array(1, np.int64))],
    )

    def forbidden(*a, **k):
        raise AssertionError("a run of its own")

    monkeypatch.setattr(costs, "_shapes_from_profile", forbidden)
    monkeypatch.setattr(costs, "_shapes_from_run", forbidden)
    _, rep = rooftop.optimize(m, passes=["cleanup"], time=False, hardware="xeon-avx512")
    assert not [w for w in rep.warnings if "cost analysis failed" in w], rep.warnings
    assert len(rep.before.unknown) == 0 and rep.before.bytes > 0


def _wheel_model(name: str):
    import onnx

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "simple" / name / "model.onnx"
    if not path.exists():
        pytest.skip(f"{name} is not in this onnx wheel's test data")
    return onnx.load(path)


@pytest.mark.parametrize(
    "name",
    [
        "test_strnorm_model_nostopwords_nochangecase",
        "test_strnorm_model_monday_casesensintive_nochangecase",
        "test_sequence_model1",
        "test_sequence_model5",
    ],
)
def test_tensor_types_numpy_cannot_size_are_unknown_not_an_error(name):
    """String tensors (StringNormalizer) and sequences: the cost model counts what it can, says
    which nodes it could not cost, and never ends the run."""
    rl = roofline.roofline(costs.analyze(_wheel_model(name)), BUILTIN["xeon-avx512"])
    assert rl.rows and all(r.bound in ("compute", "memory", "meta", "unknown") for r in rl.rows)
    if "strnorm" in name:
        assert rl.unknown and any("StringNormalizer" in u for u in rl.unknown)


def test_the_string_models_of_the_onnx_wheel_go_through_the_command(tmp_path):
    import onnx
    from helpers import cli

    for name in (
        "test_strnorm_model_nostopwords_nochangecase",
        "test_strnorm_model_monday_casesensintive_nochangecase",
    ):
        src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "simple" / name / "model.onnx"
        res = cli(str(src), "-o", str(tmp_path / f"{name}.onnx"), fast=False)
        assert res.returncode == 0, res.stderr
