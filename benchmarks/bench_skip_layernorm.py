"""Why norm-fusion writes no SkipLayerNormalization for onnxruntime's CPU provider.

    python benchmarks/bench_skip_layernorm.py [--rounds 15]

Chains of 12 pre-norm transformer blocks (``s = x + x·W; n = Norm(s); x' = s + n·V``) at the
token counts of a ViT-S (197 × 384), a BERT-base (128 × 768) and one decode step (1 × 2048), built
twice: with ``Add`` + the standard norm op (LayerNormalization or RMSNormalization), and with
com.microsoft ``SkipLayerNormalization`` / ``SkipSimplifiedLayerNormalization`` writing the sum as
its fourth output. Also the single-consumer form (the sum read only by the norm), and the standard
form with the residual written as Sum (what residual-sum writes). Each pair is timed interleaved
in onnxruntime (CPU provider, 2 threads) at ORT_ENABLE_BASIC and ORT_ENABLE_ALL; the table
gives the median per-round ratio Skip/standard (and Sum/Add) with its interquartile range.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from _interleave import ratio_b_over_a
from onnx import TensorProto, helper, numpy_helper

SIZES = [(197, 384), (128, 768), (1, 2048)]


def chain(
    kind: str, skip: bool, seq: int, hidden: int, sum_read_again: bool = True, blocks: int = 12, residual: str = "Add"
):
    r = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.ones(hidden, np.float32), "g"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b"),
    ]
    nodes, cur = [], "x"
    for i in range(blocks):
        for w in (f"W{i}", f"V{i}"):
            inits.append(numpy_helper.from_array((r.standard_normal((hidden, hidden)) * 0.02).astype(np.float32), w))
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"m{i}"]))
        if skip:
            op = "SkipLayerNormalization" if kind == "layernorm" else "SkipSimplifiedLayerNormalization"
            ins = [f"m{i}", cur, "g"] + (["b"] if kind == "layernorm" else [])
            outs = [f"n{i}", "", "", f"s{i}"] if sum_read_again else [f"n{i}"]
            nodes.append(helper.make_node(op, ins, outs, domain="com.microsoft", epsilon=1e-5))
        else:
            nodes.append(helper.make_node(residual, [f"m{i}", cur], [f"s{i}"]))
            norm = (
                helper.make_node("LayerNormalization", [f"s{i}", "g", "b"], [f"n{i}"], axis=-1, epsilon=1e-5)
                if kind == "layernorm"
                else helper.make_node("RMSNormalization", [f"s{i}", "g"], [f"n{i}"], axis=-1, epsilon=1e-5)
            )
            nodes.append(norm)
        nodes.append(helper.make_node("MatMul", [f"n{i}", f"V{i}"], [f"q{i}"]))
        nodes.append(helper.make_node("Add", [f"q{i}", f"s{i}" if sum_read_again else f"m{i}"], [f"t{i}"]))
        cur = f"t{i}"
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, seq, hidden]) for n in ("x", cur)]
    g = helper.make_graph(nodes, "chain", io[:1], io[1:], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return m


def ratio(a: Path, b: Path, level, rounds: int) -> str:
    def session(p):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.graph_optimization_level = 2, level
        o.log_severity_level = 3
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")  # two pools must not spin on 2 cores
        return ort.InferenceSession(str(p), o, providers=["CPUExecutionProvider"])

    sa, sb = session(a), session(b)
    x = {"x": np.random.default_rng(1).standard_normal(sa.get_inputs()[0].shape).astype(np.float32)}
    return ratio_b_over_a(lambda: sa.run(None, x), lambda: sb.run(None, x), rounds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    levels = {"ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    levels["ORT_ENABLE_ALL"] = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    print(f"<!-- {platform.machine()}, onnxruntime {ort.__version__}; {time.strftime('%Y-%m-%d')} -->")
    cols = "Skip / standard, ORT_ENABLE_BASIC | ORT_ENABLE_ALL | residual Sum / Add, ORT_ENABLE_ALL"
    print(f"| norm | tokens × hidden | sum read again | {cols} |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for kind in ("layernorm", "rmsnorm"):
            for seq, hidden in SIZES:
                for again in (True, False) if kind == "layernorm" else (True,):
                    a, b = Path(d) / "std.onnx", Path(d) / "skip.onnx"
                    onnx.save(chain(kind, False, seq, hidden, again), a)
                    onnx.save(chain(kind, True, seq, hidden, again), b)
                    cells = [ratio(a, b, lv, args.rounds) for lv in levels.values()]
                    c = Path(d) / "sum.onnx"  # what residual-sum writes: onnxruntime does not fuse a Sum
                    onnx.save(chain(kind, False, seq, hidden, again, residual="Sum"), c)
                    cells.append(ratio(a, c, levels["ORT_ENABLE_ALL"], args.rounds))
                    print(f"| {kind} | {seq} × {hidden} | {'yes' if again else 'no'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
