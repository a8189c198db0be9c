"""Portable that truly is: what Rooftop writes, loaded, checked and timed in OpenVINO beside onnxruntime.

    pip install -e ".[openvino,export]" torch==2.13.0
    python benchmarks/bench_openvino.py [--budget 2] [--models a.onnx ...]

For every model: ``optimize --target portable`` (decisions in onnxruntime at ORT_ENABLE_ALL, the
default; candidates cross-checked in OpenVINO) and ``optimize --runtime openvino`` (decisions in
OpenVINO). Each output is loaded in OpenVINO and its outputs compared with the original's there
(same inputs, f32 inference precision), then timed against the original interleaved, in
onnxruntime at ORT_ENABLE_ALL and in OpenVINO (CPU, latency hint, physical cores): the median
per-round ratio output/original with its 95% CI. The corpus is ``reproduce.py``'s (models from
PyPI packages, a TorchScript ShuffleNetV2, a ViT-S from ``transformers``), the int8 exports
(the sample, bench_int8's QDQ ResNet-18 at quantize_static's defaults and per channel, its int8
BERT-style encoder) and the transformer corpus of models/hf_corpus.py (both exporters).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT))


def corpus() -> list[Path]:
    """reproduce.py's real models, the int8 exports (the sample; bench_int8's ResNet-18 at
    quantize_static's defaults and per channel, and its BERT-style encoder) and the transformer
    corpus of models/hf_corpus.py (each architecture, tiny, both exporters)."""
    import bench_int8
    import hf_corpus
    import reproduce

    int8 = [ROOT / "models" / "resnet_qdq_int8.onnx"]
    int8 += [
        bench_int8.quantized(m, c) for m, c in (("resnet18", "s8s8"), ("resnet18", "s8s8-pc"), ("encoder", "s8s8"))
    ]
    exports = []
    for arch in hf_corpus.ARCHS:
        for exporter in ("torchscript", "dynamo"):
            try:
                exports.append(hf_corpus.build(arch, exporter))
            except Exception as e:  # noqa: BLE001 - an exporter that cannot export it (GQA in TorchScript)
                print(f"<!-- {arch} ({exporter}) not exported: {str(e).splitlines()[-1][:80]} -->", file=sys.stderr)
    return reproduce.corpus() + int8 + exports


def feeds(model: onnx.ModelProto, shapes: dict | None) -> dict:
    from rooftop import runtime
    from rooftop.shapes import bind

    specs = runtime.graph_inputs(model)
    bound = {k: tuple(v) for k, v in shapes.items()} if shapes else bind(specs, {})[0]
    return runtime.random_inputs(specs, bound, seed=0, highs=runtime.index_bounds(model))


def ratio(rt_spec: str, a: Path, b: Path, f: dict, budget: float) -> str:
    from rooftop import runtimes
    from rooftop.analysis import timing

    rt = runtimes.get(rt_spec)
    try:
        sa = rt.load(onnx.load(a), level="all", timing=True)
        sb = rt.load(onnx.load(b), level="all", timing=True)
    except Exception as e:  # noqa: BLE001
        return f"does not load: {str(e).splitlines()[0][:60]}"
    c = timing.compare_sessions(sa, sb, f, level="all", threads=0, budget_s=budget, stop="verdict")
    lat = c.latency()
    return f"{lat.ratio:.2f} [{lat.ci[0]:.2f}–{lat.ci[1]:.2f}] {lat.verdict.value}"


def matches_in_openvino(a: Path, b: Path, f: dict) -> str:
    from rooftop import runtimes
    from rooftop.verify import compare_outputs

    ov = runtimes.get("openvino")
    try:
        ref = ov.load(onnx.load(a)).run(f)
    except Exception as e:  # noqa: BLE001
        return f"original does not load ({str(e).splitlines()[0][:50]})"
    try:
        got = ov.load(onnx.load(b)).run(f)
    except Exception as e:  # noqa: BLE001
        return f"NO: does not load ({str(e).splitlines()[0][:60]})"
    res = compare_outputs(ref, got, rtol=1e-4, atol=1e-5)
    return f"yes ({res.max_abs_error:.1e})" if res.ok else f"NO: {res.message[:60]}"


def run(src: Path, d: Path, budget: float) -> list[dict]:
    import json

    rows = []
    for label, extra in (
        ("portable (decided in onnxruntime)", []),
        ("portable --runtime openvino", ["--runtime", "openvino"]),
    ):
        out, rep = d / f"{src.stem}.{len(rows)}.onnx", d / f"{src.stem}.{len(rows)}.json"
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "rooftop", str(src), "-o", str(out), "--report", str(rep), "-q", *extra],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=3600,
        )
        row = {"model": src.stem, "run": label, "exit": p.returncode, "s": f"{time.perf_counter() - t0:.1f}"}
        if p.returncode != 0 or not out.exists():
            row["note"] = p.stderr.strip().splitlines()[-1][:100] if p.stderr.strip() else ""
            rows.append(row)
            continue
        r = json.loads(rep.read_text())
        shapes = r["shapes"]["sets"][0] if r.get("shapes") else None
        row["nodes"] = f"{r['model']['nodes']}→{r['output']['nodes']}"
        row["cross-checked"] = r.get("cross_checked") or "-"
        row["not kept"] = "; ".join(
            f"{q['name']} {q['status']}" for q in r["passes"] if q["status"] in ("rolled back", "rejected", "skipped")
        )[:120]
        try:
            f = feeds(onnx.load(src), shapes)
            row["matches in OpenVINO"] = matches_in_openvino(src, out, f)
            row["onnxruntime ENABLE_ALL"] = ratio("onnxruntime", src, out, f, budget)
            row["OpenVINO CPU"] = ratio("openvino", src, out, f, budget)
        except Exception as e:  # noqa: BLE001 - a model that does not run on generated inputs
            row["note"] = f"not run on generated inputs: {str(e).splitlines()[0][:80]}"
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--models", nargs="*", default=None)
    args = ap.parse_args()
    import onnxruntime
    import openvino

    models = [Path(m) for m in args.models] if args.models else corpus()
    print(
        f"<!-- {platform.machine()}, python {platform.python_version()}, onnx {onnx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, openvino {openvino.__version__}, "
        f"numpy {np.__version__}; {time.strftime('%Y-%m-%d')} -->"
    )
    cols = [
        "model",
        "run",
        "exit",
        "s",
        "nodes",
        "cross-checked",
        "matches in OpenVINO",
        "onnxruntime ENABLE_ALL",
        "OpenVINO CPU",
        "not kept",
        "note",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for src in models:
        with tempfile.TemporaryDirectory() as d:
            for row in run(src, Path(d), args.budget):
                print("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
