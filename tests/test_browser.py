"""The HTML report and the audit page in a real browser (headless Chromium, 1280 px wide): the
verdict on the first screen, nothing wider than the window, no console error; and the reports'
content parsed from what was rendered: verdict first, growth printed as growth, unchanged passes
on one row, no empty table, findings in the author's terms."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import browser
import pytest
from helpers import MODELS, ROOT, cli, needs_torch

WIDTH, FIRST_SCREEN = 1280, 900

needs_browser = pytest.mark.skipif(
    browser.find() is None,
    reason="no Chromium: apt-get install chromium-headless-shell (.ci/run installs it)",
)


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts, with the heading before it."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.heading, self._in_h, self._cell, self._row = "", False, None, None

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._in_h, self.heading = True, ""
        elif tag == "table":
            self.tables.append((self.heading, []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_h = False
        elif tag in ("td", "th") and self._row is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_h:
            self.heading += data
        if self._cell is not None:
            self._cell += data


def tables(page: Path) -> list[tuple[str, list[list[str]]]]:
    p = Tables()
    p.feed(page.read_text())
    return p.tables


def report(tmp_path: Path, model: Path, *extra: str) -> tuple[Path, dict]:
    html, js = tmp_path / f"{model.stem}.html", tmp_path / f"{model.stem}.json"
    res = cli(
        str(model), "-o", str(tmp_path / f"{model.stem}.out.onnx"), "--report", str(html), "--report", str(js), *extra
    )
    assert res.returncode == 0, res.stderr
    return html, json.loads(js.read_text())


def assert_renders(page: Path, first: str) -> None:
    got = browser.render(page, [first, "h1"], width=WIDTH)
    assert got.console == [], got.console
    assert got.width <= WIDTH, f"{page.name} is {got.width} px wide"
    assert 0 <= got.tops[first] < FIRST_SCREEN, f"{first} at {got.tops[first]} px"


@needs_browser
@pytest.mark.parametrize("sample", ["odd_channels", "resnet_bn", "resnet_qdq_int8", "encoder_dynamic"])
def test_the_report_reads_in_a_browser(tmp_path, sample):
    page, rep = report(tmp_path, MODELS / f"{sample}.onnx", "--time-budget", "0.2")
    assert_renders(page, "#verdict")
    text = page.read_text()
    assert text.index('id="verdict"') < text.index("<h2>Summary") < text.index("<h2>Passes")
    found = tables(page)
    assert all(rows[1:] for _, rows in found), "an empty table was printed"
    passes = next(rows for heading, rows in found if heading == "Passes")
    idle = [r for r in rows_of(passes) if r[1] == "unchanged"]
    assert len(idle) == 1 and re.match(r"\d+ unchanged: ", idle[0][0])  # every sample has passes that find nothing
    listed = {r[0].split(" #")[0] for r in rows_of(passes) if r[1] != "unchanged"}
    assert listed == {p["name"] for p in rep["passes"] if p["status"] != "unchanged"}


def rows_of(table: list[list[str]]) -> list[list[str]]:
    return table[1:]


@needs_browser
def test_growth_is_never_printed_as_equal(tmp_path):
    """pad-channels adds traffic on the odd-channel sample: its row says by how much."""
    page, rep = report(tmp_path, MODELS / "odd_channels.onnx", "--no-time", "--passes", "pad-channels")
    passes = next(rows for heading, rows in tables(page) if heading == "Passes")
    pad = next(r for r in rows_of(passes) if r[0] == "pad-channels")
    traffic = pad[passes[0].index("traffic")]
    before, after, delta = re.match(r"([\d.]+)→([\d.]+) MB \(\+([\d.e-]+)\)", traffic).groups()
    rec = next(p for p in rep["passes"] if p["name"] == "pad-channels")
    assert float(after) > float(before) and float(delta) > 0
    assert float(delta) == pytest.approx((rec["bytes_after"] - rec["bytes_before"]) / 1e6, rel=0.05)


@needs_browser
def test_the_audit_page_reads_in_a_browser_and_the_comment_is_short(tmp_path):
    page, md = tmp_path / "a.html", tmp_path / "a.md"
    res = cli("--audit", str(MODELS / "resnet_bn.onnx"), "--report", str(page), "--report", str(md))
    assert res.returncode == 0, res.stderr
    assert_renders(page, "#verdict")
    found = tables(page)
    kinds = next(rows for h, rows in found if h == "By kind")
    every = [r for h, rows in found if h == "Every finding, by kind" for r in rows_of(rows)]
    assert "<pre>" not in page.read_text() and len(md.read_bytes()) < 4096
    assert sum(int(r[1]) for r in rows_of(kinds)) == len(every) > 0


@needs_torch
@needs_browser
def test_a_dynamo_export_audited_in_its_authors_terms(tmp_path):
    """Every finding of a torchvision-style MobileNetV2 exported with the dynamo exporter names the
    module path and the class it came from, in the JSON and on the rendered page."""
    import sys

    import torch

    sys.path.insert(0, str(MODELS))
    import archs

    torch.manual_seed(0)
    src = archs.export(
        archs.mobilenet_v2(0.35, 10).eval(), torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", exporter="dynamo"
    )
    page, js, md = tmp_path / "a.html", tmp_path / "a.json", tmp_path / "a.md"
    res = cli("--audit", str(src), "--report", str(page), "--report", str(js), "--report", str(md))
    assert res.returncode == 0, res.stderr
    audit = json.loads(js.read_text())["audit"]
    assert audit["findings"] and all(f["module"] and f["module_class"] for f in audit["findings"])
    assert {m["module"] for m in audit["by_module"]} == {f["module"] for f in audit["findings"]}
    assert_renders(page, "#verdict")
    cells = [r for h, rows in tables(page) if h == "Every finding, by kind" for r in rows_of(rows)]
    assert len(cells) == len(audit["findings"]) and all(r[1] != "-" and r[2] != "-" for r in cells)
    assert len(md.read_bytes()) < 4096 and "BatchNorm2d" in md.read_text()


def _ocr_recognizer(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """PP-OCRv4's recognizer as shipped in the rapidocr-onnxruntime wheel (x: [N, 3, 48, W])."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import wild

    found = [p for p in wild.pypi_models(["rapidocr-onnxruntime"]) if p.name == "ch_PP-OCRv4_rec_infer.onnx"]
    if not found:
        pytest.skip("rapidocr-onnxruntime could not be downloaded from PyPI")
    return found[0], ()


def _int8_resnet(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A ResNet-18 (width 16) exported by torch and quantized by quantize_static's defaults (QDQ, s8s8)."""
    import sys

    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    sys.path.insert(0, str(MODELS))
    import archs

    torch.manual_seed(0)
    fp32 = archs.export(archs.resnet18(width=16, num_classes=10).eval(), torch.randn(1, 3, 64, 64), tmp_path / "f.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{"input": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(fp32), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    return tmp_path / "q.onnx", ()


def _vit(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A ViT built by ``transformers`` from its config (random weights), TorchScript export."""
    import sys

    pytest.importorskip("transformers")
    sys.path.insert(0, str(MODELS))
    import hf_corpus

    return hf_corpus.build("vit", "torchscript"), ("--target", "onnxruntime")


@needs_torch
@needs_browser
@pytest.mark.parametrize("make", [_ocr_recognizer, _int8_resnet, _vit], ids=["ocr-dynamic-width", "int8", "vit"])
def test_reports_of_real_models_read_in_a_browser(tmp_path, make):
    """An OCR recognizer with a dynamic width, an int8 QDQ model and a transformer: the verdict on
    the first screen, the shapes it was decided at (and the defaulted dims) in it, growth shown as
    growth, no empty table, nothing wider than the window."""
    src, extra = make(tmp_path)
    page, rep = report(tmp_path, src, "--time-budget", "0.3", *extra)
    assert_renders(page, "#verdict")
    verdict = page.read_text().split('id="verdict"')[1].split("</section>")[0]
    assert "decided at" in verdict and all(label in verdict for label in rep["provenance"]["shapes"])
    if rep["shapes"]["defaulted"]:
        assert "--input-shape" in verdict  # the line that binds the shapes it is really run at
    found = tables(page)
    assert all(rows[1:] for _, rows in found), "an empty table was printed"
    passes = next(rows for heading, rows in found if heading == "Passes")
    traffic = passes[0].index("traffic")
    change = re.compile(r"([\d.]+)→([\d.]+) MB \(([+-][\d.e-]+)\)")
    changes = [m for row in rows_of(passes) if (m := change.match(row[traffic]))]
    moved = [
        p
        for p in rep["passes"]
        if p["status"] in ("applied", "rejected")
        and p.get("bytes_before") is not None
        and abs(p["bytes_after"] - p["bytes_before"]) > 1e-9 * p["bytes_before"]
    ]
    assert len(changes) == len(moved), "a pass that changed the traffic is not shown as a change, or the reverse"
    for m in changes:  # a change is printed with its sign, and the two ends differ
        a, b, d = (float(x) for x in m.groups())
        assert a != b and (b > a) == (d > 0)
