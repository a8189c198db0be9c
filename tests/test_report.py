"""Reports: JSON schema with costs and latencies, HTML with one roofline point per operator,
Markdown, --check savings, hardware profiles."""

from __future__ import annotations

import json
import re
import sys

import pytest
from helpers import MODELS, ROOT, cli

from rooftop.analysis import costs
from rooftop.analysis.hardware import BUILTIN, get_profile
from rooftop.errors import UsageError


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    res = cli(
        str(MODELS / "resnet_bn.onnx"),
        "-o",
        str(d / "o.onnx"),
        "--report",
        "--report",
        str(d / "r.json"),
        "--report",
        str(d / "r.html"),
        "--report",
        str(d / "r.md"),
        "--hardware",
        "xeon-avx512",
        "--time-budget",
        "0.3",
        "--keep-slower",  # this test is about what the report holds, not about the decision
        fast=False,
    )
    assert res.returncode == 0, res.stderr
    return d, res


def test_paper_profile_beside_cpu_measurements_is_captioned(timed_run):
    d, res = timed_run
    text = " ".join(res.stdout.split())
    assert "note: the prediction is for xeon-avx512 (paper figures), the measurements are of this machine's CPU" in text
    assert "a ranking across two machines" in text


def test_json_has_costs_and_latency(timed_run):
    d, res = timed_run
    rep = json.loads((d / "r.json").read_text())
    assert rep["hardware"]["name"] == "xeon-avx512" and rep["hardware"]["kind"] == "paper"
    assert rep["hardware"]["ridge_flops_per_byte"] == pytest.approx(48.0)
    fold = next(p for p in rep["passes"] if p["name"] == "fold-conv-bn")
    # nine BatchNorms of the sample: each read + write of its activation disappears
    assert fold["bytes_after"] < fold["bytes_before"]
    # it only removes work (nodes, bytes, no new op): not timed alone, the final comparison times it
    assert fold["timed_with_final"] and fold["latency_ms_before"] is None
    for side in ("before", "after"):
        t = rep[side]["totals"]
        assert (
            t["flops"] > 0
            and t["bytes"] > 0
            and t["params"] > 0
            and t["peak_activation_bytes"] > 0
            and t["predicted_s"] > 0
        )
        assert t["unknown_nodes"] == 0
    nodes = rep["after"]["nodes"]
    measured = [n for n in nodes if n["measured_s"] is not None]
    assert len(measured) >= 0.8 * len(nodes)
    assert rep["latency"]["all"]["ort_level"] == "ORT_ENABLE_ALL"
    assert rep["prediction_vs_measurement"]["operators_after"] >= 10
    # the terminal table carries the cost and latency columns
    assert "traffic" in res.stdout and "ORT_ENABLE_ALL" in res.stdout


def test_html_plots_one_point_per_operator(timed_run):
    d, _ = timed_run
    page = (d / "r.html").read_text()
    rep = json.loads((d / "r.json").read_text())
    assert "<script" not in page and not re.search(r'(src|href)="https?:', page)  # self-contained
    for side in ("before", "after"):
        expected = [
            n
            for n in rep[side]["nodes"]
            if n["bound"] in ("compute", "memory")
            and (n["flops"] + n["int_ops"]) > 0
            and (n["measured_s"] or n["predicted_s"])
        ]
        group = re.search(rf'<g id="roofline-{side}">(.*?)</g>\s*</g>', page, re.S)
        assert group, f"no roofline-{side} group"
        points = len(re.findall(r"<use ", group.group(1)))
        assert points == len(expected) > 0
    assert "ridge" in page


def test_markdown(timed_run):
    d, _ = timed_run
    md = (d / "r.md").read_text()
    assert "| fold-conv-bn | applied | 9 |" in md
    assert "memory traffic" in md


def test_check_reports_projected_savings():
    res = cli(str(MODELS / "resnet_bn.onnx"), "--check")
    assert res.returncode == 1
    assert re.search(r"projected: memory traffic [\d.]+ MB → [\d.]+ MB \([\d.]+ MB saved", res.stdout)


def test_hardware_json_profile(tmp_path):
    p = tmp_path / "hw.json"
    p.write_text(
        json.dumps({"name": "edge", "peak_flops": {"fp32": 1e11}, "bandwidth_bytes_per_s": 1e10, "channel_multiple": 4})
    )
    prof = get_profile(str(p))
    assert prof.name == "edge" and prof.ridge() == pytest.approx(10.0) and prof.kind == "user"
    res = cli(str(MODELS / "resnet_bn.onnx"), "--check", "--hardware", str(p))
    assert res.returncode == 1 and "edge" in res.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError):
        get_profile(str(bad))
    res = cli(str(MODELS / "resnet_bn.onnx"), "--check", "--hardware", "tpu-v9")
    assert res.returncode == 2 and "tpu-v9" in res.stderr


def test_builtin_profiles_have_sources():
    for name, prof in BUILTIN.items():
        assert prof.source.startswith("paper") and prof.bandwidth > 0 and prof.peak("fp32") > 0, name


def test_measure_hardware(tmp_path):
    import os
    import subprocess

    env = dict(os.environ, ROOFTOP_CACHE=str(tmp_path))
    res = subprocess.run(
        [sys.executable, "-m", "rooftop", "--measure-hardware"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    gflops = float(re.search(r"peak fp32\s+([\d.]+) GFLOP/s", res.stdout).group(1))
    gbs = float(re.search(r"bandwidth\s+([\d.]+) GB/s", res.stdout).group(1))
    assert 1 < gflops < 100_000 and 0.5 < gbs < 10_000
    assert "ridge point" in res.stdout
    assert list(tmp_path.glob("host-*.json"))


def test_published_mac_counts(tmp_path):
    """Conv/Gemm/MatMul FLOPs of real exports against published MAC counts (within 2%)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(MODELS))
    import archs
    import onnx

    for make, macs, params in ((archs.resnet50, 4.1e9, 25.6e6), (lambda: archs.mobilenet_v2(1.0, 1000), 300e6, 3.5e6)):
        net = make()
        p = archs.export(net, torch.randn(1, 3, 224, 224), tmp_path / "m.onnx", fold=False)
        mc = costs.analyze(onnx.load(p), allow_run=False)
        conv_gemm = sum(c.flops for c in mc.nodes if c.op_type in ("Conv", "Gemm", "MatMul")) / 2
        biases = sum(1 for c in mc.nodes if c.op_type in ("Conv", "Gemm"))
        assert conv_gemm == pytest.approx(macs, rel=0.02), (conv_gemm, macs, biases)
        assert mc.totals.unknown == 0
        assert mc.totals.params == pytest.approx(params, rel=0.03)


@pytest.mark.parametrize("model", sorted(MODELS.glob("*.onnx")), ids=lambda p: p.stem)
def test_terminal_output_fits_100_columns_without_truncation(model):
    """At 100 columns nothing is cut with an ellipsis: names and numbers wrap if they must."""
    from rich.console import Console

    import rooftop
    from rooftop.report.terminal import print_terminal

    _, rep = rooftop.optimize(
        model, target="onnxruntime", hardware="xeon-avx512", time_budget=0.2, profile_nodes=False, keep_slower=True
    )
    console = Console(width=100, record=True, file=open("/dev/null", "w"))
    print_terminal(rep, console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 100
    for r in rep.passes:
        assert r.name in text


def test_traffic_totals_with_different_unknown_nodes_are_not_compared():
    """A total leaves out the nodes of unknown cost; when a pass makes some known (silero_vad_16k_op15:
    32 unknown → 10), the two totals do not compare and the line says so instead of "+124,000%"."""
    from types import SimpleNamespace as NS

    from rooftop.report.text import _traffic_change

    assert (
        _traffic_change(NS(bytes=575.0, unknown=["a"] * 32), NS(bytes=714e3, unknown=["b"] * 10))
        == "not comparable: 32 nodes of unknown cost before, 10 after"
    )
    assert _traffic_change(NS(bytes=100.0, unknown=[]), NS(bytes=75.0, unknown=[])) == "25.0% less"
    assert (
        _traffic_change(NS(bytes=100.0, unknown=["c"]), NS(bytes=120.0, unknown=["c"]))
        == "20.0% more; 1 node of unknown cost not counted"
    )


def test_the_json_report_follows_its_schema_and_leads_with_the_verdict(tmp_path):
    """The schema ships in the package (rooftop/report/schema.json); every report validates against
    it: a measured run, a --no-time run, a --check run (nothing written) and a replay."""
    import json
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("rooftop.report").joinpath("schema.json").read_text())
    runs = {
        "measured": ["-o", str(tmp_path / "a.onnx"), "--time-budget", "0.2"],
        "no-time": ["-o", str(tmp_path / "b.onnx"), "--no-time"],
        "check": ["--check", "--no-time"],
    }
    for name, extra in runs.items():
        rep = tmp_path / f"{name}.json"
        res = cli("models/resnet_bn.onnx", *extra, "--report", str(rep), "--hardware", "xeon-avx512", fast=False)
        assert res.returncode in (0, 1), res.stderr
        data = json.loads(rep.read_text())
        jsonschema.validate(data, schema)
        assert list(data)[:3] == ["schema_version", "verdict", "provenance"]
        v = data["verdict"]
        assert v["written"] is (name != "check") and v["verified"] is True
        assert v["shapes"] == ["input=1x3x32x32"] and v["nodes"][0] == 31
        assert (v["measured"] is not None) is (name == "measured") and (v["not_timed"] == "") is (name == "measured")
        assert "BatchNormalization" in v["ops_removed"] or name == "check"
        prov = data["provenance"]
        assert len(prov["input_sha256"]) == 64 and prov["versions"]["onnx"]
    import hashlib

    out = tmp_path / "b.onnx"
    assert (
        json.loads((tmp_path / "no-time.json").read_text())["provenance"]["output_sha256"][str(out)]
        == hashlib.sha256(out.read_bytes()).hexdigest()
    )
    replay = tmp_path / "replay.json"
    res = cli(
        "models/resnet_bn.onnx",
        "-o",
        str(tmp_path / "c.onnx"),
        "--plan",
        str(tmp_path / "measured.json"),
        "--report",
        str(replay),
        "--hardware",
        "xeon-avx512",
        fast=False,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(replay.read_text())
    jsonschema.validate(data, schema)
    assert data["replayed"] and data["verdict"]["not_timed"].startswith("replayed plan")


def test_the_verdict_comes_first_in_every_format(tmp_path):
    res = cli(
        "models/resnet_bn.onnx",
        "-o",
        str(tmp_path / "o.onnx"),
        "--report",
        "--report",
        str(tmp_path / "r.md"),
        "--report",
        str(tmp_path / "r.html"),
    )
    assert res.returncode == 0, res.stderr
    first = res.stdout.strip().splitlines()[:4]
    assert first[0].startswith("WRITTEN ") and first[1].startswith("VERIFIED: ") and first[3].startswith("NOT TIMED: ")
    md = (tmp_path / "r.md").read_text().splitlines()
    assert md[2] == "## Verdict" and md[4].startswith("- WRITTEN ")
    page = (tmp_path / "r.html").read_text()
    assert page.index('id="verdict"') < page.index("<h2>Summary</h2>") < page.index("<h2>Passes</h2>")
