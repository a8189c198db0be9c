"""requant benchmark: a QDQ model after `optimize` at ORT_DISABLE_ALL against the original at ORT_ENABLE_ALL.

    python benchmarks/compare.py --models resnet18-qdq,mobilenetv2-qdq --no-latency   # builds the QDQ exports
    python benchmarks/bench_requant.py [--budget 10] [--target onnxruntime]

The point: the int8 path should no longer depend on onnxruntime's own fusion.
Interleaved rounds (A B, B A, ...); the ratio's median and interquartile range.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--target", default="onnxruntime")
    ap.add_argument("models", nargs="*", default=["resnet18-qdq", "mobilenetv2-qdq"])
    args = ap.parse_args()

    import rooftop
    from rooftop.analysis.timing import _runner, physical_cores, session
    from rooftop.runtime import graph_inputs, random_inputs
    from rooftop.shapes import bind_sizes as bind_shapes

    for name in args.models:
        src = ROOT / "benchmarks" / "cache" / f"{name}.onnx"
        original = onnx.load(src)
        opt, rep = rooftop.optimize(src, target=args.target, time=False)
        specs = graph_inputs(original)
        feeds = random_inputs(specs, bind_shapes(specs, {}, 1, 32))
        threads = physical_cores()
        ra = _runner(session(original, "all", threads), feeds)
        rb = _runner(session(opt, "disable", threads), feeds)
        for _ in range(3):
            ra(), rb()
        ratios, ta, tb = [], [], []
        t0 = time.perf_counter()
        i = 0
        while time.perf_counter() - t0 < args.budget or i < 10:
            a, b = (ra(), rb()) if i % 2 == 0 else tuple(reversed((rb(), ra())))
            ta.append(a)
            tb.append(b)
            ratios.append(b / a)
            i += 1
        q1, med, q3 = np.percentile(ratios, [25, 50, 75])
        print(
            f"{name} (--target {args.target}): {len(original.graph.node)} -> {len(opt.graph.node)} nodes; "
            f"optimized at ORT_DISABLE_ALL {np.median(tb) * 1e3:.2f} ms "
            f"/ original at ORT_ENABLE_ALL {np.median(ta) * 1e3:.2f} ms "
            f"= {med:.3f} (IQR {q1:.3f}-{q3:.3f}, {len(ratios)} rounds, {threads} threads); {rep.verification}"
        )


if __name__ == "__main__":
    main()
