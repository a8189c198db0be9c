"""requant: QDQ models from onnxruntime.quantization.quantize_static (CNN and transformer-style MatMul,
per-tensor and per-channel, uint8 and int8), hand-built positive and negative graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS, init, make_model, ops, optimize, quantized_tolerance, run, vi
from onnx import TensorProto, helper

from rooftop.passes import PassContext
from rooftop.passes.requant import Requant

R = np.random.default_rng(0)


def requant(m, target="portable"):
    return Requant().apply(m, PassContext(target=target))


def qdq_pair(x, y, s, z, q_dtype=np.uint8, prefix="p"):
    """Q then DQ with the given params, as initializers."""
    return (
        [
            helper.make_node("QuantizeLinear", [x, f"{prefix}_s", f"{prefix}_z"], [f"{prefix}_q"]),
            helper.make_node("DequantizeLinear", [f"{prefix}_q", f"{prefix}_s", f"{prefix}_z"], [y]),
        ],
        [init(f"{prefix}_s", np.array(s, np.float32)), init(f"{prefix}_z", np.array(z, q_dtype))],
    )


def float_cnn(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Reshape", ["r2", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "Wfc"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 3, 8, 8])],
        [vi("y", [1, 10])],
        [
            init("W1", R.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3),
            init("B1", R.standard_normal(8).astype(np.float32) * 0.1),
            init("W2", R.standard_normal((16, 8, 3, 3)).astype(np.float32) * 0.2),
            init("B2", R.standard_normal(16).astype(np.float32) * 0.1),
            init("shape", np.array([1, 256], np.int64)),
            init("Wfc", R.standard_normal((256, 10)).astype(np.float32) * 0.1),
        ],
        opset=17,
    )
    p = tmp_path / "float.onnx"
    onnx.save(m, p)
    return p, {"x": (1, 3, 8, 8)}


def float_mlp(tmp_path):
    """Transformer-style: [batch, seq, d] activations through 2-D weight MatMuls."""
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [2, 5, 16])],
        [vi("y", [2, 5, 8])],
        [
            init("W1", R.standard_normal((16, 32)).astype(np.float32) * 0.3),
            init("W2", R.standard_normal((32, 8)).astype(np.float32) * 0.3),
        ],
    )
    p = tmp_path / "mlp.onnx"
    onnx.save(m, p)
    return p, {"x": (2, 5, 16)}


def quantize(src, shapes, dst, per_channel, activation):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            r = np.random.default_rng(1)
            self.it = iter([{k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
    )
    return dst


@pytest.mark.parametrize("per_channel", [False, True], ids=["per-tensor", "per-channel"])
@pytest.mark.parametrize("activation", ["u8", "i8"])
@pytest.mark.parametrize("build", [float_cnn, float_mlp], ids=["cnn", "mlp"])
def test_quantize_static_models(tmp_path, build, per_channel, activation):
    src, shapes = build(tmp_path)
    q = quantize(src, shapes, tmp_path / "q.onnx", per_channel, activation)
    original = onnx.load(q)
    # per-channel weight scales in QLinearConv/QLinearMatMul: onnxruntime only (OpenVINO refuses them).
    # The algebra is tested here, so no cross-check: OpenVINO's CPU plugin does not compile some
    # int8-activation QLinearConvs as deployed (test_runtimes holds that refusal)
    out, rep = optimize(
        q, passes=["requant", "cleanup"], target="onnxruntime" if per_channel else "portable", cross_check=False
    )
    rec = next(r for r in rep.passes if r.name == "requant")
    assert rec.status == "applied", rec.reason
    assert rep.final_check.ok
    kinds = ops(out)
    # no Conv/MatMul left with DequantizeLinear inputs and a QuantizeLinear consumer
    producers = {o: n for n in out.graph.node for o in n.output}
    for n in out.graph.node:
        if n.op_type in ("Conv", "MatMul"):
            ins = [producers.get(i) for i in n.input[:1]]
            assert not (ins[0] is not None and ins[0].op_type == "DequantizeLinear"), n.name
    assert ("QLinearConv" in kinds) if build is float_cnn else ("QLinearMatMul" in kinds)
    assert kinds.count("DequantizeLinear") < ops(original).count("DequantizeLinear")
    # outputs within one quantization step of the output's scale, or as far as onnxruntime's own fused run
    out_dq = next(n for n in original.graph.node if n.output[0] == original.graph.output[0].name)
    step = float(
        np.max(onnx.numpy_helper.to_array(next(t for t in original.graph.initializer if t.name == out_dq.input[1])))
    )
    r = np.random.default_rng(7)
    feeds = {k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    diff = np.abs(run(out, feeds)[0] - run(original, feeds)[0]).max()
    assert diff <= quantized_tolerance(original, feeds, step)
    assert requant(out)[1].rewrites == 0  # idempotent


def test_dq_q_with_equal_params_removed_exactly():
    n1, i1 = qdq_pair("x", "d", 0.1, 128, prefix="a")
    nodes = n1 + [
        helper.make_node("QuantizeLinear", ["d", "a_s", "a_z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "a_s", "a_z"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [4, 4])], [vi("y", [4, 4])], i1)
    out, res = requant(m)
    assert res.rewrites == 1
    assert ops(out).count("QuantizeLinear") == 1
    x = R.standard_normal((4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_dq_q_with_different_scales_kept():
    n1, i1 = qdq_pair("x", "d", 0.1, 128, prefix="a")
    n2, i2 = qdq_pair("d", "y", 0.2, 128, prefix="b")
    m = make_model(n1 + n2, [vi("x", [4, 4])], [vi("y", [4, 4])], i1 + i2)
    out, res = requant(m)
    assert res.rewrites == 0  # merging different scales would change outputs by a step


def test_maxpool_and_reshape_run_on_int8():
    n1, i1 = qdq_pair("x", "d", 0.05, 10, prefix="a")
    nodes = n1 + [
        helper.make_node("MaxPool", ["d"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["m", "a_s", "a_z"], ["mq"]),
        helper.make_node("DequantizeLinear", ["mq", "a_s", "a_z"], ["md"]),
        helper.make_node("Reshape", ["md", "shape"], ["rs"]),
        helper.make_node("QuantizeLinear", ["rs", "a_s", "a_z"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 2, 4, 4])],
        [vi("y", [1, 8], TensorProto.UINT8)],
        i1 + [init("shape", np.array([1, 8], np.int64))],
    )
    out, res = requant(m)
    assert ops(out) == ["QuantizeLinear", "MaxPool", "Reshape"]
    x = R.standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_movement_with_mismatched_q_kept():
    n1, i1 = qdq_pair("x", "d", 0.05, 10, prefix="a")
    nodes = n1 + [
        helper.make_node("MaxPool", ["d"], ["m"], kernel_shape=[2, 2]),
        helper.make_node("QuantizeLinear", ["m", "b_s", "a_z"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 1, 4, 4])],
        [vi("y", [1, 1, 3, 3], TensorProto.UINT8)],
        i1 + [init("b_s", np.array(0.07, np.float32))],
    )
    out, res = requant(m)
    assert res.rewrites == 0
    assert res.refusals == {"MaxPool: input and output quantization differ": ["m"]}


def test_float_tensor_observed_elsewhere_not_converted():
    """The Conv's float output is also a graph output: converting would lose it."""
    n1, i1 = qdq_pair("x", "xd", 0.05, 128, prefix="a")
    nodes = n1 + [
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
        helper.make_node("Conv", ["xd", "w"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["y"]),
    ]
    inits = i1 + [
        init("wq", R.integers(-5, 5, (4, 2, 1, 1)).astype(np.int8)),
        init("ws", np.array(0.02, np.float32)),
        init("wz", np.array(0, np.int8)),
        init("ys", np.array(0.1, np.float32)),
        init("yz", np.array(128, np.uint8)),
    ]
    m = make_model(
        nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 4, 3, 3], TensorProto.UINT8), vi("c", [1, 4, 3, 3])], inits
    )
    out, res = requant(m)
    assert "QLinearConv" not in ops(out)
    assert res.refusals == {"Conv: its float output is used (no single QuantizeLinear after it)": ["c"]}
    m.graph.output.pop()  # the negative twin's positive sibling
    out2, res2 = requant(m)
    assert "QLinearConv" in ops(out2) and res2.rewrites == 1
    x = R.standard_normal((1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(run(out2, {"x": x})[0], run(m, {"x": x})[0])


def test_relu_absorbed_only_when_implied():
    def build(zp):
        n1, i1 = qdq_pair("x", "xd", 0.05, 128, prefix="a")
        nodes = n1 + [
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]),
            helper.make_node("Conv", ["xd", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"]),
        ]
        inits = i1 + [
            init("wq", R.integers(-5, 5, (4, 2, 1, 1)).astype(np.int8)),
            init("ws", np.array(0.02, np.float32)),
            init("wz", np.array(0, np.int8)),
            init("ys", np.array(0.01, np.float32)),
            init("yz", np.array(zp, np.uint8)),
        ]
        return make_model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 4, 3, 3], TensorProto.UINT8)], inits)

    m = build(0)  # uint8 with zero point 0: Relu is implied by the range
    out, res = requant(m)
    assert ops(out) == ["QuantizeLinear", "QLinearConv"]
    x = R.standard_normal((1, 2, 3, 3)).astype(np.float32)
    got, ref = run(out, {"x": x})[0].astype(int), run(m, {"x": x})[0].astype(int)
    assert np.abs(got - ref).max() <= 1
    m2 = build(100)  # zero point in the middle: the Relu matters
    out2, res2 = requant(m2)
    assert "Relu" in ops(out2) and "QLinearConv" not in ops(out2)
    assert res2.refusals == {"Conv: the Relu after it is not implied by the output zero point": ["c"]}
    assert not res.refusals


def test_sample_qdq_model_end_to_end():
    out, rep = optimize(MODELS / "resnet_qdq_int8.onnx")
    rec = next(r for r in rep.passes if r.name == "requant")
    assert rec.status == "applied" and ops(out).count("QLinearConv") == 9
    assert rec.cost.after.bytes < rec.cost.before.bytes  # the fp32 traffic is gone
    assert rep.final_check.ok


def test_onnxruntime_target_leaves_no_float_islands():
    out, rep = optimize(MODELS / "resnet_qdq_int8.onnx", target="onnxruntime")
    kinds = ops(out)
    assert kinds.count("QLinearAdd") == 3 and "QLinearGlobalAveragePool" in kinds and "QGemm" in kinds
    producers = {o: n for n in out.graph.node for o in n.output}
    for n in out.graph.node:
        if n.op_type in ("Conv", "MatMul", "Gemm", "Add", "Mul", "GlobalAveragePool", "AveragePool", "Concat"):
            assert not any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input
            ), n.name
    assert (
        kinds.count("DequantizeLinear") == 1 and kinds.count("QuantizeLinear") == 1
    )  # the model's own input and output
    assert rep.final_check.ok
    portable, _ = optimize(MODELS / "resnet_qdq_int8.onnx")
    assert not any(n.domain == "com.microsoft" for n in portable.graph.node)


def test_step_tolerance_follows_one_lipschitz_ops():
    """An output computed as Tanh(DQ(q)) is compared within one step of the DQ's scale."""
    from rooftop.verify import dequantized_output_steps

    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        helper.make_node("Tanh", ["d"], ["t"]),
        helper.make_node("Exp", ["d"], ["e"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [4])],
        [vi("t", [4]), vi("e", [4])],
        [init("s", np.array(0.25, np.float32)), init("z", np.array(0, np.uint8))],
    )
    assert dequantized_output_steps(m) == {"t": 0.25}  # Exp can stretch a difference: no step tolerance


def float_attention(tmp_path):
    """One attention head as exporters write it: projections, Q·Kᵀ, scale, Softmax, P·V, output."""
    d, s = 16, 8
    w = {k: init(k, (R.standard_normal((d, d)) * 0.3).astype(np.float32)) for k in ("Wq", "Wk", "Wv", "Wo")}
    nodes = [
        helper.make_node("MatMul", ["x", "Wq"], ["q"]),
        helper.make_node("MatMul", ["x", "Wk"], ["k"]),
        helper.make_node("MatMul", ["x", "Wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
        helper.make_node("MatMul", ["o", "Wo"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, s, d])],
        [vi("y", [1, s, d])],
        list(w.values()) + [init("scale", np.array(0.25, np.float32))],
    )
    p = tmp_path / "attn.onnx"
    onnx.save(m, p)
    return p, {"x": (1, s, d)}


@pytest.mark.parametrize("activation", ["s8", "u8"])
def test_attention_matmuls_of_two_activations_become_qlinear(tmp_path, activation):
    from rooftop.passes.u8_activations import U8Activations

    src, shapes = float_attention(tmp_path)
    original = onnx.load(quantize(src, shapes, tmp_path / "q.onnx", False, activation))
    u8, _ = U8Activations().apply(original, PassContext(target="onnxruntime"))
    out, res = requant(u8, target="onnxruntime")
    kinds = ops(out)
    assert "MatMul" not in kinds and kinds.count("QLinearMatMul") == 6  # 4 projections + Q·Kᵀ + P·V
    assert "Softmax" not in kinds and kinds.count("QLinearSoftmax") == 1
    assert res.counts["QLinearMatMul from DQ→MatMul→Q"] == 6
    # no float island: no MatMul/Gemm/Add/Mul reading a DequantizeLinear and feeding only QuantizeLinear
    producers = {o: n for n in out.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in out.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for n in out.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Add", "Mul"):
            reads_dq = any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
            only_q = all(c.op_type == "QuantizeLinear" for c in consumers.get(n.output[0], [])) and consumers.get(
                n.output[0]
            )
            assert not (reads_dq and only_q), f"float island left: {n.op_type} {n.name}"
    onnx.checker.check_model(out)
    r = np.random.default_rng(3)
    feeds = {k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    step = float(
        np.max(
            onnx.numpy_helper.to_array(
                next(
                    t
                    for t in original.graph.initializer
                    if t.name == next(n for n in original.graph.node if n.output[0] == "y").input[1]
                )
            )
        )
    )
    assert np.abs(run(out, feeds)[0] - run(original, feeds)[0]).max() <= quantized_tolerance(original, feeds, step)


def test_pytorch_qat_export(tmp_path):
    """QDQ as PyTorch's FX quantization flow exports it: FakeQuantize on activations (uint8) and on
    float weights (Q(W) → DQ, per-channel int8). The weight Qs fold to int8 and the Convs and the
    Linear become integer ops."""
    torch = pytest.importorskip("torch")
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
        disable_observer,
    )
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1, stride=2)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    qc = QConfig(
        activation=FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8
        ),
        weight=FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver,
            quant_min=-128,
            quant_max=127,
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
        ),
    )
    prepared = prepare_qat_fx(Net().train(), QConfigMapping().set_global(qc), (x,))
    for _ in range(4):
        prepared(torch.randn(1, 3, 16, 16))
    prepared.eval()
    prepared.apply(disable_observer)
    src = tmp_path / "qat.onnx"
    torch.onnx.export(
        prepared, (x,), str(src), opset_version=13, dynamo=False, input_names=["input"], output_names=["output"]
    )
    original = onnx.load(src)
    out, rep = optimize(src, target="onnxruntime", skip=["nhwc-int8"])
    rec = next(r for r in rep.passes if r.name == "requant")
    assert rec.status == "applied", rec.reason
    assert rec.counts["weight QuantizeLinear folded to int8"] == 3
    kinds = ops(out)
    assert kinds.count("QLinearConv") == 2 and kinds.count("QGemm") == 1 and "Conv" not in kinds
    assert rep.final_check.ok
    feeds = {"input": np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)}
    step = float(
        np.max(
            onnx.numpy_helper.to_array(
                next(
                    t
                    for t in original.graph.initializer
                    if t.name == next(n for n in original.graph.node if n.output[0] == "output").input[1]
                )
            )
        )
    )
    assert np.abs(run(out, feeds)[0] - run(original, feeds)[0]).max() <= quantized_tolerance(original, feeds, step)


@pytest.mark.parametrize("shape", [(), (4,)], ids=["scalar", "vector"])
def test_weight_quantize_of_a_constant_folds_exactly(shape):
    """Regression: a scalar QuantizeLinear(constant) folded to a numpy scalar that graphsurgeon refused."""
    c = np.asarray(R.standard_normal(shape).astype(np.float32))
    nodes = [
        helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["cd"]),
        helper.make_node("Add", ["x", "cd"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [4])],
        [vi("y", [4])],
        [init("c", c), init("s", np.array(0.01, np.float32)), init("z", np.array(3, np.int8))],
    )
    out, res = requant(m)
    assert res.counts == {"weight QuantizeLinear folded to int8": 1}
    assert "QuantizeLinear" not in ops(out)
    x = R.standard_normal(4).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])  # the runtime's own rounding


@pytest.mark.parametrize("act", ["Relu", "Clip"])
@pytest.mark.parametrize("zp_dtype,zp", [(np.int8, 0), (np.uint8, 128), (np.uint8, 0)])
def test_relu_and_clip_between_equal_qdq_become_an_integer_clip(act, zp_dtype, zp):
    """Symmetric activations keep ReLU/ReLU6 out of QLinearConv: DQ → Relu/Clip → Q with the same
    parameters becomes Clip on the integers, exactly."""
    extra = ["lo", "hi"] if act == "Clip" else []
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node(act, ["xd"] + extra, ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
        helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"]),
    ]
    inits = [init("s", np.array(0.05, np.float32)), init("z", np.array(zp, zp_dtype))]
    if act == "Clip":
        inits += [init("lo", np.array(0.0, np.float32)), init("hi", np.array(6.0, np.float32))]
    m = make_model(nodes, [vi("x", [64])], [vi("y", [64])], inits)
    out, res = requant(m)
    assert res.counts.get("Relu/Clip as an integer Clip") == 1
    assert "Relu" not in ops(out)
    assert ops(out).count("Clip") == 1 and ops(out).count("QuantizeLinear") == 1
    x = np.linspace(-8, 9, 64).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_clip_with_a_run_time_bound_is_left():
    nodes = [
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("Clip", ["xd", "lo"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "s", "z"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("xq", [4], TensorProto.UINT8), vi("lo", [], TensorProto.FLOAT)],
        [vi("y", [4], TensorProto.UINT8)],
        [init("s", np.array(0.05, np.float32)), init("z", np.array(128, np.uint8))],
    )
    out, res = requant(m)
    assert res.rewrites == 0
    assert res.refusals == {"Clip: bounds are not constant scalars": ["r"]}


def test_resize_other_than_nearest_and_half_dequantized_matmul_say_why():
    n1, i1 = qdq_pair("x", "d", 0.05, 10, prefix="a")
    nodes = n1 + [
        helper.make_node("Resize", ["d", "", "sc"], ["r"], mode="linear"),
        helper.make_node("QuantizeLinear", ["r", "a_s", "a_z"], ["y"]),
        helper.make_node("MatMul", ["d", "wf"], ["mm"]),
        helper.make_node("QuantizeLinear", ["mm", "a_s", "a_z"], ["z"]),
    ]
    inits = i1 + [
        init("sc", np.array([1, 1, 2, 2], np.float32)),
        init("wf", R.standard_normal((4, 4)).astype(np.float32)),
    ]
    m = make_model(
        nodes,
        [vi("x", [1, 1, 4, 4])],
        [vi("y", [1, 1, 8, 8], TensorProto.UINT8), vi("z", [1, 1, 4, 4], TensorProto.UINT8)],
        inits,
    )
    out, res = requant(m)
    assert res.rewrites == 0
    assert res.refusals == {
        "Resize: mode is not nearest (interpolation is not exact on integers)": ["r"],
        "MatMul: one input is dequantized, the other is float": ["mm"],
    }
