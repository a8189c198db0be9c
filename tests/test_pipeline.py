"""The optimize run end to end: rollback, verification, custom ops, control flow, external data, CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import MODELS, ROOT, cli, counted, init, make_model, ops, optimize, run, vi
from onnx import TensorProto, helper

import rooftop
from rooftop import passes as P
from rooftop.errors import VerificationError
from rooftop.passes.base import Pass

SAMPLES = sorted(p for p in MODELS.glob("*.onnx"))


class Explodes(Pass):
    name = "test-explodes"
    summary = "raises"

    def run(self, graph, ctx):
        raise RuntimeError("boom")


class ChangesOutputs(Pass):
    """Turns every Relu into a Sigmoid: a valid graph that computes something else."""

    name = "test-wrong"
    summary = "wrong rewrite"

    def run(self, graph, ctx):
        n = 0
        for node in graph.nodes:
            if node.op == "Relu":
                node.op = "Sigmoid"
                n += 1
        return counted(n)


class BreaksGraph(Pass):
    """Leaves a node reading a tensor nobody produces: onnx.checker must reject it."""

    name = "test-invalid"
    summary = "invalid graph"

    def run(self, graph, ctx):
        node = graph.nodes[0]
        node.inputs[0] = gs.Variable("nobody_makes_this", dtype=np.float32)
        return counted(1)


@pytest.fixture
def extra_passes(monkeypatch):
    for cls in (Explodes, ChangesOutputs, BreaksGraph):
        monkeypatch.setitem(P.REGISTRY, cls.name, cls)


@pytest.mark.parametrize("model", SAMPLES, ids=lambda p: p.stem)
def test_samples_optimize_and_verify(model, tmp_path):
    out = tmp_path / "out.onnx"
    res = cli(str(model), "-o", str(out), "--report", "--report", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    # piped: 100 columns, the narrow table (pass, status, rewrites as "rw", ...); the passes that
    # found nothing on one line under it
    rep = json.loads((tmp_path / "r.json").read_text())
    fold = next(p for p in rep["passes"] if p["name"] == "fold-conv-bn")
    if fold["status"] == "unchanged":
        assert re.search(r"\d+ unchanged: .*fold-conv-bn", " ".join(res.stdout.split())), res.stdout
    else:
        assert re.search(r"fold-conv-bn\s+applied\s+\d+\s", res.stdout), res.stdout
    assert max(len(line) for line in res.stdout.splitlines() if "│" in line or line.startswith(" pass")) <= 100
    m = onnx.load(out)
    onnx.checker.check_model(m)
    assert rep["verification"]["ok"] is True
    assert [p["name"] for p in rep["passes"]] == rep["pipeline"]


def test_the_command_ends_with_its_output_flushed_and_no_temp_left(tmp_path):
    """The command skips the interpreter's teardown (os._exit): its exit code, its last line and
    the report it wrote must all be there, and its temp folder empty."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "rooftop",
            str(SAMPLES[0]),
            "--check",
            "--hardware",
            "host",
            "--time-budget",
            "0.2",
            "--report",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert res.returncode == 1, res.stderr  # --check: the model would change
    assert "would change: cleanup" in res.stdout and res.stdout.rstrip().splitlines()[-1].startswith("projected:"), (
        res.stdout
    )
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["passes"] and rep["output"]["paths"] == []  # --check writes no model
    # (onnxruntime's import writes a 51-byte session marker, .ses, into the temp folder: not ours)
    assert [p.name for p in tmp.iterdir() if p.name != ".ses"] == []


def test_broken_pass_is_rolled_back(extra_passes, tmp_path):
    src = MODELS / "resnet_bn.onnx"
    model, report = optimize(
        src, tmp_path / "o.onnx", passes=["test-explodes", "fold-conv-bn", "test-wrong", "test-invalid"]
    )
    recs = {r.name: r for r in report.passes}
    assert recs["test-explodes"].status == "rolled back" and "boom" in recs["test-explodes"].reason
    assert recs["test-wrong"].status == "rolled back" and "outputs changed" in recs["test-wrong"].reason
    assert recs["test-invalid"].status == "rolled back" and "checker" in recs["test-invalid"].reason
    assert recs["fold-conv-bn"].status == "applied"
    # found by the checks of the pipeline's output (onnx.checker first), then named in a re-run
    assert any(
        w.startswith("the optimized model was rejected by onnx.checker (after the pipeline: invalid ONNX graph")
        for w in report.warnings
    ), report.warnings
    out = onnx.load(tmp_path / "o.onnx")
    assert "Sigmoid" not in ops(out) and "Relu" in ops(out)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"input": x})[0], run(onnx.load(src), {"input": x})[0], rtol=1e-4, atol=1e-5)


def test_strict_fails_with_pass_name_and_writes_nothing(extra_passes, tmp_path):
    with pytest.raises(VerificationError) as ei:
        optimize(MODELS / "resnet_bn.onnx", tmp_path / "o.onnx", passes=["test-wrong"], strict=True)
    assert ei.value.pass_name == "test-wrong"
    assert not (tmp_path / "o.onnx").exists()


def test_strict_cli_exit_code(tmp_path, monkeypatch):
    # the CLI in-process, with the wrong pass registered
    from rooftop.cli import main

    monkeypatch.setitem(P.REGISTRY, ChangesOutputs.name, ChangesOutputs)
    code = main(
        [str(MODELS / "resnet_bn.onnx"), "-o", str(tmp_path / "o.onnx"), "--passes", "test-wrong", "--strict", "-q"]
    )
    assert code == 3
    assert not (tmp_path / "o.onnx").exists()


def test_input_model_object_not_mutated():
    m = onnx.load(MODELS / "resnet_bn.onnx")
    before = m.SerializeToString()
    out, _ = optimize(m)
    assert m.SerializeToString() == before
    assert len(out.graph.node) < len(m.graph.node)


def _custom_model():
    nodes = [
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("MyCustomOp", ["x1"], ["c"], domain="acme.custom", alpha=2.0),
        helper.make_node("Dropout", ["c"], ["y"]),
    ]
    return make_model(nodes, [vi("x", [1, 4])], [vi("y", [1, 4])], extra_opsets={"acme.custom": 1})


def test_custom_domain_passes_through(tmp_path):
    src = tmp_path / "custom.onnx"
    onnx.save(_custom_model(), src)
    res = cli(str(src), "-o", str(tmp_path / "o.onnx"), "--report")
    assert res.returncode == 0, res.stderr
    assert "verification skipped" in res.stderr
    out = onnx.load(tmp_path / "o.onnx")
    assert ops(out) == ["MyCustomOp"]
    node = out.graph.node[0]
    assert node.domain == "acme.custom" and node.attribute[0].f == 2.0
    assert {o.domain: o.version for o in out.opset_import}["acme.custom"] == 1
    assert [o.name for o in out.graph.output] == ["y"]


def test_control_flow_passes_through(tmp_path):
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"])], "then", [], [vi("t", [2, 3])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [], [vi("e", [2, 3])])
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    m = make_model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [init("zero", np.array(0.0, np.float32))])
    src = tmp_path / "if.onnx"
    onnx.save(m, src)
    res = cli(str(src), "-o", str(tmp_path / "o.onnx"))
    assert res.returncode == 0, res.stderr
    out = onnx.load(tmp_path / "o.onnx")
    assert "If" in ops(out)
    for x in (np.ones((2, 3), np.float32), -np.ones((2, 3), np.float32)):
        np.testing.assert_array_equal(run(out, {"x": x})[0], run(m, {"x": x})[0])


def test_external_data_round_trip(tmp_path):
    w = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Identity", ["h"], ["y"])],
        [vi("x", [1, 256])],
        [vi("y", [1, 256])],
        [init("w", w)],
    )
    src = tmp_path / "ext.onnx"
    reference = onnx.ModelProto()
    reference.CopyFrom(m)  # onnx.save with external data rewrites the proto it is given
    onnx.save(m, src, save_as_external_data=True, location="weights.bin", size_threshold=0)
    out = tmp_path / "out.onnx"
    res = cli(str(src), "-o", str(out), "--external-data")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.onnx.data").stat().st_size >= w.nbytes
    assert out.stat().st_size < w.nbytes  # weights are not inline
    loaded = rooftop.load_model(out)
    x = np.ones((1, 256), np.float32)
    np.testing.assert_array_equal(run(loaded, {"x": x})[0], run(reference, {"x": x})[0])
    assert ops(loaded) == ["MatMul"]


def test_list_passes():
    res = cli("--list-passes")
    assert res.returncode == 0
    for name in P.REGISTRY:
        assert name in res.stdout


def test_check_mode_exit_codes(tmp_path):
    src = MODELS / "resnet_bn.onnx"
    res = cli(str(src), "--check")
    assert res.returncode == 1, res.stderr
    assert "fold-conv-bn" in res.stdout
    assert not list(tmp_path.iterdir())
    out = tmp_path / "o.onnx"
    assert cli(str(src), "-o", str(out), "-q").returncode == 0
    res2 = cli(str(out), "--check")
    assert res2.returncode == 0, res2.stdout
    assert "nothing to change" in res2.stdout


def test_skip_and_passes(tmp_path):
    _, rep = optimize(MODELS / "resnet_bn.onnx", skip=["simplify"])
    assert [r.name for r in rep.passes] == [n for n in P.DEFAULT_PIPELINE if n != "simplify"]
    _, rep = optimize(MODELS / "resnet_bn.onnx", passes=["cleanup"])
    assert [r.name for r in rep.passes] == ["cleanup"]


def test_fixed_point_stops_when_nothing_changes():
    _, rep = optimize(MODELS / "resnet_bn.onnx", fixed_point=True)
    iterations = max(r.iteration for r in rep.passes)
    assert iterations == 2  # the second round finds nothing and ends the loop
    assert all(r.status == "unchanged" for r in rep.passes if r.iteration == 2)


def test_dynamic_model_verified_at_two_sizes():
    _, rep = optimize(MODELS / "encoder_dynamic.onnx")
    assert " and " in rep.verification, rep.verification


def test_inputs_npz(tmp_path):
    x = np.random.default_rng(5).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    _, rep = optimize(MODELS / "resnet_bn.onnx", inputs_npz=str(tmp_path / "in.npz"))
    assert "input=3x3x32x32" not in rep.verification and "user inputs" in rep.verification
    assert rep.final_check is not None and rep.final_check.ok


def test_no_verify_warns():
    _, rep = optimize(MODELS / "resnet_bn.onnx", verify=False)
    assert any("verification disabled" in w for w in rep.warnings)
    assert not any(r.verified for r in rep.passes)


def test_input_shape_binding(tmp_path):
    _, rep = optimize(MODELS / "encoder_dynamic.onnx", input_shapes={"input": [3, 5, 32]})
    assert "input=3x5x32" in rep.verification


def test_json_report_schema(tmp_path):
    res = cli(
        str(MODELS / "resnet_bn.onnx"), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.json"), "-q"
    )
    assert res.returncode == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    for key in ("schema_version", "model", "output", "target", "passes", "verification"):
        assert key in rep
    fold = next(p for p in rep["passes"] if p["name"] == "fold-conv-bn")
    assert fold["rewrites"] == 9 and fold["nodes_before"] - fold["nodes_after"] == 9
    # verified with the pipeline's output (one check of the whole), not on its own
    assert fold["verified"] is True and fold["verified_with_final"] is True and fold["max_abs_error"] is None
    assert rep["verification"]["ok"] is True and rep["verification"]["max_abs_error"] < 1e-4


@pytest.mark.parametrize("ext", [".md", ".html"])
def test_text_reports(tmp_path, ext):
    p = tmp_path / f"r{ext}"
    res = cli(str(MODELS / "resnet_bn.onnx"), "-o", str(tmp_path / "o.onnx"), "--report", str(p), "-q")
    assert res.returncode == 0
    text = p.read_text()
    assert "fold-conv-bn" in text


def test_large_constant_is_not_materialized_by_folding(tmp_path):
    """ConstantOfShape of 4M floats (16 MiB) stays an op: the file does not blow up."""
    nodes = [
        helper.make_node(
            "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        ),
        helper.make_node("Add", ["x", "big"], ["y"]),
    ]
    m = make_model(
        nodes, [vi("x", [1024, 4096])], [vi("y", [1024, 4096])], [init("shape", np.array([1024, 4096], np.int64))]
    )
    out, rep = optimize(m, passes=["simplify"])
    assert "ConstantOfShape" in ops(out)
    assert out.ByteSize() < 100_000
    out2, _ = optimize(m, passes=["simplify"], fold_limit=64 << 20)
    assert "ConstantOfShape" not in ops(out2)
    assert out2.ByteSize() > 16 << 20


def test_no_pass_changes_the_model_it_is_given():
    """A pass is a pure rewrite: the ModelProto handed to it is byte-identical afterwards
    (graphsurgeon aliases opset_import; FusedConv/QLinear passes add com.microsoft)."""
    from rooftop.passes import PassContext

    for name in ("resnet_bn", "resnet_qdq_int8", "odd_channels", "encoder_dynamic"):
        m = onnx.load(MODELS / f"{name}.onnx")
        before = m.SerializeToString()
        for cls in P.REGISTRY.values():
            if cls.name.startswith("test-"):
                continue
            cls().apply(m, PassContext(target="onnxruntime", channel_multiple=16))
            assert m.SerializeToString() == before, (name, cls.name)


def test_onnxsim_is_not_imported_when_it_has_nothing_to_do():
    """resnet_bn (exported with constant folding) has no constant subgraph, shape read or pair
    onnxsim simplifies: simplify says so without importing it (seconds where torch is installed)."""
    import subprocess
    import sys

    code = (
        "import sys, rooftop; m, r = rooftop.optimize(sys.argv[1], time=False, hardware='xeon-avx512'); "
        "s = next(p for p in r.passes if p.name == 'simplify'); "
        "print(s.status.value, 'onnxsim.onnx_simplifier' in sys.modules, s.notes[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(MODELS / "resnet_bn.onnx")], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("unchanged False nothing for onnxsim")


def test_onnxsim_runs_without_its_package_init(tmp_path):
    """simplify loads onnxsim's simplifier alone (its package __init__ imports torch where torch is
    installed: seconds and 300 MB); a later `import onnxsim` still gets the whole package."""
    import subprocess
    import sys

    code = (
        "import sys, rooftop; m, r = rooftop.optimize(sys.argv[1], time=False, hardware='xeon-avx512'); "
        "s = next(p for p in r.passes if p.name == 'simplify'); "
        "print(s.status.value, s.rewrites, 'onnxsim.onnx_simplifier' in sys.modules, 'torch' in sys.modules); "
        "import onnxsim; print(hasattr(onnxsim, 'simplify'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(MODELS / "encoder_dynamic.onnx")], capture_output=True, text=True, check=True
    ).stdout
    first, second = out.split("\n")[:2]
    assert first.split()[0] == "applied" and int(first.split()[1]) > 0
    assert first.split()[2:] == ["True", "False"]
    assert second == "True"


def test_second_size_halves_the_other_dims_when_they_halve():
    """The second size is twice the batch and half the other dynamic dims (cheaper than the first,
    where an image model's ×2 on height and width would cost 8×); an odd dim is doubled instead."""
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["batch", 3, "h"])], [vi("y", ["batch", 3, "h"])])
    _, rep = optimize(m, input_shapes={"x": [1, 3, 64]}, time=False, analyze=False)
    assert rep.verification == "verified on x=1x3x64 and x=2x3x32"
    _, rep = optimize(m, input_shapes={"x": [1, 3, 63]}, time=False, analyze=False)
    assert rep.verification == "verified on x=1x3x63 and x=2x3x126"


def test_outputs_kept_from_a_run_are_arrays_of_their_own():
    """onnxruntime returns views into the session's arena: a kept reference output held the whole
    arena after the session was gone (100 MB on bert-qdq). run_model's outputs own their data."""
    from rooftop.runtime import make_session, run_model

    m = onnx.load(MODELS / "resnet_bn.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    raw = make_session(m).run(None, {"input": x})
    assert not raw[0].flags.owndata  # what onnxruntime gives (if it copies one day, this test says so)
    outs = run_model(m, {"input": x})
    assert all(a.flags.owndata for a in outs.values())
    np.testing.assert_array_equal(next(iter(outs.values())), raw[0])
