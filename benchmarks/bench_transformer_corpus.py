"""Transformers as people export them: what the fusions do with every candidate, per architecture.

    python benchmarks/bench_transformer_corpus.py [--size tiny|small] [--archs bert,gpt2]

The corpus is models/hf_corpus.py: the ``transformers`` package's architectures built from their
configs (random weights) and nn.TransformerEncoder, each exported with both torch exporters at
their default opsets, dynamic batch and sequence. Each goes through ``optimize`` with
``--target onnxruntime`` and with the portable target at ``--opset 23`` (no timing: the table is
about matching). Per run: attention blocks (Softmaxes that read a product of two activations),
how many were fused, each refusal with its reason, the bytes per inference the attention fusion
removed (roofline), and the LayerNorm/GELU candidates the same way. A candidate neither fused nor
refused is a silent non-match and is counted in the `silent` column (the goal is 0 everywhere).
The decoders (GPT-2, LLaMA, LLaMA with grouped-query attention) run again exported with their KV
cache, also with ``--target onnxruntime --opset 23``; the RoPE column counts rotary embeddings
fused.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="tiny", choices=("tiny", "small"))
    ap.add_argument("--archs", default=None)
    args = ap.parse_args()
    import hf_corpus
    import onnx

    import rooftop

    archs = args.archs.split(",") if args.archs else hf_corpus.ARCHS
    print(f"<!-- onnx {onnx.__version__}; {time.strftime('%Y-%m-%d')}; size {args.size} -->")
    cols = ["model", "exporter", "run", "attention fused", "refused (reason)", "bytes removed"]
    cols += ["LayerNorm", "GELU", "RoPE fused", "silent"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    totals = {"blocks": 0, "fused": 0, "silent": 0}
    corpus = [(name, e, False) for name in archs for e in ("torchscript", "dynamo")]
    corpus += [(name, e, True) for name in archs if name in hf_corpus.DECODERS for e in ("torchscript", "dynamo")]
    for name, exporter, cache in corpus:
        label = f"{name} + KV cache" if cache else name
        try:
            model = onnx.load(hf_corpus.build(name, exporter, size=args.size, cache=cache))
        except Exception as e:  # noqa: BLE001
            msg = str(e).splitlines()[0][:80] if str(e) else type(e).__name__
            print(f"| {label} | {exporter} | - | export failed: {msg} | | | | | | |")
            continue
        want = hf_corpus.candidates(model)
        runs = [("--target onnxruntime", {"target": "onnxruntime"}), ("portable --opset 23", {"opset": 23})]
        if cache:  # the cache forms need opset 23 on onnxruntime too
            runs.insert(1, ("--target onnxruntime --opset 23", {"target": "onnxruntime", "opset": 23}))
        for run, kw in runs:
            _, rep = rooftop.optimize(model, time=False, hardware="xeon-avx512", **kw)
            cells, silent = {}, 0
            for kind in ("attention", "layernorm", "gelu"):
                done, refused, why = hf_corpus.outcome(rep, kind)
                silent += max(want[kind] - done - refused, 0)
                cells[kind] = (done, refused, why)
            rec = next(r for r in rep.passes if r.name == "attention-fusion")
            saved = rec.cost.bytes_saved / 1e6 if rec.cost is not None and rec.status.value == "applied" else 0.0
            rope = next(r for r in rep.passes if r.name == "rotary-fusion")
            a = cells["attention"]
            totals["blocks"] += want["attention"]
            totals["fused"] += a[0]
            totals["silent"] += silent
            reasons = "; ".join(f"{n}: {w}" for w, n in a[2].items()) or "-"
            norms = f"{cells['layernorm'][0]} of {want['layernorm']} | {cells['gelu'][0]} of {want['gelu']}"
            head = f"| {label} | {exporter} | {run} | {a[0]} of {want['attention']} | {reasons} | {saved:.2f} MB"
            roped = sum(rope.counts.values()) if rope.status.value == "applied" else 0
            print(f"{head} | {norms} | {roped} | {silent} |", flush=True)
    print(f"\nattention fused: {totals['fused']} of {totals['blocks']} blocks; silent non-matches: {totals['silent']}")


if __name__ == "__main__":
    main()
