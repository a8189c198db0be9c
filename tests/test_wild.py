"""Models from the wild: old IR versions, old opsets, the models shipped in the onnxruntime wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import cli, init, ops, optimize, run
from onnx import TensorProto, helper

from rooftop.records import Status

R = np.random.default_rng(0)


def conv_bn_relu(opset: int, ir: int, bn_attrs: dict | None = None) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu written as old exporters did: at IR 3 every
    initializer is also listed as a graph input."""
    inits = [
        init("W", R.standard_normal((8, 3, 3, 3)).astype(np.float32)),
        init("scale", (R.random(8) + 0.5).astype(np.float32)),
        init("bias", R.standard_normal(8).astype(np.float32)),
        init("mean", R.standard_normal(8).astype(np.float32)),
        init("var", (R.random(8) + 0.5).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], **(bn_attrs or {})),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if ir < 4:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    g = helper.make_graph(
        nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def test_ir3_model_gets_every_pass(tmp_path):
    src = tmp_path / "ir3.onnx"
    onnx.save(conv_bn_relu(opset=8, ir=3), src)
    out, rep = optimize(src, tmp_path / "o.onnx")
    assert not [r for r in rep.passes if r.status is Status.ROLLED_BACK]
    fold = next(r for r in rep.passes if r.name == "fold-conv-bn")
    assert fold.status is Status.APPLIED and fold.rewrites == 1 and fold.verified
    assert "BatchNormalization" not in ops(out)
    assert out.ir_version == 4 and [i.name for i in out.graph.input] == ["x"]
    assert any("IR version 3 raised to 4" in w and "5 initializers" in w for w in rep.warnings)
    x = R.standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(onnx.load(src), {"x": x})[0], rtol=1e-4, atol=1e-5)
    assert onnx.load(src).ir_version == 3  # the input file is never modified


def test_onnxruntime_wheel_mul_1_loads_and_verifies():
    import onnxruntime

    src = Path(onnxruntime.__file__).parent / "datasets" / "mul_1.onnx"
    if not src.exists():
        pytest.skip("this onnxruntime wheel ships no datasets/mul_1.onnx")
    out, rep = optimize(src)
    assert rep.final_check is not None and rep.verification.startswith("verified on")


def test_opset6_model_is_verifiable_with_opset_flag(tmp_path):
    src = tmp_path / "op6.onnx"
    onnx.save(conv_bn_relu(opset=6, ir=3, bn_attrs={"is_test": 1}), src)
    plain = cli(str(src), "-o", str(tmp_path / "a.onnx"))
    assert plain.returncode == 0
    assert "verification skipped" in plain.stderr and "--opset 13" in plain.stderr
    res = cli(str(src), "-o", str(tmp_path / "b.onnx"), "--opset", "13", "--report", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert "verification skipped" not in res.stderr
    import json

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["verification"]["ok"] is True
    assert any("opset 6 converted to 13" in w for w in rep["warnings"])
    out = onnx.load(tmp_path / "b.onnx")
    assert "BatchNormalization" not in ops(out)
    assert next(o.version for o in out.opset_import if o.domain == "") == 13


def test_opset_lower_than_the_model_is_refused(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(conv_bn_relu(opset=13, ir=7), src)
    res = cli(str(src), "--opset", "11")
    assert res.returncode == 2 and "only raises opsets" in res.stderr and "Traceback" not in res.stderr


def test_token_ids_stay_inside_a_small_embedding():
    """A token-type table of 2 rows: generated ids must be 0 or 1, or onnxruntime refuses the
    original and verification would be skipped (it was, on real text models)."""
    table = init("types", R.standard_normal((2, 8)).astype(np.float32))
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
        helper.make_node("Gather", ["types", "ids64"], ["e"]),
        helper.make_node("Identity", ["e"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 8])],
        [table],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    from rooftop.runtime import index_bounds

    assert index_bounds(m) == {"ids": 2}
    out, report = optimize(m)
    assert report.final_check is not None and report.final_check.ok
    assert report.verification.count("ids=") == 2  # two sizes of the dynamic axes


def _generated_weights_model(n: int = 20, size: int = 160):
    """Weights built at run time by ConstantOfShape (as the onnx wheel's "light" zoo models write
    them): n weights of size×size float32 (100 KiB each), each added to the activation in turn."""
    nodes, inits = [], [init("shape", np.array([size, size], np.int64))]
    x = "x"
    for i in range(n):
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                [f"w{i}"],
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [float(i)]),
            )
        )
        nodes.append(helper.make_node("Add", [x, f"w{i}"], [f"a{i}"]))
        x = f"a{i}"
    g = helper.make_graph(
        nodes,
        "gen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [size, size])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_folding_stays_within_the_growth_budget(tmp_path):
    """20 generated weights of 100 KiB: folding all would add 2 MB to a file of bytes; the budget
    (the larger of --fold-limit and 10% of the weights) lets 1 MiB in, the smallest first."""
    from rooftop.passes.base import weight_bytes

    m = _generated_weights_model()
    out, report = optimize(m)
    added = weight_bytes(out) - weight_bytes(m)
    assert 0 < added <= 1 << 20
    assert ops(out).count("ConstantOfShape") == 20 - added // (160 * 160 * 4)
    simplify = next(r for r in report.passes if r.name == "simplify")
    assert any("budget" in n for n in simplify.notes)
    assert report.final_check.ok
    everything, _ = optimize(m, fold_limit=4 << 20)  # a larger --fold-limit raises the budget with it
    assert "ConstantOfShape" not in ops(everything)


def test_light_zoo_resnet50_stays_small(tmp_path):
    src = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
    if not src.exists():
        pytest.skip("onnx wheel without the light zoo models")
    dst = tmp_path / "o.onnx"
    r = cli(str(src), "-o", str(dst), "-q")
    assert r.returncode == 0, r.stderr
    assert dst.stat().st_size <= src.stat().st_size + (1 << 20) + 65536  # the budget, plus the graph itself


def test_out_of_order_graph_is_sorted_not_refused():
    """onnxsim's output is now and then out of topological order: the simplify pass sorts it
    (toposort is stable and leaves an ordered graph as it is)."""
    from rooftop.passes.base import toposort, toposorted

    nodes = [
        helper.make_node("Neg", ["b"], ["y"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Abs", ["x"], ["a"]),
    ]
    g = helper.make_graph(
        nodes,
        "shuffled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert not toposorted(m)
    assert toposort(m) and toposorted(m)
    assert ops(m) == ["Abs", "Relu", "Neg"]
    assert not toposort(m)  # already in order: unchanged
    onnx.checker.check_model(m)


def test_minus_one_dim_is_dynamic():
    """An input declared with a dimension of -1 (some exporters write dynamic axes so) is verified
    as dynamic, at two sizes, instead of being taken as fixed and skipped."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Identity", ["r"], ["y"])]
    g = helper.make_graph(
        nodes,
        "m1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 8])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out, report = optimize(m)
    assert report.final_check is not None and report.final_check.ok
    assert report.verification.count("x=") == 2


def test_a_generated_weight_over_the_limit_is_not_folded_through_a_reshape():
    """ConstantOfShape → Reshape → Gemm weight of 4 MB, as the light Inception-v1 writes its
    classifier: onnxsim folded the Reshape whatever its threshold; simplify keeps it computed."""
    from rooftop.passes.base import weight_bytes

    nodes = [
        helper.make_node(
            "ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.02])
        ),
        helper.make_node("Reshape", ["w", "wshape2"], ["w2"]),
        helper.make_node("Gemm", ["x", "w2"], ["y"], transB=1),
    ]
    inits = [init("wshape", np.array([1000, 1024], np.int64)), init("wshape2", np.array([1000, 1024], np.int64))]
    g = helper.make_graph(
        nodes,
        "gen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    out, report = optimize(m)
    assert weight_bytes(out) - weight_bytes(m) <= 1 << 20
    assert "ConstantOfShape" in ops(out) and report.final_check.ok
