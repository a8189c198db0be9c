"""fold-conv-bn benchmark: MobileNetV2 exported with BN kept, after `optimize`, against the
same net exported with BN folded, all at ORT_ENABLE_ALL (what a deployment runs).

    pip install torch==2.13.0 && python benchmarks/bench_fold_bn.py [--budget 20]

Prints interleaved latency ratios with their interquartile range.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from rooftop import runtime

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
CACHE = ROOT / "benchmarks" / "cache"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of interleaved timing per pair")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    import archs
    import torch

    import rooftop
    from rooftop.analysis import timing

    CACHE.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = archs.mobilenet_v2(1.0, 1000)
    x = torch.randn(1, 3, 224, 224)
    paths = {
        "legacy BN folded": (CACHE / "mnv2_legacy_folded.onnx", "legacy", True),
        "dynamo BN kept (optimize=False)": (CACHE / "mnv2_dynamo_raw.onnx", "dynamo", False),
        "legacy BN kept (do_constant_folding=False)": (CACHE / "mnv2_legacy_raw.onnx", "legacy", False),
    }
    for _label, (p, exporter, fold) in paths.items():
        if not p.exists():
            archs.export(net, x, p, exporter=exporter, fold=fold)
    ref = onnx.load(paths["legacy BN folded"][0])
    feeds = {ref.graph.input[0].name: x.numpy()}
    print(
        f"onnxruntime {__import__('onnxruntime').__version__}, "
        f"threads={args.threads or runtime.physical_cores()}, budget {args.budget}s per pair"
    )
    for label in ("dynamo BN kept (optimize=False)", "legacy BN kept (do_constant_folding=False)"):
        raw = onnx.load(paths[label][0])
        opt, rep = rooftop.optimize(raw)
        fold = next(r for r in rep.passes if r.name == "fold-conv-bn")
        n_bn = lambda m: sum(n.op_type == "BatchNormalization" for n in m.graph.node)  # noqa: E731
        print(
            f"\n{label}: {len(raw.graph.node)} nodes ({n_bn(raw)} BN) "
            f"-> rooftop {len(opt.graph.node)} nodes ({n_bn(opt)} BN); "
            f"fold-conv-bn rewrites {fold.rewrites}; {rep.verification}, "
            f"max abs error {rep.final_check.max_abs_error:.2e}"
        )
        for name, model in (("original export", raw), ("after rooftop", opt)):
            c = timing.compare(
                ref,
                model,
                feeds,
                level="all",
                threads=args.threads,
                budget_s=args.budget,
                labels=("legacy BN folded", f"{label} {name}"),
            )
            print(f"  {c.describe()}  [{c.a.median_ms:.2f} ms vs {c.b.median_ms:.2f} ms]")


if __name__ == "__main__":
    main()
