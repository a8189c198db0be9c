"""Measurement decides: a pass that makes the model slower at the deploy level is rejected; a
final model slower than the original backs off, at worst to the original graph.

Two kinds of test: with real onnxruntime timing (a pass that slows the model by far more than
5x, a neutral pass), and with a deterministic comparator that prices a model by its marker
nodes, so the back-off logic is tested exactly, without the machine's noise.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from helpers import cli, counted, init, make_model, ops, run, vi

import rooftop
from rooftop import model_io
from rooftop import passes as P
from rooftop.analysis.timing import decided, median_ci
from rooftop.passes.base import Pass, PassResult
from rooftop.records import Cause, Latency, Status, Verdict, verdict

N = 256  # MatMuls of ~0.5 ms: a rename measures as it is, not as the noise of a 20 µs run


def base_model() -> onnx.ModelProto:
    w = (np.random.default_rng(0).standard_normal((N, N)) / np.sqrt(N)).astype(np.float32)
    nodes = [
        onnx.helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        onnx.helper.make_node("Relu", ["h"], ["y"], name="relu"),
    ]
    return make_model(nodes, [vi("x", [N, N])], [vi("y", [N, N])], [init("w", w)])


class SlowsDown(Pass):
    """y + 0 * (a chain of 40 extra MatMuls): the same outputs, far more work."""

    name = "test-slow"
    summary = "adds work that does not change the outputs"

    def run(self, graph, ctx):
        if any(n.name.startswith("slow") for n in graph.nodes):
            return PassResult()
        relu = next(n for n in graph.nodes if n.op == "Relu")
        x = graph.inputs[0]
        q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((N, N)))
        w = gs.Constant("slow_w", (0.5 * q).astype(np.float32))
        t = x
        for i in range(40):
            out = gs.Variable(f"slow_t{i}", dtype=np.float32)
            graph.nodes.append(gs.Node("MatMul", f"slow_mm{i}", inputs=[t, w], outputs=[out]))
            t = out
        zero = gs.Constant("slow_zero", np.zeros((1,), np.float32))
        z = gs.Variable("slow_z", dtype=np.float32)
        graph.nodes.append(gs.Node("Mul", "slow_mul", inputs=[t, zero], outputs=[z]))
        y = relu.outputs[0]
        pre = gs.Variable("slow_pre", dtype=np.float32)
        relu.outputs = [pre]
        graph.nodes.append(gs.Node("Add", "slow_add", inputs=[pre, z], outputs=[y]))
        return counted(1)


class Renames(Pass):
    """Renames one node: a change to the model that computes exactly the same, equally fast."""

    name = "test-neutral"
    summary = "renames a node"

    def run(self, graph, ctx):
        node = next((n for n in graph.nodes if n.name == "mm"), None)
        if node is None:
            return PassResult()
        node.name = "mm_renamed"
        return counted(1)


def marker_pass(suffix: str) -> type[Pass]:
    class Marker(Pass):
        """Puts one Identity named marker_<suffix> before the graph output."""

        name = f"test-marker-{suffix}"
        summary = "adds a marker node"

        def run(self, graph, ctx):
            if any(n.name == f"marker_{suffix}" for n in graph.nodes):
                return PassResult()
            relu = next(n for n in graph.nodes if n.op == "Relu")
            y = relu.outputs[0]
            mid = gs.Variable(f"marker_{suffix}_in", dtype=np.float32)
            relu.outputs = [mid]
            graph.nodes.append(gs.Node("Identity", f"marker_{suffix}", inputs=[mid], outputs=[y]))
            return counted(1)

    return Marker


MARKERS = [marker_pass(s) for s in "abcde"]


def rename_marker(suffix: str) -> type[Pass]:
    class Rename(Pass):
        """Renames the Identity id_<suffix> to marker_<suffix>: no node, op or predicted work added,
        so the gate leaves it to the final comparison (it only removes work, by the stable rule)."""

        name = f"test-rename-{suffix}"
        summary = "renames a node to a marker"

        def run(self, graph, ctx):
            node = next((n for n in graph.nodes if n.name == f"id_{suffix}"), None)
            if node is None:
                return PassResult()
            node.name = f"marker_{suffix}"
            return counted(1)

    return Rename


RENAMES = [rename_marker(s) for s in "abcde"]


def chain_model() -> onnx.ModelProto:
    """base_model with five Identity nodes id_a .. id_e after the Relu."""
    m = base_model()
    m.graph.node[1].output[0] = "t0"
    for i, s in enumerate("abcde"):
        out = "y" if s == "e" else f"t{i + 1}"
        m.graph.node.append(onnx.helper.make_node("Identity", [f"t{i}"], [out], name=f"id_{s}"))
    return m


def markers(m: onnx.ModelProto) -> int:
    return sum(n.name.startswith("marker_") for n in m.graph.node)


def priced(step: float):
    """A comparator that prices a model at 1 + step per marker node, with no noise at all."""
    calls: list[tuple[int, int, str, str]] = []

    def compare(before, after, level, stop):
        a, b = 1.0 + step * markers(before), 1.0 + step * markers(after)
        calls.append((markers(before), markers(after), level, stop))
        r = b / a
        return Latency(level=level, threads=1, rounds=10, ms_before=a, ms_after=b, ratio=r, ci=(r, r), iqr=(r, r))

    compare.calls = calls  # type: ignore[attr-defined]
    return compare


@pytest.fixture
def test_passes(monkeypatch):
    for cls in (SlowsDown, Renames, *MARKERS, *RENAMES):
        monkeypatch.setitem(P.REGISTRY, cls.name, cls)


# -- the rule ---------------------------------------------------------------------------------


def test_verdict_rule():
    assert verdict(1.10, (1.05, 1.20)) is Verdict.SLOWER
    assert verdict(1.10, (0.99, 1.20)) is Verdict.NOISE  # the CI reaches 1.0
    assert verdict(1.02, (1.01, 1.03)) is Verdict.NOISE  # inside the 3% band
    assert verdict(0.90, (0.85, 0.95)) is Verdict.FASTER
    assert verdict(0.98, (0.97, 0.99)) is Verdict.NOISE
    assert verdict(1.02, (1.01, 1.03), band=0.01) is Verdict.SLOWER


def test_median_ci_narrows_with_rounds():
    r = np.random.default_rng(0)
    few = median_ci(1.0 + 0.05 * r.standard_normal(12))
    many = median_ci(1.0 + 0.05 * r.standard_normal(400))
    assert few[0] < 1.0 < few[1] and many[0] < 1.0 < many[1]
    assert (many[1] - many[0]) < (few[1] - few[0]) / 2


def test_leaning_slower_when_the_budget_ends():
    from rooftop.analysis.timing import leaning_slower

    r = np.random.default_rng(0)
    wide = list(1.05 + 0.2 * r.standard_normal(12))  # median beyond the band, CI reaching 1.0
    assert np.median(wide) > 1.03 and median_ci(wide)[0] <= 1.0 and leaning_slower(wide, 0.03)
    assert not leaning_slower([1.05] * 40, 0.03)  # settled slower: nothing to extend
    assert not leaning_slower([1.01, 0.99, 1.02, 0.98] * 5, 0.03)  # inside the band


def test_a_pass_that_adds_work_is_timed_until_it_is_clear_whether_it_pays():
    from rooftop.analysis.timing import pays, straddles

    assert pays(0.03) == pytest.approx(0.94)
    assert decided([0.85] * 10, 0.03, "pay") and decided([1.0] * 10, 0.03, "pay")
    near = list(np.linspace(0.90, 0.98, 10))  # its CI reaches both sides of 0.94
    assert not decided(near, 0.03, "pay") and straddles(near, 0.94)
    assert decided(near, 0.03, "gate")  # not slower: the gate alone would have stopped


def test_adaptive_stop():
    assert decided([2.0] * 10, 0.03, "gate")  # clearly slower
    assert decided([1.0] * 10, 0.03, "gate")  # clearly not slower
    assert not decided(list(np.linspace(0.9, 1.2, 10)), 0.03, "gate")  # could be either
    assert not decided([2.0] * 10, 0.03, "budget")


# -- real timing ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["all", "disable"])
def test_slow_pass_rejected_neutral_kept(test_passes, level):
    m = base_model()
    out, rep = rooftop.optimize(
        m,
        passes=["test-slow", "test-neutral"],
        deploy_level=level,
        time_budget=0.5,
        hardware="xeon-avx512",
        profile_nodes=False,
    )
    slow, neutral = rep.passes
    assert slow.status is Status.REJECTED and slow.cause is Cause.SLOWER
    assert slow.latency is not None and slow.latency.ratio > 5 and slow.latency.verdict is Verdict.SLOWER
    level_name = {"all": "ORT_ENABLE_ALL", "disable": "ORT_DISABLE_ALL"}[level]
    assert slow.reason.startswith(f"slower at {level_name}: ×")
    # a rename adds no op, node or predicted work: it is not timed alone, the final comparison times it
    assert neutral.status is Status.APPLIED and neutral.latency is None and neutral.removes_only
    assert not slow.removes_only
    assert not any(n.name.startswith("slow") for n in out.graph.node)
    assert [n.name for n in out.graph.node] == ["mm_renamed", "relu"]
    assert set(rep.latency) == ({"disable", "all"} if level == "all" else {"disable"})
    assert any(w.startswith("pass test-slow rejected: slower at") for w in rep.warnings)


def test_keep_slower_keeps_it(test_passes):
    out, rep = rooftop.optimize(
        base_model(),
        passes=["test-slow"],
        keep_slower=True,
        time_budget=0.3,
        hardware="xeon-avx512",
        profile_nodes=False,
    )
    assert rep.passes[0].status is Status.APPLIED
    assert rep.latency["all"].verdict is Verdict.SLOWER and not rep.backed_off
    x = np.random.default_rng(3).standard_normal((N, N)).astype(np.float32)
    np.testing.assert_array_equal(run(out, {"x": x})[0], run(base_model(), {"x": x})[0])


def test_cli_reports_rejection(test_passes, tmp_path):
    from rooftop.cli import main

    src = tmp_path / "m.onnx"
    onnx.save(base_model(), src)
    code = main(
        [
            str(src),
            "-o",
            str(tmp_path / "o.onnx"),
            "--passes",
            "test-slow",
            "--time-budget",
            "0.3",
            "--hardware",
            "xeon-avx512",
            "--report",
            str(tmp_path / "r.json"),
            "-q",
        ]
    )
    assert code == 0
    rep = json.loads((tmp_path / "r.json").read_text())
    p = rep["passes"][0]
    assert p["status"] == "rejected" and p["cause"] == "slower" and p["latency_verdict"] == "slower"
    assert p["ort_level"] == "ORT_ENABLE_ALL" and rep["deploy_level"] == "ORT_ENABLE_ALL"
    assert ops(onnx.load(tmp_path / "o.onnx")) == ["MatMul", "Relu"]


# -- the decision logic, priced exactly ---------------------------------------------------------


def test_each_pass_in_noise_but_together_slower_backs_off(test_passes):
    cmp = priced(0.02)  # each marker +2%: within the 3% band alone, 6% with three
    out, rep = rooftop.optimize(chain_model(), passes=[c.name for c in RENAMES[:3]], comparator=cmp, analyze=False)
    assert [r.status for r in rep.passes] == [Status.SKIPPED, Status.SKIPPED, Status.APPLIED]
    assert all(r.cause is Cause.BACKED_OFF and "slower than the original" in r.reason for r in rep.passes[:2])
    assert rep.backed_off == ["test-rename-a", "test-rename-b"] and not rep.reverted
    assert markers(out) == 1 and rep.latency["all"].verdict is Verdict.NOISE
    # without a cost analysis each pass is timed at the gate (noise: kept, it adds no node); every
    # "slower" of the final comparison is measured twice before the run backs off
    assert cmp.calls == [
        (0, 1, "all", "gate"),
        (1, 2, "all", "gate"),
        (2, 3, "all", "gate"),
        (0, 3, "all", "verdict"),
        (0, 3, "all", "verdict"),
        (0, 2, "all", "verdict"),
        (0, 2, "all", "verdict"),
        (0, 1, "all", "verdict"),
        (0, 1, "disable", "verdict"),
    ]


@pytest.mark.parametrize(("step", "backs_off"), [(0.015, False), (0.025, True)])
def test_a_final_model_of_passes_that_only_remove_work_backs_off_past_twice_the_band(test_passes, step, backs_off):
    """The renames add no node, op or predicted work (the cost analysis says so): the final model
    backs off only when its whole interval lies past 1 + 2·band, the margin such a pass has alone."""
    out, rep = rooftop.optimize(chain_model(), passes=[c.name for c in RENAMES[:3]], comparator=priced(step))
    assert all(r.removes_only for r in rep.passes if r.status is Status.APPLIED)
    assert bool(rep.backed_off) is backs_off and (markers(out) < 3) is backs_off


def test_back_off_that_does_not_help_writes_the_original(test_passes, tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(chain_model(), src)
    out, rep = rooftop.optimize(
        str(src), tmp_path / "o.onnx", passes=[c.name for c in RENAMES], comparator=priced(0.02), analyze=False
    )
    assert rep.reverted and markers(out) == 0
    assert all(r.status is Status.SKIPPED and r.cause is Cause.BACKED_OFF for r in rep.passes)
    written = onnx.load(tmp_path / "o.onnx")
    assert [n.name for n in written.graph.node] == ["mm", "relu", "id_a", "id_b", "id_c", "id_d", "id_e"]
    assert any("original graph is written unchanged" in w for w in rep.warnings)


def test_keep_slower_skips_back_off(test_passes):
    out, rep = rooftop.optimize(
        chain_model(), passes=[c.name for c in RENAMES[:3]], comparator=priced(0.02), analyze=False, keep_slower=True
    )
    assert all(r.status is Status.APPLIED for r in rep.passes) and markers(out) == 3 and not rep.backed_off


def test_gate_rejects_a_pass_priced_slower(test_passes):
    out, rep = rooftop.optimize(
        base_model(), passes=["test-marker-a", "test-marker-b"], comparator=priced(0.5), analyze=False
    )
    a, b = rep.passes
    assert a.status is Status.REJECTED and b.status is Status.REJECTED  # each +50% against the state before it
    assert markers(out) == 0 and not rep.backed_off


def test_no_time_says_measurement_did_not_decide(test_passes):
    _, rep = rooftop.optimize(base_model(), passes=["test-slow"], time=False, hardware="xeon-avx512")
    assert rep.passes[0].status is Status.APPLIED  # kept on verification alone ...
    assert sum("measurement did not decide" in w for w in rep.warnings) == 1  # ... and the run says so once
    _, rep = rooftop.optimize(base_model(), passes=["test-neutral"], time=False, hardware="xeon-avx512")
    assert (
        rep.passes[0].status is Status.APPLIED and not rep.passes[0].removes_only
    )  # nothing is timed, not even with the final model


def test_bad_deploy_level_is_a_usage_error(tmp_path):
    res = cli("models/resnet_bn.onnx", "--deploy-level", "fastest")
    assert res.returncode == 2 and "deploy-level" in res.stderr


def test_model_onnxruntime_cannot_run_is_decided_by_structure(test_passes):
    m = base_model()
    m.graph.node.insert(0, onnx.helper.make_node("Mystery", ["x"], ["x_c"], name="custom", domain="acme"))
    m.graph.node[1].input[0] = "x_c"
    m.opset_import.append(onnx.helper.make_opsetid("acme", 1))
    _, rep = rooftop.optimize(m, passes=["test-slow", "test-neutral"], hardware="xeon-avx512")
    slow, neutral = rep.passes
    assert slow.status is Status.REJECTED and slow.latency is None
    assert slow.reason.startswith("predicted slower on xeon-avx512: ×") and "not measured" in slow.reason
    assert neutral.status is Status.APPLIED
    assert any("decided by structure alone" in w for w in rep.warnings)


@pytest.mark.parametrize("all_levels", [True, False])
def test_the_final_model_is_timed_at_other_levels_only_for_a_report(test_passes, all_levels):
    """The CLI sets time_all_levels only with --report: nothing is timed that is not shown or used.
    Without a report the final comparison stops once "slower or not" is settled (``gate``); with
    one, once its verdict is."""
    cmp = priced(0.0)
    _, rep = rooftop.optimize(
        chain_model(), passes=["test-rename-a"], comparator=cmp, analyze=False, time_all_levels=all_levels
    )
    assert set(rep.latency) == ({"all", "disable"} if all_levels else {"all"})
    final = ("all", "verdict") if all_levels else ("all", "gate")
    assert [c[2:] for c in cmp.calls] == [("all", "gate"), final] + ([("disable", "verdict")] if all_levels else [])


def test_added_work_that_does_not_measure_faster_is_rejected(test_passes):
    """A pass the roofline says adds work (here 40 MatMuls) is kept only if measured faster: a
    neutral measurement (×1.00, noise) rejects it, with the work it added in the reason."""

    def even(before, after, level, stop):
        return Latency(
            level=level, threads=1, rounds=10, ms_before=1.0, ms_after=1.0, ratio=1.0, ci=(0.98, 1.02), iqr=(0.99, 1.01)
        )

    out, rep = rooftop.optimize(base_model(), passes=["test-slow"], comparator=even, hardware="xeon-avx512")
    (rec,) = rep.passes
    assert rec.status is Status.REJECTED and rec.cause is Cause.SLOWER
    assert rec.reason.startswith("adds predicted work (traffic ") and rec.reason.endswith(
        "measured no faster at ORT_ENABLE_ALL than ×0.94: ×1.00 [0.98–1.02]"
    )
    assert not any(n.name.startswith("slow") for n in out.graph.node)
    _, kept = rooftop.optimize(
        base_model(), passes=["test-slow"], comparator=even, hardware="xeon-avx512", keep_slower=True
    )
    assert kept.passes[0].status is Status.APPLIED


def test_added_traffic_is_judged_only_on_complete_totals():
    """Totals missing unknown nodes grow when a pass makes those nodes known (silero_vad_half:
    435 B → 0.71 MB by simplify): that is not added work."""
    from rooftop.decide import _adds_traffic
    from rooftop.passes.base import Validation
    from rooftop.records import CostDelta, Costs

    def v(before: Costs, after: Costs) -> Validation:
        return Validation(cost=CostDelta(before, after))

    assert _adds_traffic(v(Costs(1, 0, 100, 1.0), Costs(1, 0, 120, 1.0)))
    assert not _adds_traffic(v(Costs(1, 0, 100, 1.0, unknown=3), Costs(1, 0, 120, 1.0)))
    assert not _adds_traffic(v(Costs(1, 0, 100, 1.0), Costs(1, 0, 100, 1.0)))


class SlowAndWrong(SlowsDown):
    """The 40 MatMuls of test-slow (x·(q/2)⁴⁰), added to the output times 2⁴⁰, not 0: more work, other outputs."""

    name = "test-slow-wrong"

    def run(self, graph, ctx):
        res = SlowsDown.run(self, graph, ctx)
        mul = next((n for n in graph.nodes if n.name == "slow_mul"), None)
        if mul is not None:
            mul.inputs[1] = gs.Constant("slow_scale", np.full((1,), 2.0**40, np.float32))
        return res


def test_a_pass_the_gate_times_is_verified_first(monkeypatch):
    """A pass that adds work is timed against its input; it is checked on its own before that
    (no time is spent measuring a model that computes something else), and a wrong one is rolled
    back for its outputs, never timed, though the comparator would have called it faster."""
    monkeypatch.setitem(P.REGISTRY, SlowAndWrong.name, SlowAndWrong)
    calls = []

    def faster(before, after, level, stop):
        calls.append(stop)
        return Latency(
            level=level, threads=1, rounds=10, ms_before=1.0, ms_after=0.5, ratio=0.5, ci=(0.49, 0.51), iqr=(0.5, 0.5)
        )

    out, rep = rooftop.optimize(base_model(), passes=["test-slow-wrong"], comparator=faster, hardware="xeon-avx512")
    (rec,) = rep.passes
    assert rec.status is Status.ROLLED_BACK and rec.cause is Cause.OUTPUTS_CHANGED and rec.max_abs_error > 1
    assert calls == [] and not any(n.name.startswith("slow") for n in out.graph.node)
    monkeypatch.setitem(P.REGISTRY, SlowsDown.name, SlowsDown)
    _, ok = rooftop.optimize(base_model(), passes=["test-slow"], comparator=faster, hardware="xeon-avx512")
    assert ok.passes[0].status is Status.APPLIED and ok.passes[0].max_abs_error is not None  # checked on its own
    assert ok.passes[0].latency.ratio == 0.5


@pytest.mark.parametrize(
    "readings,kept",
    [(["slower", "noise", "slower"], False), (["slower", "noise", "noise"], True), (["slower", "slower"], False)],
)
def test_two_readings_that_disagree_are_settled_by_a_third(test_passes, readings, kept):
    """A "slower" stands when a second reading with fresh sessions says so too; when the two
    disagree, a third decides by majority (a real ×1.13 on a ~100 ms model read as noise once in
    three measurements)."""
    values = {"slower": (1.2, (1.1, 1.3)), "noise": (1.0, (0.9, 1.1))}
    seen = []

    def scripted(before, after, level, stop):
        r, ci = values[readings[len(seen)]]
        seen.append(stop)
        return Latency(level=level, threads=1, rounds=10, ms_before=1.0, ms_after=r, ratio=r, ci=ci, iqr=ci)

    _, rep = rooftop.optimize(
        base_model(), passes=["test-neutral"], comparator=scripted, analyze=False, time_all_levels=False
    )
    (rec,) = rep.passes
    assert (rec.status is Status.APPLIED) is kept and len(seen) >= len(readings)


def priced_by_opset(slow_from: int):
    """A comparator that prices a model at 1.2 from default-domain opset ``slow_from``, else 1.0."""

    def compare(before, after, level, stop):
        def price(m):
            return 1.2 if model_io.default_opset(m) >= slow_from else 1.0

        a, b = price(before), price(after)
        r = b / a
        return Latency(level=level, threads=1, rounds=10, ms_before=a, ms_after=b, ratio=r, ci=(r, r), iqr=(r, r))

    return compare


@pytest.mark.parametrize(("slow_from", "written_opset"), [(18, 17), (99, 18)])
def test_the_final_model_is_compared_with_the_model_as_given_not_the_converted_one(
    test_passes, slow_from, written_opset
):
    """--opset converts the model first: a conversion that makes it slower is caught by the final
    comparison (against the model as given), and the model as given is written unchanged."""
    m = chain_model()
    assert model_io.default_opset(m) == 17
    out, rep = rooftop.optimize(
        m, passes=[c.name for c in RENAMES[:1]], opset=18, comparator=priced_by_opset(slow_from)
    )
    assert model_io.default_opset(out) == written_opset
    assert bool(rep.backed_off) is (written_opset == 17) and rep.reverted is (written_opset == 17)
    if written_opset == 17:
        assert any("the model as given (not converted) is written unchanged" in w for w in rep.warnings)
