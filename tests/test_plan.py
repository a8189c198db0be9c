"""Decisions that reproduce: the shapes they are taken at, the plan that records them, its replay,
and writing that depends only on the input and the decisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import ROOT, cli, init, make_model, vi

import rooftop
from rooftop import passes as P
from rooftop import shapes
from rooftop.errors import UsageError
from rooftop.records import Latency, Status
from rooftop.runtime import graph_inputs

SAMPLES = ["resnet_bn", "encoder_dynamic", "resnet_qdq_int8", "odd_channels"]


def image_model(dims=("N", "unk__1", "unk__2")) -> onnx.ModelProto:
    """Conv 3→4 + Relu on an image input [N, 3, H, W] with dynamic batch and sides."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        onnx.helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    return make_model(
        nodes, [vi("x", [dims[0], 3, dims[1], dims[2]])], [vi("y", [dims[0], 4, dims[1], dims[2]])], [init("w", w)]
    )


# -- the shapes decisions are taken at ----------------------------------------------------------


def test_realistic_defaults_by_place_and_by_name():
    sp = shapes.plan(graph_inputs(image_model()), {})
    assert sp.first == {"x": (1, 3, 224, 224)}
    assert [(d.axis, d.value, d.why) for d in sp.defaulted] == [
        (0, 1, "named 'N'"),
        (2, 224, "image side"),
        (3, 224, "image side"),
    ]
    assert sp.hint() == "--input-shape x=1x3x224x224"
    text = make_model(
        [onnx.helper.make_node("Identity", ["ids"], ["y"])],
        [vi("ids", ["batch_size", "sequence_length"], onnx.TensorProto.INT64)],
        [vi("y", ["batch_size", "sequence_length"], onnx.TensorProto.INT64)],
    )
    assert shapes.plan(graph_inputs(text), {}).first == {"ids": (1, 128)}
    ocr = image_model(("N", 48, "W"))
    assert shapes.plan(graph_inputs(ocr), {}).first == {"x": (1, 3, 48, 224)}


def test_a_text_line_model_falls_back_to_an_ocr_size_and_says_so(tmp_path):
    """A recognizer whose Reshape needs 48-pixel lines does not run at 224×224: it is judged at
    48×320 (PP-OCR's line), not at a small size made up for speed, and the report says why."""
    nodes = [onnx.helper.make_node("Reshape", ["x", "shape"], ["y"], name="lines")]
    m = make_model(
        nodes,
        [vi("x", ["N", 3, "H", "W"])],
        [vi("y", ["N", 144, "L"])],
        [init("shape", np.array([0, 144, -1], np.int64))],
    )
    src = tmp_path / "rec.onnx"
    onnx.save(m, src)
    _, rep = rooftop.optimize(str(src), time=False, hardware="xeon-avx512")
    assert rep.shapes.first == {"x": (1, 3, 48, 320)}
    assert "does not run at 224×224" in rep.shapes.fallback
    assert {d.why for d in rep.shapes.defaulted if d.axis >= 2} == {"image size the model runs at"}


def test_an_input_given_twice_forms_two_shape_sets():
    sets = shapes.parse_shape_sets(["x=1x3x48x320", "x=4x3x48x640", "n=2"])
    assert sets == [{"x": [1, 3, 48, 320], "n": [2]}, {"x": [4, 3, 48, 640], "n": [2]}]
    with pytest.raises(UsageError, match="fixed"):
        shapes.plan(graph_inputs(image_model(("N", 48, "W"))), [{"x": [1, 3, 32, 320]}])


def test_a_dynamic_image_model_is_judged_at_realistic_defaults_and_says_so(tmp_path):
    src = tmp_path / "img.onnx"
    onnx.save(image_model(), src)
    res = cli(str(src), "-o", str(tmp_path / "o.onnx"), "--report", "--report", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["shapes"]["sets"] == [{"x": [1, 3, 224, 224]}] and r["shapes"]["given"] == []
    assert {(d["axis"], d["value"]) for d in r["shapes"]["defaulted"]} == {(0, 1), (2, 224), (3, 224)}
    assert r["verification"]["description"].startswith("verified on x=1x3x224x224 and x=2x3x112x112")
    assert r["before"]["nodes"][0]["bytes_read"] == 4 * (3 * 224 * 224 + 4 * 3 * 3 * 3)  # costed at those shapes
    assert "costed at x=1x3x224x224" in res.stdout and "--input-shape x=1x3x224x224" in res.stdout


def test_two_shape_sets_are_verified_and_the_first_is_costed(tmp_path):
    src = tmp_path / "img.onnx"
    onnx.save(image_model(), src)
    res = cli(
        str(src),
        "-o",
        str(tmp_path / "o.onnx"),
        "--input-shape",
        "x=1x3x48x320",
        "--input-shape",
        "x=4x3x48x640",
        "--report",
        str(tmp_path / "r.json"),
    )
    assert res.returncode == 0, res.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["shapes"]["sets"] == [{"x": [1, 3, 48, 320]}, {"x": [4, 3, 48, 640]}] and not r["shapes"]["defaulted"]
    assert "x=1x3x48x320" in r["verification"]["description"] and "x=4x3x48x640" in r["verification"]["description"]
    assert r["before"]["nodes"][0]["bytes_read"] == 4 * (3 * 48 * 320 + 4 * 3 * 3 * 3)


class AddsIdentity(P.Pass):
    """Puts an Identity before the output: one node more, so the gate times it."""

    name = "test-adds-identity"
    summary = "adds a node"

    def run(self, graph, ctx):
        import onnx_graphsurgeon as gs

        if any(n.name == "extra" for n in graph.nodes):
            return P.PassResult()
        relu = next(n for n in graph.nodes if n.op == "Relu")
        y = relu.outputs[0]
        mid = gs.Variable("extra_in", dtype=np.float32)
        relu.outputs = [mid]
        graph.nodes.append(gs.Node("Identity", "extra", inputs=[mid], outputs=[y]))
        res = P.PassResult()
        res.count("identity")
        return res


def test_a_pass_faster_at_one_shape_set_and_slower_at_the_other_is_rejected(monkeypatch):
    monkeypatch.setitem(P.REGISTRY, AddsIdentity.name, AddsIdentity)
    seen = []

    def by_shape(before, after, level, stop, shapes=""):
        seen.append(shapes)
        r = 0.8 if "320" in shapes else 1.2  # faster on the small image, slower on the large one
        return Latency(level=level, threads=1, rounds=10, ms_before=1.0, ms_after=r, ratio=r, ci=(r, r), iqr=(r, r))

    sets = [{"x": [1, 3, 48, 320]}, {"x": [4, 3, 48, 640]}]
    out, rep = rooftop.optimize(
        image_model(), passes=[AddsIdentity.name], comparator=by_shape, input_shapes=sets, hardware="xeon-avx512"
    )
    (rec,) = rep.passes
    assert rec.status is Status.REJECTED and "at x=4x3x48x640" in rec.reason
    assert seen[:2] == ["x=1x3x48x320", "x=4x3x48x640"]
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu"]
    # at the small size alone it is faster (confirmed) and kept
    _, rep = rooftop.optimize(
        image_model(), passes=[AddsIdentity.name], comparator=by_shape, input_shapes=sets[:1], hardware="xeon-avx512"
    )
    assert rep.passes[0].status is Status.APPLIED


# -- the plan ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    """A default run of the resnet sample, timed (a short budget), with its report and plan."""
    d = tmp_path_factory.mktemp("plan")
    res = cli(
        "models/resnet_bn.onnx",
        "-o",
        str(d / "a.onnx"),
        "--time-budget",
        "0.2",
        "--hardware",
        "xeon-avx512",
        "--report",
        str(d / "r.json"),
        "--save-plan",
        str(d / "plan.json"),
        "-q",
        fast=False,
    )
    assert res.returncode == 0, res.stderr
    return d


def test_the_report_and_the_saved_plan_record_every_decision(decided):
    report = json.loads((decided / "r.json").read_text())
    plan = json.loads((decided / "plan.json").read_text())["plan"]
    assert plan == report["plan"]
    assert [s["name"] for s in plan["steps"]] == plan["pipeline"] == report["pipeline"]
    assert [s["decision"] for s in plan["steps"]] == [p["status"] for p in report["passes"]]
    assert plan["decided"]["deploy_level"] == "ORT_ENABLE_ALL" and plan["decided"]["measured"] is True
    assert plan["shapes"]["sets"] == [{"input": [1, 3, 32, 32]}]
    assert plan["options"]["target"] == "portable" and plan["versions"]["onnx"] == onnx.__version__
    assert len(plan["model"]["sha256"]) == 64
    kept = [s for s in plan["steps"] if s["decision"] == "applied"]
    assert kept and all(s["rule"] for s in kept)


@pytest.mark.parametrize("source", ["plan.json", "r.json"])
def test_replay_gives_the_same_bytes(decided, source):
    out = decided / f"replayed-{source}.onnx"
    res = cli(
        "models/resnet_bn.onnx",
        "-o",
        str(out),
        "--plan",
        str(decided / source),
        "--report",
        "-q",
        "--hardware",
        "xeon-avx512",
        fast=False,
    )
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (decided / "a.onnx").read_bytes()
    assert "replayed plan" in res.stdout and "ORT_ENABLE_ALL" not in res.stdout  # nothing timed


def test_replay_warns_on_other_library_versions(decided, tmp_path):
    plan = json.loads((decided / "plan.json").read_text())
    plan["plan"]["versions"]["onnx"] = "0.0.1"
    (tmp_path / "p.json").write_text(json.dumps(plan))
    _, rep = rooftop.optimize(
        str(ROOT / "models/resnet_bn.onnx"), tmp_path / "o.onnx", plan=tmp_path / "p.json", hardware="xeon-avx512"
    )
    assert any("other library versions (onnx 0.0.1 → " in w for w in rep.warnings)
    assert (tmp_path / "o.onnx").read_bytes() == (decided / "a.onnx").read_bytes()


def test_a_plan_naming_a_pass_that_no_longer_exists_is_one_line_and_exit_2(decided, tmp_path):
    plan = json.loads((decided / "plan.json").read_text())
    plan["plan"]["steps"][1]["name"] = "fold-everything"
    (tmp_path / "p.json").write_text(json.dumps(plan))
    res = cli("models/resnet_bn.onnx", "-o", str(tmp_path / "o.onnx"), "--plan", str(tmp_path / "p.json"))
    assert res.returncode == 2 and "fold-everything no longer exist" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.onnx").exists()
    (tmp_path / "bad.json").write_text("{}")
    res = cli("models/resnet_bn.onnx", "-o", str(tmp_path / "o.onnx"), "--plan", str(tmp_path / "bad.json"))
    assert res.returncode == 2 and "no plan in it" in res.stderr


def test_a_plan_replayed_at_other_shapes_says_so(decided, tmp_path):
    _, rep = rooftop.optimize(
        str(ROOT / "models/resnet_bn.onnx"),
        tmp_path / "o.onnx",
        plan=decided / "plan.json",
        input_shapes={"input": [2, 3, 32, 32]},
        hardware="xeon-avx512",
    )
    assert any("was decided at input=1x3x32x32; replayed at input=2x3x32x32" in w for w in rep.warnings)


def test_replay_skips_what_the_gate_rejected(monkeypatch, tmp_path):
    """A plan whose run rejected a pass: the replay does not run it, and writes the same bytes."""
    monkeypatch.setitem(P.REGISTRY, AddsIdentity.name, AddsIdentity)

    def slower(before, after, level, stop):
        return Latency(
            level=level, threads=1, rounds=10, ms_before=1.0, ms_after=1.5, ratio=1.5, ci=(1.4, 1.6), iqr=(1.5, 1.5)
        )

    src = tmp_path / "img.onnx"
    onnx.save(image_model(), src)
    _, rep = rooftop.optimize(
        str(src), tmp_path / "a.onnx", passes=["cleanup", AddsIdentity.name], comparator=slower, hardware="xeon-avx512"
    )
    assert [r.status for r in rep.passes] == [Status.UNCHANGED, Status.REJECTED]
    rep.plan.write(tmp_path / "plan.json")
    _, again = rooftop.optimize(str(src), tmp_path / "b.onnx", plan=tmp_path / "plan.json", hardware="xeon-avx512")
    assert [r.status for r in again.passes] == [Status.SKIPPED, Status.SKIPPED]
    assert "not replayed: rejected" in again.passes[1].reason
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


# -- deterministic writing ---------------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_pass_writes_the_same_bytes_twice(sample):
    from rooftop.passes import PassContext

    model = onnx.load(ROOT / "models" / f"{sample}.onnx")
    for target in ("portable", "onnxruntime"):
        ctx = PassContext(target=target, channel_multiple=8)
        for name, cls in P.REGISTRY.items():
            a, ra = cls().apply(model, ctx)
            b, rb = cls().apply(model, ctx)
            assert ra.counts == rb.counts, name
            assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True), (
                sample,
                target,
                name,
            )


def test_the_pipeline_writes_the_same_bytes_under_any_hash_seed(tmp_path):
    """Names, initializer order and attribute order never depend on set or dict iteration of
    strings (randomized per process by PYTHONHASHSEED)."""
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"o{seed}.onnx"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "rooftop",
                "models/encoder_dynamic.onnx",
                "-o",
                str(out),
                "--no-time",
                "--hardware",
                "xeon-avx512",
                "--target",
                "onnxruntime",
                "-q",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
