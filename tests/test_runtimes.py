"""The runtime interface: onnxruntime and OpenVINO behind one contract; decisions taken on the
runtime the user names; a portable output must load and match in OpenVINO."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, cli, needs_torch, ops, optimize

from rooftop import runtimes
from rooftop.errors import UsageError
from rooftop.runtime import graph_inputs, random_inputs
from rooftop.shapes import bind

try:
    import openvino  # noqa: F401

    HAS_OV = True
except ImportError:
    HAS_OV = False

needs_openvino = pytest.mark.skipif(
    not HAS_OV, reason="OpenVINO is not installed (pip install 'rooftop[openvino]'; .ci/run installs it)"
)
SAMPLES = ["resnet_bn", "encoder_dynamic", "resnet_qdq_int8", "odd_channels"]


def feeds_for(model):
    specs = graph_inputs(model)
    return random_inputs(specs, bind(specs, {})[0], seed=0)


@pytest.mark.parametrize("spec", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
@pytest.mark.parametrize("sample", SAMPLES)
def test_both_runtimes_load_run_time_and_profile_the_samples(spec, sample):
    rt = runtimes.get(spec)
    model = onnx.load(MODELS / f"{sample}.onnx")
    feeds = feeds_for(model)
    out = rt.load(model).run(feeds)
    ref = runtimes.get("onnxruntime").load(model).run(feeds)
    assert list(out) == [o.name for o in model.graph.output]
    for name, r in ref.items():
        assert out[name].shape == r.shape and out[name].dtype == r.dtype
        if r.dtype.kind == "f" and "qdq" not in sample:  # the int8 sample rounds differently in each runtime
            np.testing.assert_allclose(out[name], r, rtol=1e-3, atol=1e-4)
    t = rt.load(model, level="all", timing=True).runner(feeds, repeat=2)()
    assert 0 < t < 1.0
    prof = rt.profile_nodes(model, feeds, runs=2)
    assert prof and all(v >= 0 for v in prof.values())
    assert any(n.name in prof for n in model.graph.node)


def test_unknown_runtime_or_provider_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown runtime"):
        runtimes.get("tensorrt")
    with pytest.raises(UsageError, match="no such execution provider"):
        runtimes.get("onnxruntime:NoSuchExecutionProvider")
    for spec in ("tensorrt", "onnxruntime:CUDAExecutionProviderX"):
        res = cli("models/resnet_bn.onnx", "-o", "/tmp/never.onnx", "--runtime", spec)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "--runtime" in res.stderr


@needs_openvino
def test_runtime_openvino_end_to_end(tmp_path):
    res = cli(
        "models/resnet_bn.onnx",
        "-o",
        str(tmp_path / "o.onnx"),
        "--runtime",
        "openvino",
        "--time-budget",
        "0.3",
        "--hardware",
        "xeon-avx512",
        "--report",
        str(tmp_path / "r.json"),
        "-q",
        fast=False,
    )
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["runtime"] == "OpenVINO (CPU)" and r["plan"]["decided"]["runtime"] == "OpenVINO (CPU)"
    assert r["verification"]["description"].endswith("in OpenVINO (CPU)") and r["verification"]["ok"]
    assert set(r["latency"]) == {"all"} and r["latency"]["all"]["ort_level"] == "OpenVINO (CPU)"
    assert "fold-conv-bn" in [p["name"] for p in r["passes"] if p["status"] == "applied"]
    assert "BatchNormalization" not in ops(onnx.load(tmp_path / "o.onnx"))


@needs_openvino
def test_portable_candidates_are_checked_in_openvino(tmp_path):
    _, rep = optimize(MODELS / "resnet_bn.onnx", tmp_path / "o.onnx")
    assert rep.cross_checked == "OpenVINO (CPU)"
    _, rep = optimize(MODELS / "resnet_bn.onnx", tmp_path / "o.onnx", cross_check=False)
    assert rep.cross_checked is None
    _, rep = optimize(MODELS / "resnet_bn.onnx", tmp_path / "o.onnx", target="onnxruntime")
    assert rep.cross_checked is None  # com.microsoft ops are onnxruntime's own


@needs_openvino
def test_portable_requant_with_per_channel_scales_loads_in_openvino(tmp_path):
    """Per-channel weight scales in QLinearConv/QLinearMatMul load in onnxruntime, not in OpenVINO
    ("The number of dequantization scale elements ... must match"): the portable form keeps the
    QDQ groups and says why; the output loads and matches in OpenVINO."""
    from test_requant import float_cnn, quantize

    src, shapes = float_cnn(tmp_path)
    q = quantize(src, shapes, tmp_path / "q.onnx", True, "u8")
    out, rep = optimize(q, tmp_path / "o.onnx", passes=["requant", "cleanup"], cross_check=False)
    rec = next(r for r in rep.passes if r.name == "requant")
    assert any("weight quantized per channel" in why for why in rec.refusals), rec.refusals
    assert "QLinearConv" not in ops(out) and "QLinearMatMul" not in ops(out)
    ov = runtimes.get("openvino")
    written = onnx.load(tmp_path / "o.onnx")
    feeds = feeds_for(written)
    got = ov.load(written).run(feeds)
    ref = ov.load(onnx.load(q)).run(feeds)
    for name, r in ref.items():
        np.testing.assert_allclose(got[name], r, atol=1e-5)


@needs_openvino
def test_a_model_whose_weights_stay_on_disk_is_cross_checked(tmp_path):
    """Weights of 8 MB or more are worked on from disk (a spilled copy); OpenVINO refuses a symlink
    out of the model's folder, so its copy of the model sits beside hard links to them."""
    from helpers import init, make_model, vi
    from onnx import helper

    w = np.random.default_rng(0).standard_normal((1024, 2304)).astype(np.float32)  # 9.4 MB
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [vi("x", ["batch", 1024])],
        [vi("y", ["batch", 2304])],
        [init("w", w)],
    )
    onnx.save(m, tmp_path / "big.onnx")
    _, rep = optimize(tmp_path / "big.onnx", tmp_path / "o.onnx")
    assert rep.cross_checked == "OpenVINO (CPU)", rep.warnings


def upsample_add_model() -> onnx.ModelProto:
    """x + Resize(Conv_stride2(x), ×2): runs at even sides, fails in the Add at odd ones."""
    from onnx import helper
    from onnx import numpy_helper as nh

    w = nh.from_array(np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(np.float32) * 0.3, "w")
    sc = nh.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Resize", ["c", "", "sc"], ["u"], mode="nearest"),
        helper.make_node("Add", ["x", "u"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, sc]), opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@needs_openvino
def test_an_openvino_session_is_compiled_anew_after_a_failed_inference():
    """After an inference that fails on a shape the model cannot take, OpenVINO can compute wrong
    outputs at the next shape: the session compiles the model again, and runs on as a fresh one."""
    model = upsample_add_model()
    rt = runtimes.get("openvino")
    r = np.random.default_rng(1)
    even, odd = r.standard_normal((1, 3, 8, 8)).astype(np.float32), r.standard_normal((2, 3, 9, 9)).astype(np.float32)
    large = r.standard_normal((2, 3, 16, 16)).astype(np.float32)
    s = rt.load(model)
    s.run({"x": even})
    first = s.compiled
    with pytest.raises(Exception):  # whatever OpenVINO raises for the shape
        s.run({"x": odd})
    assert s.rebuilt == 1 and s.compiled is not first
    np.testing.assert_array_equal(s.run({"x": large})["y"], rt.load(model).run({"x": large})["y"])


@needs_torch
@needs_openvino
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_an_output_openvino_cannot_compile_as_deployed_is_refused(tmp_path, runtime):
    """A ResNet-18 QDQ export (quantize_static's defaults): requant's QLinearConv runs in OpenVINO's
    f32 check sessions but does not compile with its default settings (no suitable implementation).
    Decided in OpenVINO, or portable and cross-checked there, the written model compiles as deployed."""
    import sys

    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    sys.path.insert(0, str(MODELS))
    import archs

    torch.manual_seed(0)
    fp32 = archs.export(archs.resnet18(width=16, num_classes=10).eval(), torch.randn(1, 3, 64, 64), tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            r = np.random.default_rng(0)
            self.data = iter([{"input": r.standard_normal((1, 3, 64, 64)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.data, None)

    src, out, rep = tmp_path / "q.onnx", tmp_path / "out.onnx", tmp_path / "r.json"
    quantize_static(str(fp32), str(src), Reader(), quant_format=QuantFormat.QDQ)
    res = cli(str(src), "-o", str(out), "--runtime", runtime, "--no-time", "--report", str(rep))
    assert res.returncode == 0, res.stderr
    requant = next(p for p in json.loads(rep.read_text())["passes"] if p["name"] == "requant")
    assert requant["status"] == "rolled back" and "cannot load the rewritten model as deployed" in requant["reason"]
    runtimes.get("openvino").load(onnx.load(out), timing=True)  # compiles as deployed
