"""The pass manager and the pass template, without onnxruntime: statuses, skips, names."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from helpers import counted, init, make_model, ops, vi
from onnx import helper

from rooftop.passes.base import Pass, PassContext, PassManager, PassResult, Validation, distinct_names
from rooftop.records import Cause, Status


def model():
    return make_model(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        [vi("x", [2])],
        [vi("y", [2])],
        [init("c", np.ones(2, np.float32))],
    )


class TwoConstantsOneName(Pass):
    """Writes two different constants under one name: the template must keep them apart."""

    name = "test-clash"

    def run(self, graph, ctx):
        add = graph.nodes[0]
        a = gs.Constant("same", np.full(2, 2.0, np.float32))
        b = gs.Constant("same", np.full(2, 3.0, np.float32))
        mid = gs.Variable("mid", dtype=np.float32)
        graph.nodes.append(gs.Node("Mul", inputs=[add.inputs[0], a], outputs=[mid]))
        add.inputs = [mid, b]
        return counted(1)


def test_template_gives_clashing_tensors_distinct_names():
    out, res = TwoConstantsOneName().apply(model(), PassContext())
    names = [t.name for t in out.graph.initializer]
    assert sorted(names) == ["same", "same_1"]
    vals = {t.name: t for t in out.graph.initializer}
    from onnx import numpy_helper

    assert {float(numpy_helper.to_array(v)[0]) for v in vals.values()} == {2.0, 3.0}


def test_distinct_names_keeps_graph_io_names():
    x = gs.Variable("x", dtype=np.float32, shape=[2])
    y = gs.Variable("x_out", dtype=np.float32, shape=[2])
    clash = gs.Constant("x_out", np.ones(2, np.float32))
    g = gs.Graph(nodes=[gs.Node("Add", inputs=[x, clash], outputs=[y])], inputs=[x], outputs=[y])
    assert distinct_names(g) == 1
    assert y.name == "x_out" and clash.name == "x_out_1"


class Marks(Pass):
    name = "test-marks"

    def run(self, graph, ctx):
        graph.nodes[0].name = "marked"
        return counted(1)


def test_manager_statuses_without_onnxruntime():
    mgr = PassManager([Marks()], PassContext(), lambda name, m: Validation())
    out = mgr.run(model())
    assert mgr.records[0].status is Status.APPLIED and out.graph.node[0].name == "marked"
    mgr = PassManager([Marks()], PassContext(), lambda name, m: Validation(Cause.SLOWER, "slower"))
    out = mgr.run(model())
    assert mgr.records[0].status is Status.REJECTED and mgr.records[0].cause is Cause.SLOWER
    assert out.graph.node[0].name == ""  # the model from before the rejected pass goes on
    mgr = PassManager([Marks()], PassContext(), lambda name, m: Validation(Cause.OUTPUTS_CHANGED, "outputs changed"))
    mgr.run(model())
    assert mgr.records[0].status is Status.ROLLED_BACK and mgr.records[0].cause is Cause.OUTPUTS_CHANGED


def test_manager_skips_positions():
    mgr = PassManager([Marks()], PassContext(), skip={0: (Status.SKIPPED, Cause.BACKED_OFF, "backed off: test")})
    out = mgr.run(model())
    rec = mgr.records[0]
    assert rec.status is Status.SKIPPED and rec.cause is Cause.BACKED_OFF and rec.reason == "backed off: test"
    assert out.graph.node[0].name == ""
    # back-off re-runs repeat a rejected pass's record: what it measured and would have saved stay
    from rooftop.records import Latency, PassRecord

    lat = Latency(
        level="all", threads=1, rounds=10, ms_before=1.0, ms_after=2.0, ratio=2.0, ci=(1.9, 2.1), iqr=(1.95, 2.05)
    )
    rejected = PassRecord(
        name="test-marks", status=Status.REJECTED, cause=Cause.SLOWER, reason="slower", latency=lat, position=0
    )
    mgr = PassManager([Marks()], PassContext(), skip={0: rejected})
    out = mgr.run(model())
    rec = mgr.records[0]
    assert rec is not rejected and rec.status is Status.REJECTED and rec.latency is lat and rec.reason == "slower"
    assert rec.nodes_before == rec.nodes_after == 1 and out.graph.node[0].name == ""


def test_passes_keep_no_state_on_the_instance():
    """Per-run state lives in a local object: after a run, a pass instance holds nothing."""
    import onnx
    from helpers import MODELS

    from rooftop.passes import REGISTRY

    for path in sorted(MODELS.glob("*.onnx")):
        m = onnx.load(path)
        for name, cls in REGISTRY.items():
            p = cls()
            for target in ("portable", "onnxruntime"):
                p.apply(m, PassContext(target=target, channel_multiple=8))
            assert vars(p) == {}, f"{name} keeps {sorted(vars(p))} on the instance"


class FirstRowEverywhere(Pass):
    """Relu(x) → Relu(Expand(x[0:1], Shape(x))): the same outputs at batch 1, not at batch 2."""

    name = "test-first-row"
    summary = "wrong only when the batch is larger than 1"

    def run(self, graph, ctx):
        relu = next((n for n in graph.nodes if n.op == "Relu" and n.inputs[0] is graph.inputs[0]), None)
        if relu is None:
            return PassResult()
        x = graph.inputs[0]
        row, shape, wide = (
            gs.Variable(n, dtype=d) for n, d in (("row", np.float32), ("shape", np.int64), ("wide", np.float32))
        )
        graph.nodes += [
            gs.Node(
                "Slice",
                "first",
                inputs=[
                    x,
                    gs.Constant("s0", np.array([0])),
                    gs.Constant("s1", np.array([1])),
                    gs.Constant("ax", np.array([0])),
                ],
                outputs=[row],
            ),
            gs.Node("Shape", "shape", inputs=[x], outputs=[shape]),
            gs.Node("Expand", "expand", inputs=[row, shape], outputs=[wide]),
        ]
        relu.inputs = [wide]
        return counted(1)


def test_passes_are_checked_with_the_pipelines_output_and_alone_only_when_it_differs(monkeypatch):
    """The pipeline's output is checked at every input size, once. When it differs (here: a pass
    wrong only at batch 2), the passes run again, each checked on its own at every size: the
    culprit is rolled back and named, the one before it kept."""
    import rooftop
    from rooftop import passes as P
    from rooftop.verify import Verifier

    checked: list[list[str]] = []
    real = Verifier.check

    def check(self, candidate, *a, **k):
        checked.append([n.op_type for n in candidate.graph.node])
        return real(self, candidate, *a, **k)

    monkeypatch.setattr(Verifier, "check", check)
    monkeypatch.setitem(P.REGISTRY, FirstRowEverywhere.name, FirstRowEverywhere)
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Add", ["r", "i"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", ["batch", 8])], [vi("y", ["batch", 8])])

    out, rep = rooftop.optimize(m, passes=["cleanup"], time=False, analyze=False, cross_check=False)
    assert checked == [["Relu", "Add"]]  # one check, of the output
    (rec,) = rep.passes
    assert rec.status is Status.APPLIED and rec.verified and rec.max_abs_error is None and rep.final_check.ok

    checked.clear()
    out, rep = rooftop.optimize(m, passes=["cleanup", "test-first-row"], time=False, analyze=False, cross_check=False)
    wrong = ["Relu", "Add", "Slice", "Shape", "Expand"]
    assert [sorted(c) for c in checked] == [sorted(wrong), ["Add", "Relu"], sorted(wrong)]  # output; then each pass
    assert rep.verification.startswith("verified on x=1x") and " and x=2x" in rep.verification
    clean, first_row = rep.passes
    assert clean.status is Status.APPLIED and clean.verified and clean.max_abs_error == 0.0
    assert (
        first_row.status is Status.ROLLED_BACK
        and first_row.cause is Cause.OUTPUTS_CHANGED
        and "on x=2x" in first_row.reason
    )
    assert any(w.startswith("the optimized model differed from the original (on x=2x") for w in rep.warnings)
    assert ops(out) == ["Relu", "Add"] and rep.final_check.ok


def test_idle_passes_do_not_import_the_graph(monkeypatch):
    """A pass whose anchor ops are absent returns without importing (an import of a large graph
    costs more than most passes' matching); one whose anchor is present imports and runs."""
    import rooftop.passes.base as base
    from rooftop.passes import REGISTRY

    def no_import(*a, **k):
        raise AssertionError("imported")

    monkeypatch.setattr(base, "import_graph", no_import)
    monkeypatch.setattr(base, "import_with_shapes", no_import)
    m = model()  # one Add of a constant: nothing to fuse, fold, quantize or pad
    idle = {
        "norm-fusion",
        "gelu-fusion",
        "attention-fusion",
        "fold-conv-bn",
        "conv-activation",
        "u8-activations",
        "requant",
        "nhwc-int8",
        "pad-channels",
    }
    for target in ("portable", "onnxruntime"):
        ctx = PassContext(target=target, channel_multiple=8)
        for name in idle:
            out, res = REGISTRY[name]().apply(m, ctx)
            assert out is m and res.rewrites == 0, name
    assert REGISTRY["pad-channels"]().apply(m, PassContext())[1].notes == [
        "not run: no --channel-multiple and the hardware profile does not say padding pays"
    ]
    # a QDQ-style MatMul (weight from a DequantizeLinear) gives fold-conv-bn no constant weight
    qdq = make_model(
        [helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]), helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [2, 2])],
        [vi("y", [2, 2])],
        [init("wq", np.ones((2, 2), np.int8)), init("s", np.array(0.5, np.float32))],
    )
    assert REGISTRY["fold-conv-bn"]().apply(qdq, PassContext())[0] is qdq
    # a global average pool written as ReduceMean (no Sqrt: no decomposed norm) leaves norm-fusion idle
    gap = make_model(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)],
        [vi("x", [1, 4, 2, 2])],
        [vi("y", [1, 4])],
        [],
        opset=17,
    )
    assert REGISTRY["norm-fusion"]().apply(gap, PassContext())[0] is gap
    # the anchors are what make them import: cleanup (no anchors) and requant on the DQ graph do
    for name, mdl in (("cleanup", m), ("requant", qdq), ("fold-conv-bn", model_with_matmul())):
        try:
            REGISTRY[name]().apply(mdl, PassContext())
        except AssertionError as e:
            assert str(e) == "imported", name
        else:
            raise AssertionError(f"{name} did not import")


def model_with_matmul():
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [2, 2])],
        [vi("y", [2, 2])],
        [init("w", np.ones((2, 2), np.float32))],
    )
