"""int8 models as users have them: quantize_static's defaults and every type combination,
through `optimize`, timed against the original at the deploy level.

    pip install torch==2.13.0 -e ".[export,bench]"
    python benchmarks/bench_int8.py [--budget 4] [--models resnet18,mobilenetv2] [--configs s8s8,s8s8-pc,u8s8-pc,u8u8]

For every model x quantization config: the original QDQ model (made by
onnxruntime.quantization.quantize_static from a torch export, cached in benchmarks/cache/),
`rooftop.optimize` with --target onnxruntime and portable (default deploy level
ORT_ENABLE_ALL, measurement deciding), and onnxruntime's own offline output
(ORT_ENABLE_EXTENDED, saved) as the peer. Each output is timed interleaved against the
original, both at ORT_ENABLE_ALL; rooftop's onnxruntime-target output also at
ORT_DISABLE_ALL against the original at ORT_ENABLE_ALL. Ratios are the median of
per-round ratios (output / original) with the 95% CI of that median.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "models"))
sys.path.insert(0, str(ROOT.parent))

CONFIGS = {
    # name: quantize_static keyword arguments (s8s8 = the defaults)
    "s8s8": {},
    "s8s8-pc": {"per_channel": True},
    "u8s8-pc": {"per_channel": True, "activation_type": "QUInt8"},
    "u8u8": {"activation_type": "QUInt8", "weight_type": "QUInt8"},
    "s8s8-rr": {"reduce_range": True},
    "s8s8-sym": {"extra_options": {"ActivationSymmetric": True}},
}
BASES = {"resnet18": "resnet18", "mobilenetv2": "mobilenetv2-folded", "encoder": None}


def encoder_fp32() -> Path:
    """A 4-layer BERT-style encoder (d=256, 4 heads, vocab 1000) at sequence 128, static shapes."""
    import compare

    path = compare.CACHE / "encoder4.onnx"
    if not path.exists():
        import archs
        import torch

        torch.manual_seed(0)
        compare.CACHE.mkdir(parents=True, exist_ok=True)
        archs.export(
            archs.BertEncoder(vocab=1000, d=256, layers=4, heads=4).eval(), torch.randint(1, 1000, (1, 128)), path
        )
    return path


def quantized(model: str, config: str) -> Path:
    import compare

    dst = compare.CACHE / f"{model}-int8-{config}.onnx"
    if dst.exists():
        return dst
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    base = (
        encoder_fp32()
        if model == "encoder"
        else compare.build(BASES[model], compare.corpus()[BASES[model]], compare.corpus())
    )
    m = onnx.load(base)
    name = m.graph.input[0].name
    rng = np.random.default_rng(0)

    def sample():
        if model == "encoder":
            return rng.integers(1, 1000, (1, 128)).astype(np.int64)
        return rng.standard_normal((1, 3, 224, 224)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter([{name: sample()} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    kw = dict(CONFIGS[config])
    for k in ("activation_type", "weight_type"):
        if k in kw:
            kw[k] = getattr(QuantType, kw[k])
    quantize_static(str(base), str(dst), Reader(), quant_format=QuantFormat.QDQ, **kw)
    return dst


def ort_offline(src: Path, dst: Path) -> Path:
    import onnxruntime as ort

    if not dst.exists():
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(dst)
        so.log_severity_level = 3
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    return dst


def timed(a, b, feeds, level_a: str, level_b: str, budget: float) -> str:
    from rooftop.analysis.timing import compare_sessions, physical_cores, session

    threads = physical_cores()
    c = compare_sessions(
        session(a, level_a, threads),
        session(b, level_b, threads),
        feeds,
        level=level_b,
        threads=threads,
        budget_s=budget,
    )
    lo, hi = c.ci
    return f"{c.ratio:.2f} [{lo:.2f}–{hi:.2f}] {c.verdict}"


def islands(m: onnx.ModelProto) -> int:
    """MatMul/Gemm/Add/Mul nodes that read a DequantizeLinear and feed only QuantizeLinear: float
    computation between quantized tensors."""
    producers = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    count = 0
    for n in m.graph.node:
        if n.op_type in ("MatMul", "Gemm", "Add", "Mul"):
            dq = any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
            cs = consumers.get(n.output[0], [])
            count += bool(dq and cs and all(c.op_type == "QuantizeLinear" for c in cs))
    return count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=4.0, help="seconds of interleaved timing per comparison")
    ap.add_argument("--models", default="resnet18,mobilenetv2")
    ap.add_argument("--configs", default="s8s8,s8s8-pc,u8s8-pc,u8u8")
    args = ap.parse_args()

    import rooftop
    from rooftop.runtime import graph_inputs, random_inputs
    from rooftop.shapes import bind_sizes as bind_shapes

    print(
        "| model | quantization | tool | nodes | float islands | time ratio at ORT_ENABLE_ALL (output / original) "
        "| rooftop ort-target at ORT_DISABLE_ALL / original at ENABLE_ALL | rooftop decisions | optimize s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for config in args.configs.split(","):
            src = quantized(model, config)
            original = onnx.load(src)
            specs = graph_inputs(original)
            feeds = random_inputs(specs, bind_shapes(specs, {}, 1, 32))
            row = f"| {model} | {config} |"
            print(f"{row} original | {len(original.graph.node)} | {islands(original)} | 1 | | | |", flush=True)
            for target in ("onnxruntime", "portable"):
                t0 = time.perf_counter()
                opt, rep = rooftop.optimize(src, target=target, hardware="xeon-avx512", profile_nodes=False)
                secs = time.perf_counter() - t0
                dec = "; ".join(
                    f"{r.name} {r.status.value} ({r.latency.describe() if r.latency else '-'})"
                    for r in rep.passes
                    if r.status.value in ("applied", "rejected", "rolled back", "skipped")
                    and r.name in ("u8-activations", "requant", "nhwc-int8", "pad-channels")
                )
                if rep.backed_off:
                    dec += f"; backed off {', '.join(rep.backed_off)}"
                dis = timed(original, opt, feeds, "all", "disable", args.budget) if target == "onnxruntime" else ""
                print(
                    f"{row} rooftop --target {target} | {len(opt.graph.node)} | {islands(opt)} "
                    f"| {timed(original, opt, feeds, 'all', 'all', args.budget)} "
                    f"| {dis} | {dec} | {secs:.1f} |",
                    flush=True,
                )
            off = onnx.load(ort_offline(src, src.with_name(src.stem + ".ort-extended.onnx")))
            print(
                f"{row} onnxruntime offline EXTENDED | {len(off.graph.node)} | {islands(off)} "
                f"| {timed(original, off, feeds, 'all', 'all', args.budget)} | | | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
