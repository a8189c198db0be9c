"""Which attention op to write for a decoder with a KV cache on onnxruntime's CPU provider.

    python benchmarks/bench_gqa.py [--rounds 15]

attention-fusion writes the standard ``Attention`` (opset 23) for a decoder's cached attention,
grouped-query heads included, on both targets. onnxruntime also has com.microsoft
``GroupQueryAttention``, which takes 3-D (B, S, N·H) query/key/value, the cache as (B, KV, P, H),
and ``seqlens_k`` / ``total_sequence_length`` inputs an export does not have. This times the two
ops alone, interleaved, at a Llama-3-8B layer's heads (32 query heads, 8 KV heads, head size 128)
and at a small decoder's (4 and 2, head size 64): a prefill of 128 tokens on an empty cache and
one step over a cache of 512, batch 1, 2 threads. Both compute causal attention over the same
numbers (checked before timing); the table gives GroupQueryAttention / Attention, the median of
per-round ratios with its interquartile range.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import onnxruntime as ort
from _interleave import ratio_b_over_a
from onnx import TensorProto, helper

SHAPES = [(32, 8, 128), (4, 2, 64)]  # query heads, KV heads, head size
PHASES = [("prefill 128", 128, 0), ("step over 512", 1, 512)]


def vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def standard(n: int, kv: int, h: int) -> bytes:
    node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y", "ok", "ov"], is_causal=1)
    ins = [vi("q", [1, n, "s", h]), vi("k", [1, kv, "s", h]), vi("v", [1, kv, "s", h])]
    ins += [vi("pk", [1, kv, "p", h]), vi("pv", [1, kv, "p", h])]
    g = helper.make_graph([node], "std", ins, [vi("y", None), vi("ok", None), vi("ov", None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 23)])
    m.ir_version = 10
    return m.SerializeToString()


def grouped(n: int, kv: int, h: int) -> bytes:
    node = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "pk", "pv", "seqlens_k", "total"],
        ["y", "ok", "ov"],
        domain="com.microsoft",
        num_heads=n,
        kv_num_heads=kv,
    )
    ins = [vi("q", [1, "s", n * h]), vi("k", [1, "s", kv * h]), vi("v", [1, "s", kv * h])]
    ins += [vi("pk", [1, kv, "p", h]), vi("pv", [1, kv, "p", h])]
    ins += [vi("seqlens_k", [1], TensorProto.INT32), vi("total", [], TensorProto.INT32)]
    g = helper.make_graph([node], "gqa", ins, [vi("y", None), vi("ok", None), vi("ov", None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    return m.SerializeToString()


def feeds(n: int, kv: int, h: int, s: int, p: int) -> tuple[dict, dict]:
    r = np.random.default_rng(0)
    q, k, v = (r.standard_normal((1, heads, s, h)).astype(np.float32) for heads in (n, kv, kv))
    pk, pv = (r.standard_normal((1, kv, p, h)).astype(np.float32) for _ in range(2))
    std = {"q": q, "k": k, "v": v, "pk": pk, "pv": pv}
    flat = {name: t.transpose(0, 2, 1, 3).reshape(1, s, -1) for name, t in (("q", q), ("k", k), ("v", v))}
    gqa = {**flat, "pk": pk, "pv": pv, "seqlens_k": np.array([p + s - 1], np.int32), "total": np.array(p + s, np.int32)}
    return std, gqa


def session(model: bytes) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.log_severity_level = 2, 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    print(f"<!-- {platform.machine()}, onnxruntime {ort.__version__}; {time.strftime('%Y-%m-%d')} -->")
    print("| query / KV heads × head size | phase | GroupQueryAttention / Attention | max difference |")
    print("|---|---|---|---|")
    for n, kv, h in SHAPES:
        a, b = session(standard(n, kv, h)), session(grouped(n, kv, h))
        for phase, s, p in PHASES:
            fa, fb = feeds(n, kv, h, s, p)
            ya = a.run(None, fa)[0].transpose(0, 2, 1, 3).reshape(1, s, -1)
            diff = float(np.abs(ya - b.run(None, fb)[0]).max())
            cell = ratio_b_over_a(lambda: a.run(None, fa), lambda: b.run(None, fb), args.rounds)
            print(f"| {n} / {kv} × {h} | {phase} | {cell} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
