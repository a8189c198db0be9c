"""--audit: findings on models planted with each kind, agreement with what the passes do on the
bundled samples, the CI gate (--fail-on, budgets, --baseline) and its exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import MODELS, cli, init, make_model, vi
from onnx import TensorProto, helper

from rooftop.audit import KINDS, Gate, audit
from rooftop.pipeline import Options

R = np.random.default_rng(0)


def f32(*s):
    return R.standard_normal(s).astype(np.float32)


def planted():
    """One of each kind an author must fix, and one a pass fixes, each in a named node."""
    bn = [
        init(f"bn_{k}", v)
        for k, v in (
            ("s", np.ones(8, np.float32)),
            ("b", np.zeros(8, np.float32)),
            ("m", np.zeros(8, np.float32)),
            ("v", np.ones(8, np.float32)),
        )
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("BatchNormalization", ["r1", "bn_s", "bn_b", "bn_m", "bn_v"], ["b1"], name="bn_after_relu"),
        helper.make_node("Conv", ["b1", "W2"], ["c2"], name="odd23"),
        helper.make_node("Conv", ["c2", "W3"], ["c3"], dilations=[2, 2], pads=[2, 2, 2, 2], name="dilated"),
        helper.make_node("Conv", ["c3", "W4"], ["c4"], group=2, pads=[1, 1, 1, 1], name="grouped"),
        helper.make_node("QuantizeLinear", ["c4", "qs", "qz"], ["q1"], name="q1"),
        helper.make_node("DequantizeLinear", ["q1", "qs", "qz"], ["d1"], name="dq1"),
        helper.make_node("Softmax", ["d1"], ["sm"], axis=1, name="softmax_in_qdq"),
        helper.make_node("QuantizeLinear", ["sm", "qs", "qz"], ["q2"], name="q2"),
        helper.make_node("DequantizeLinear", ["q2", "qs", "qz"], ["d2"], name="dq2"),
        helper.make_node("Cast", ["d2"], ["h"], to=TensorProto.FLOAT16, name="to_fp16"),
        helper.make_node("Cast", ["h"], ["k"], to=TensorProto.FLOAT, name="back_to_fp32"),
        helper.make_node("Shape", ["k"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["g"], axis=0, name="gather"),
        helper.make_node("Unsqueeze", ["g", "ax0"], ["u"], name="unsqueeze"),
        helper.make_node("Concat", ["u", "minus1"], ["t"], axis=0, name="concat"),
        helper.make_node("Reshape", ["k", "t"], ["y"], name="reshape"),
    ]
    inits = [
        init("W1", f32(8, 8, 3, 3)),
        init("W2", f32(23, 8, 1, 1)),
        init("W3", f32(8, 23, 3, 3)),
        init("W4", f32(8, 4, 3, 3)),
        init("qs", np.array(0.05, np.float32)),
        init("qz", np.array(0, np.int8)),
        init("zero", np.array(0, np.int64)),
        init("ax0", np.array([0], np.int64)),
        init("minus1", np.array([-1], np.int64)),
    ] + bn
    return make_model(nodes, [vi("x", [1, 8, 12, 12])], [vi("y", [1, 1152])], inits)


@pytest.fixture(scope="module")
def planted_audit(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "planted.onnx"
    import onnx

    onnx.save(planted(), path)
    return audit(str(path), Options(time=False, hardware="xeon-avx512", channel_multiple=8), Gate())


EXPECTED = {
    "batchnorm-not-foldable": [["bn_after_relu"]],
    "odd-channels": [["odd23"]],
    "dilated-conv": [["dilated"]],
    "grouped-conv": [["grouped"]],
    "qdq-float-op": [["softmax_in_qdq"]],
    "cast-round-trip": [["to_fp16", "back_to_fp32"]],
    "shape-computation": [["shape", "gather", "unsqueeze", "concat"]],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_planted_nodes_and_nothing_else_of_the_kind(planted_audit, kind):
    got = sorted(f.nodes for f in planted_audit.findings if f.kind == kind)
    assert got == EXPECTED[kind]


def test_who_fixes_what(planted_audit):
    fixed = {f.kind: f.fixed_by for f in planted_audit.findings if f.kind in EXPECTED}
    assert fixed["odd-channels"] == "pad-channels"
    assert fixed["shape-computation"] in ("simplify", "shape-chains")
    for kind in ("batchnorm-not-foldable", "dilated-conv", "grouped-conv", "qdq-float-op", "cast-round-trip"):
        assert fixed[kind] is None
        f = next(f for f in planted_audit.findings if f.kind == kind)
        assert f.author_fix and f.bytes > 0 and f.predicted_ms > 0
    soft = next(f for f in planted_audit.findings if f.kind == "qdq-float-op")
    assert "--target onnxruntime (QLinearSoftmax)" in soft.author_fix


def test_sample_findings_match_what_the_passes_do(tmp_path):
    from helpers import optimize

    a = audit(str(MODELS / "resnet_bn.onnx"), Options(time=False, hardware="xeon-avx512"), Gate())
    foldable = [f for f in a.findings if f.kind == "batchnorm-foldable"]
    _out, report = optimize(MODELS / "resnet_bn.onnx")
    fold = next(r for r in report.passes if r.name == "fold-conv-bn")
    assert len(foldable) == fold.counts["bn-into-conv"] == 9
    assert all(f.fixed_by == "fold-conv-bn" for f in foldable)
    assert a.recoverable_ms > 0 and 0 <= a.memory_bound_share <= 1


def test_gate_exit_codes_and_json(tmp_path):
    src = MODELS / "resnet_bn.onnx"
    rep = tmp_path / "a.json"
    r = cli("--audit", str(src), "--report", str(rep), "--hardware", "xeon-avx512")
    assert r.returncode == 0, r.stderr
    d = json.loads(rep.read_text())["audit"]
    assert d["schema_version"] == 2 and {
        "findings",
        "nodes",
        "traffic_bytes",
        "predicted_ms",
        "memory_bound_share",
        "recoverable_ms",
        "failures",
        "latency",
    } <= set(d)
    assert set(d["findings"][0]) >= {
        "kind",
        "nodes",
        "message",
        "bytes",
        "predicted_ms",
        "measured_ms",
        "fixed_by",
        "author_fix",
    }
    assert cli("--audit", str(src), "--fail-on", "batchnorm-foldable").returncode == 5
    assert cli("--audit", str(src), "--fail-on", "dilated-conv").returncode == 0
    assert cli("--audit", str(src), "--max-traffic", "1KB").returncode == 5
    bad = cli("--audit", str(src), "--fail-on", "no-such-kind")
    assert bad.returncode == 2 and "no such finding kind" in bad.stderr and "Traceback" not in bad.stderr
    assert set(KINDS) >= set(EXPECTED)


def heavy_branch(base_path, out_path):
    """The same model with a slow side branch added to its output (two 384³ MatMuls of a tensor
    scaled by the input, so no runtime can fold them away)."""
    import onnx

    m = onnx.load(base_path)
    out = m.graph.output[0].name
    g = m.graph
    g.initializer.extend(
        [init("big_a", f32(384, 384)), init("big_b", f32(384, 384)), init("zero_w", np.zeros((1,), np.float32))]
    )
    x = g.input[0].name
    g.node.extend(
        [
            helper.make_node("ReduceSum", [x], ["xs"], keepdims=0),
            helper.make_node("Mul", ["big_a", "xs"], ["big_ax"]),
            helper.make_node("MatMul", ["big_ax", "big_b"], ["big"]),
            helper.make_node("MatMul", ["big", "big_b"], ["big2"]),
            helper.make_node("ReduceSum", ["big2"], ["big_s"], keepdims=0),
            helper.make_node("Mul", ["big_s", "zero_w"], ["nothing"]),
            helper.make_node("Add", [out, "nothing"], [out + "_plus"]),
        ]
    )
    g.output[0].name = out + "_plus"
    onnx.save(m, out_path)


def test_baseline_passes_the_same_model_and_catches_a_slow_branch(tmp_path):
    src = MODELS / "resnet_bn.onnx"
    base = tmp_path / "base.json"
    assert cli("--audit", str(src), "--report", str(base), "--max-latency-ms", "1000", fast=False).returncode == 0
    same = cli("--audit", str(src), "--baseline", str(base), fast=False)
    assert same.returncode == 0, same.stdout
    slow = tmp_path / "slow.onnx"
    heavy_branch(src, slow)
    r = cli("--audit", str(slow), "--baseline", str(base), fast=False)
    assert r.returncode == 5
    text = " ".join(r.stdout.split())
    assert "--baseline: nodes grew" in text and "--baseline: latency grew" in text


def test_custom_op_is_named_and_onnxruntime_refusal_is_reported(tmp_path):
    """A custom-domain op onnxruntime cannot load: custom-domain on the node, unsupported-op from the
    optimize run's own attempt to load the original (no second session)."""
    import onnx

    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mystery", ["r"], ["y"], domain="acme.ops", name="mystery"),
    ]
    m = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], extra_opsets={"acme.ops": 1})
    path = tmp_path / "custom.onnx"
    onnx.save(m, path)
    a = audit(str(path), Options(time=False, hardware="xeon-avx512"), Gate())
    assert [f.nodes for f in a.findings if f.kind == "custom-domain"] == [["mystery"]]
    broken = [f for f in a.findings if f.kind == "unsupported-op"]
    assert len(broken) == 1 and "Mystery" in broken[0].message and broken[0].fixed_by is None
