"""The transformer corpus against the peers: Rooftop, onnxslim and onnxruntime.transformers.optimizer.

    pip install -e ".[export,bench]" torch==2.13.0 onnxslim
    python benchmarks/bench_transformer_peers.py [--size small] [--budget 2] [--archs bert,vit] [--cache]

Every model of models/hf_corpus.py (``transformers`` architectures from their configs, random
weights, and nn.TransformerEncoder; both torch exporters at their default opsets; dynamic batch
and sequence) goes through:

- ``optimize --target onnxruntime`` (the default run: verification, measurement deciding at
  ORT_ENABLE_ALL),
- ``optimize --opset 23`` (the portable target with the standard fused ops),
- ``onnxslim.slim`` (its defaults),
- ``onnxruntime.transformers.optimizer.optimize_model`` with the matching model_type, heads and
  hidden size (opt_level 0: the file holds only its own rewrites).

Each output is timed interleaved against the original at ORT_ENABLE_ALL and ORT_DISABLE_ALL
(batch 1, sequence 128 or a 224×224 image), and Rooftop's onnxruntime-target output directly
against each peer's at ORT_ENABLE_ALL: the median of per-round ratios with its 95% CI. The bytes
column is what Rooftop's fusions removed per inference (its cost model).

``--cache``: the decoders exported with their KV cache (GPT-2, LLaMA, LLaMA with grouped-query
attention), timed at a prefill of 128 tokens (empty past) and at one step over a past of 128, with
``optimize --target onnxruntime --opset 23`` as well (the cache forms need the standard ops) and
that output compared with the peers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

# onnxruntime.transformers.optimizer's model_type for each architecture of the corpus
MODEL_TYPE = {
    "bert": "bert",
    "distilbert": "bert",
    "roberta": "bert",
    "vit": "vit",
    "deit": "vit",
    "clip-text": "clip",
    "clip-vision": "clip",
    "whisper-encoder": "bert",
    "t5-encoder": "t5",
    "gpt2": "gpt2",
    "llama": "gpt2",
    "llama-gqa": "gpt2",
    "torch-encoder": "bert",
}


def rooftop(src: Path, dst: Path, *extra: str) -> tuple[Path | None, str]:
    rep = dst.with_suffix(".json")
    p = subprocess.run(
        [sys.executable, "-m", "rooftop", str(src), "-o", str(dst), "--report", str(rep), "-q", *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=3600,
    )
    if p.returncode != 0:
        return None, (p.stderr.strip().splitlines() or ["?"])[-1][:80]
    return dst, fusion_bytes(rep)


FUSIONS = ("norm-fusion", "gelu-fusion", "attention-fusion", "rotary-fusion", "residual-sum")


def fusion_bytes(rep: Path) -> str:
    import json

    parts = []
    for r in json.loads(rep.read_text())["passes"]:
        if r["name"] in FUSIONS and r["status"] == "applied":
            saved = (r.get("bytes_before") or 0) - (r.get("bytes_after") or 0)
            parts.append(f"{r['name'].split('-')[0]} −{saved / 1e6:.2f} MB")
    return ", ".join(parts) or "-"


def slim(src: Path, dst: Path) -> Path | None:
    import onnxslim

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its summary table
            onnxslim.slim(str(src), str(dst))
    except Exception as e:  # noqa: BLE001 - a peer that fails is a row, not a crash
        print(f"<!-- onnxslim failed on {src.name}: {str(e).splitlines()[0][:80]} -->", file=sys.stderr)
        return None
    return dst


def ort_optimizer(src: Path, arch: str, width: int, heads: int, dst: Path) -> Path | None:
    from onnxruntime.transformers import optimizer

    try:
        m = optimizer.optimize_model(
            str(src), model_type=MODEL_TYPE[arch], num_heads=heads, hidden_size=width, opt_level=0
        )
        m.save_model_to_file(str(dst))
    except Exception as e:  # noqa: BLE001
        print(f"<!-- transformers optimizer failed on {src.name}: {str(e).splitlines()[0][:80]} -->", file=sys.stderr)
        return None
    return dst


def feeds(model: onnx.ModelProto) -> dict:
    """Inputs at the realistic defaults (batch 1, sequence 128, 224×224), else at a sequence of 64
    or 16 where the original does not run at 128 (CLIP's text tower takes 77 positions)."""
    from rooftop import runtime
    from rooftop.analysis import timing
    from rooftop.shapes import bind, bind_sizes

    specs = runtime.graph_inputs(model)
    highs = runtime.index_bounds(model)
    s = timing.session(model, "disable")
    for shapes in (bind(specs, {})[0], bind_sizes(specs, {}, 1, 64), bind_sizes(specs, {}, 1, 16)):
        f = runtime.random_inputs(specs, shapes, seed=0, highs=highs)
        try:
            s.run(None, f)
            return f
        except Exception:  # noqa: BLE001 - the next size
            continue
    return f


def ratio(a: Path, b: Path | None, f: dict, level: str, budget: float) -> str:
    if b is None:
        return "failed"
    from rooftop.analysis import timing
    from rooftop.runtime import physical_cores

    threads = physical_cores()
    try:
        c = timing.compare_sessions(
            timing.session(onnx.load(a), level, threads),
            timing.session(onnx.load(b), level, threads),
            f,
            level=level,
            threads=threads,
            budget_s=budget,
            stop="verdict",
        )
    except Exception as e:  # noqa: BLE001
        return f"does not run: {str(e).splitlines()[0][:40]}"
    lat = c.latency()
    return f"{lat.ratio:.2f} [{lat.ci[0]:.2f}–{lat.ci[1]:.2f}] {lat.verdict.value}"


def decode_feeds(model: onnx.ModelProto, sequence: int, past: int) -> dict:
    """A decoder's inputs at batch 1: ``sequence`` new tokens over a cache of ``past``."""
    import numpy as np

    r, feeds = np.random.default_rng(0), {}
    for i in model.graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.name == "x":
            feeds["x"] = r.integers(1, 1000, (1, sequence)).astype(np.int64)
        else:
            feeds[i.name] = r.standard_normal((1, dims[1], past, dims[3])).astype(np.float32)
    return feeds


def compare(src: Path, arch: str, width: int, heads: int, phases: dict, budget: float, cache: bool) -> None:
    """One row per tool and phase (``phases``: name → feeds)."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ours, ours_bytes = rooftop(src, d / "ort.onnx", "--target", "onnxruntime")
        outs = {"rooftop --target onnxruntime": (ours, ours_bytes)}
        if cache:  # the cache forms (Attention with past, grouped heads, RotaryEmbedding) need opset 23
            ours = rooftop(src, d / "ort23.onnx", "--target", "onnxruntime", "--opset", "23")
            outs["rooftop --target onnxruntime --opset 23"] = ours
            ours = ours[0]
        outs["rooftop --opset 23"] = rooftop(src, d / "p23.onnx", "--opset", "23")
        outs["onnxslim"] = (slim(src, d / "slim.onnx"), "-")
        outs["ort transformers optimizer"] = (ort_optimizer(src, arch, width, heads, d / "ortopt.onnx"), "-")
        for phase, f in phases.items():
            for tool, (out, fused) in outs.items():
                peer = tool in ("onnxslim", "ort transformers optimizer")
                row = [
                    src.stem + (f" ({phase})" if phase else ""),
                    tool,
                    fused,
                    ratio(src, out, f, "all", budget),
                    ratio(src, out, f, "disable", budget),
                    ratio(out, ours, f, "all", budget) if peer and ours is not None and out is not None else "",
                ]
                print("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", choices=("tiny", "small"))
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--archs", default=None)
    ap.add_argument("--cache", action="store_true", help="the decoders exported with their KV cache instead")
    args = ap.parse_args()
    import hf_corpus
    import onnxruntime
    import onnxslim

    width, _, heads = hf_corpus.SIZES[args.size]
    archs = args.archs.split(",") if args.archs else hf_corpus.DECODERS if args.cache else hf_corpus.ARCHS
    print(
        f"<!-- {platform.machine()}, onnxruntime {onnxruntime.__version__}, onnxslim {onnxslim.__version__}; "
        f"{time.strftime('%Y-%m-%d')}; size {args.size} -->"
    )
    cols = ["model", "tool", "fusions' bytes", "vs original ENABLE_ALL", "vs original DISABLE_ALL", "ours / theirs"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for arch in archs:
        for exporter in ("torchscript", "dynamo"):
            try:
                src = hf_corpus.build(arch, exporter, size=args.size, cache=args.cache)
            except Exception as e:  # noqa: BLE001 - an exporter that cannot export it
                print(f"<!-- {arch} ({exporter}) not exported: {str(e).splitlines()[-1][:80]} -->", file=sys.stderr)
                continue
            model = onnx.load(src)
            if args.cache:
                phases = {"prefill 128": decode_feeds(model, 128, 0), "step at 128": decode_feeds(model, 1, 128)}
            else:
                phases = {"": feeds(model)}
            compare(src, arch, width, heads, phases, args.budget, args.cache)


if __name__ == "__main__":
    main()
