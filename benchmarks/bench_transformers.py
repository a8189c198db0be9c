"""Transformer fusions against onnxruntime.transformers.optimizer, interleaved on this machine.

    pip install torch==2.13.0 -e ".[export,bench]"
    python benchmarks/bench_transformers.py [--budget 3] [--models bert,gpt2,vit,decoder,decoder-step] [--opset 23]

For each model (BERT-, GPT-2- and ViT-style, written in models/archs.py, exported with the
TorchScript exporter at opset 14 as older exports are, d=256, 4 layers, batch 1, sequence 128 /
224x224 image; and a LLaMA-style decoder with KV cache from gen_decoder.py, 4 layers, d=512,
opset 18, timed at a prefill of 128 tokens after 128 cached and at one step after 255 cached;
cached in benchmarks/cache/): `rooftop.optimize` (portable target, `--opset` converting the model
so LayerNormalization/Gelu/RMSNormalization/Attention exist, measurement deciding at ORT_ENABLE_ALL) and
the same with `--target onnxruntime` (com.microsoft SkipLayerNormalization, BiasGelu/FastGelu,
and attention-fusion: com.microsoft Attention with one packed QKV GEMM), and
`onnxruntime.transformers.optimizer.optimize_model` (its fusions into com.microsoft ops, opt_level
0 so the file holds only its own rewrites). Each output is timed interleaved against the original
at ORT_DISABLE_ALL and at ORT_ENABLE_ALL: median of per-round ratios (output / original) with the
95% CI of that median; then rooftop's onnxruntime-target output directly against the
transformers optimizer's (ratio rooftop / theirs). The '
    'memory traffic each of rooftop's fusions removed comes from its report
(cost model, bytes read + written).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "models"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent))
CACHE = ROOT / "cache"


DECODER = {"layers": 4, "d": 512, "ff": 1376, "heads": 8, "vocab": 8000}
# decoder: prefill of 128 tokens after 128 cached; decoder-step: one token after 255 cached (the
# generation loop's call). Shapes also given to rooftop, so its measurements decide at them.
SHAPES = {
    "decoder": {"input_ids": [1, 128], "past_key_values.0.key": [1, 8, 128, 64]},
    "decoder-step": {"input_ids": [1, 1], "past_key_values.0.key": [1, 8, 255, 64]},
}


def export(name: str) -> tuple[Path, str, dict]:
    """The cached export, onnxruntime.transformers' model_type and its size arguments."""
    if name.startswith("decoder"):
        path = CACHE / "decoder-L4-d512.onnx"
        if not path.exists():
            from gen_decoder import build

            CACHE.mkdir(parents=True, exist_ok=True)
            build(
                path,
                DECODER["layers"],
                DECODER["d"],
                DECODER["ff"],
                DECODER["heads"],
                DECODER["vocab"],
                fp16=False,
                opset=18,
            )
        return path, "gpt2", {"num_heads": DECODER["heads"], "hidden_size": DECODER["d"]}
    path = CACHE / f"{name}-ts14.onnx"
    if not path.exists():
        import archs
        import torch

        torch.manual_seed(0)
        CACHE.mkdir(parents=True, exist_ok=True)
        if name == "bert":
            net, x = archs.BertEncoder(vocab=1000, d=256, layers=4, heads=4), torch.randint(1, 1000, (1, 128))
        elif name == "gpt2":
            net, x = archs.GPT2Decoder(vocab=1000, d=256, layers=4, heads=4), torch.randint(1, 1000, (1, 128))
        else:
            net, x = archs.ViT(image=224, patch=16, d=256, layers=4, heads=4), torch.randn(1, 3, 224, 224)
        archs.export(net.eval(), x, path, opset=14)
    kind = {"bert": "bert", "gpt2": "gpt2", "vit": "vit"}[name]
    return path, kind, {"num_heads": 4, "hidden_size": 256}


def ort_transformers(src: Path, kind: str, sizes: dict, dst: Path) -> Path:
    from onnxruntime.transformers import optimizer

    m = optimizer.optimize_model(str(src), model_type=kind, opt_level=0, **sizes)
    m.save_model_to_file(str(dst))
    return dst


def feeds_for(model: onnx.ModelProto, shapes: dict):
    from rooftop import runtime
    from rooftop.shapes import bind_sizes

    specs = runtime.graph_inputs(model)
    return runtime.random_inputs(specs, bind_sizes(specs, shapes, 1, 128), seed=0, highs=runtime.index_bounds(model))


def timed(original: onnx.ModelProto, other: onnx.ModelProto, feeds, level: str, budget: float) -> str:
    from rooftop.analysis import timing
    from rooftop.runtime import physical_cores

    threads = physical_cores()
    c = timing.compare_sessions(
        timing.session(original, level, threads),
        timing.session(other, level, threads),
        feeds,
        level=level,
        threads=threads,
        budget_s=budget,
    )
    lo, hi = c.ci
    return f"{c.ratio:.2f} [{lo:.2f}–{hi:.2f}]"


def fusion_bytes(report) -> str:
    parts = []
    for r in report.passes:
        if (
            r.name in ("norm-fusion", "gelu-fusion", "attention-fusion")
            and r.cost is not None
            and r.status.value == "applied"
        ):
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items()))
            parts.append(f"{kinds}: −{(r.cost.before.bytes - r.cost.after.bytes) / 1e6:.1f} MB")
    return "; ".join(parts) or "-"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--models", default="bert,gpt2,vit,decoder,decoder-step")
    ap.add_argument("--opset", type=int, default=23)
    args = ap.parse_args()
    import onnxruntime

    import rooftop

    print(
        f"onnxruntime {onnxruntime.__version__}; budget {args.budget}s "
        "per comparison; ratios = output/original, median [95% CI]\n"
    )
    cols = [
        "model",
        "output",
        "nodes",
        "ORT_DISABLE_ALL",
        "ORT_ENABLE_ALL",
        "fusions (rooftop: bytes removed per inference)",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            src, kind, sizes = export(name)
            original = onnx.load(src)
            shapes = SHAPES.get(name, {})
            feeds = feeds_for(original, shapes)
            common = {
                "opset": args.opset,
                "hardware": "xeon-avx512",
                "time_budget": 1.0,
                "input_shapes": shapes,
                "lazy_weights": False,
            }
            ours, report = rooftop.optimize(src, **common)
            ours_ort, report_ort = rooftop.optimize(src, target="onnxruntime", **common)
            theirs = onnx.load(ort_transformers(src, kind, sizes, Path(d) / f"{name}-ort.onnx"))
            their_ops = sorted({n.op_type for n in theirs.graph.node if n.domain == "com.microsoft"})
            ort_ops = sorted({n.op_type for n in ours_ort.graph.node if n.domain == "com.microsoft"})
            for label, m, note in (
                (f"rooftop --opset {args.opset}", ours, fusion_bytes(report)),
                (
                    f"rooftop --opset {args.opset} --target onnxruntime",
                    ours_ort,
                    fusion_bytes(report_ort) + (f" ({', '.join(ort_ops)})" if ort_ops else ""),
                ),
                ("onnxruntime.transformers", theirs, ", ".join(their_ops) or "-"),
            ):
                row = [
                    name,
                    label,
                    f"{len(original.graph.node)}→{len(m.graph.node)}",
                    timed(original, m, feeds, "disable", args.budget),
                    timed(original, m, feeds, "all", args.budget),
                    note,
                ]
                print("| " + " | ".join(row) + " |", flush=True)
            # the two com.microsoft outputs against each other, interleaved in one comparison (the rows
            # above are each against the original, at different moments of a noisy machine)
            row = [
                name,
                "rooftop --target onnxruntime / onnxruntime.transformers (direct)",
                "",
                timed(theirs, ours_ort, feeds, "disable", args.budget),
                timed(theirs, ours_ort, feeds, "all", args.budget),
                "",
            ]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
