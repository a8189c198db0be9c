"""Transformers as people export them (``models/hf_corpus.py``: the ``transformers`` package's
architectures from their configs, and nn.TransformerEncoder; both torch exporters): every
attention, LayerNorm and GELU candidate is fused or refused with its reason, never left in silence,
and the outputs stay verified at two sizes of every dynamic axis."""

from __future__ import annotations

import sys

import onnx
import pytest
from helpers import HAS_TORCH, ROOT, optimize

sys.path.insert(0, str(ROOT / "models"))

try:
    import transformers  # noqa: F401

    HAS_TRANSFORMERS = True
except ImportError:
    HAS_TRANSFORMERS = False

pytestmark = pytest.mark.skipif(
    not (HAS_TORCH and HAS_TRANSFORMERS),
    reason="needs torch and transformers (pip install -e '.[export]' torch==2.13.0)",
)

CORPUS = [
    (a, e, False)
    for a in ("bert", "vit", "gpt2", "t5-encoder", "whisper-encoder", "llama")
    for e in ("torchscript", "dynamo")
]
CORPUS += [(a, e, False) for a, e in (("clip-text", "torchscript"), ("distilbert", "dynamo"))]
CORPUS += [
    (a, e, False) for a, e in (("llama-gqa", "dynamo"), ("torch-encoder", "dynamo"), ("torch-encoder", "torchscript"))
]
# decoders exported with their KV cache (past in, present out)
CORPUS += [("gpt2", "dynamo", True), ("llama", "torchscript", True), ("llama-gqa", "dynamo", True)]


def _export(name: str, exporter: str, cache: bool = False):
    import hf_corpus

    try:
        return hf_corpus.build(name, exporter, cache=cache)
    except Exception as e:  # noqa: BLE001 - an exporter that cannot export the architecture
        pytest.skip(f"{exporter} cannot export {name}: {str(e).splitlines()[0][:100]}")


@pytest.mark.slow
@pytest.mark.parametrize("target,opset", [("onnxruntime", None), ("portable", 23)])
def test_no_candidate_is_left_in_silence(target, opset):
    import hf_corpus

    blocks = fused = 0
    for name, exporter, cache in CORPUS:
        model = onnx.load(_export(name, exporter, cache))
        want = hf_corpus.candidates(model)
        _, rep = optimize(model, target=target, opset=opset)
        assert not [r.name for r in rep.passes if r.status.value == "rolled back"], (name, exporter)
        assert rep.final_check is not None and rep.final_check.ok and " and " in rep.verification, (name, exporter)
        for kind, n in want.items():
            done, refused, _ = hf_corpus.outcome(rep, kind)
            assert done + refused >= n, (
                f"{name} ({exporter}, {target}): {n - done - refused} {kind} candidates left silent"
            )
        blocks += want["attention"]
        fused += hf_corpus.outcome(rep, "attention")[0]
    # every attention block of the corpus is fused, for onnxruntime at the exporters' opsets too
    # (MultiHeadAttention, with past where there is a cache) and with the standard op at opset 23
    assert fused == blocks, f"{fused} of {blocks} attention blocks fused"


def _decode_feeds(model: onnx.ModelProto, sequence: int, past: int, seed: int) -> dict:
    import numpy as np

    r = np.random.default_rng(seed)
    feeds = {}
    for i in model.graph.input:
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.name == "x":
            feeds["x"] = r.integers(1, 1000, (2, sequence)).astype(np.int64)
        else:  # past.{i}.key/value: (batch, kv heads, past, head size)
            feeds[i.name] = r.standard_normal((2, dims[1], past, dims[3])).astype(np.float32)
    return feeds


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", ["gpt2", "llama", "llama-gqa"])
@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
def test_kv_cache_decoders_fuse_and_stay_equal_at_prefill_and_at_one_step(name, exporter, target):
    """Decoders exported with their KV cache (past in, present out): at opset 23 every attention
    takes the cache into the op (for onnxruntime also grouped-query attention's unrepeated heads;
    OpenVINO's Attention takes equal heads only, so the portable form keeps repeat_kv), LLaMA's
    rotary embeddings become RotaryEmbedding, and the outputs equal the original's at prefill (an
    empty past) and at one decoding step."""
    import hf_corpus
    import numpy as np
    from helpers import run

    try:
        src = onnx.load(hf_corpus.build(name, exporter, cache=True))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{exporter} cannot export {name} with its cache: {str(e).splitlines()[0][:100]}")
    out, rep = optimize(src, target=target, opset=23)
    # (onnxsim's own rotary fusion, left on for onnxruntime, had simplify rolled back on LLaMA's dynamo export)
    assert [r.name for r in rep.passes if r.status.value == "rolled back"] == []
    counts = {r.name: r.counts for r in rep.passes if r.status.value == "applied"}
    layers = hf_corpus.SIZES["tiny"][1]
    grouped_apart = name == "llama-gqa" and target == "portable"
    want = {"attention-into-Attention" if grouped_apart else "attention-into-Attention-with-cache": layers}
    assert counts.get("attention-fusion") == want
    rotary = {"rotate-half-into-RotaryEmbedding": 2 * layers} if "llama" in name else None  # q and k
    assert counts.get("rotary-fusion") == rotary
    for sequence, past in ((6, 0), (1, 7)):  # prefill, then one step
        feeds = _decode_feeds(src, sequence, past, seed=sequence)
        for got, ref in zip(run(out, feeds), run(src, feeds), strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "exporter", "cache", "want"),
    [
        ("llama", "torchscript", False, "attention-into-MultiHeadAttention"),
        ("llama", "dynamo", False, "attention-into-MultiHeadAttention"),
        ("llama-gqa", "dynamo", False, "attention-into-MultiHeadAttention"),
        ("llama", "torchscript", True, "attention-into-MultiHeadAttention-with-cache"),
        ("gpt2", "dynamo", True, "attention-into-MultiHeadAttention-with-cache"),
        # its output projection's Reshape reads the batch of P·V by a Shape: moved to the op's output
        ("gpt2", "torchscript", True, "attention-into-MultiHeadAttention-with-cache"),
        ("llama-gqa", "dynamo", True, "attention-into-MultiHeadAttention"),  # the repeat stays: equal heads
    ],
)
def test_decoder_attention_for_onnxruntime_below_opset_23_is_multiheadattention(name, exporter, cache, want):
    """A decoder's attention in the (batch, heads, length, head size) form (after LLaMA's rotary
    embedding, or keys from a KV cache): for onnxruntime at the exporter's opset it becomes
    com.microsoft MultiHeadAttention (the query put back to 3-D; with a cache, the new keys and
    values too, the past as its inputs and the present as its outputs), equal to the original,
    at prefill and at one step."""
    import hf_corpus
    import numpy as np
    from helpers import ops, run

    src = onnx.load(_export(name, exporter, cache))
    out, rep = optimize(src, target="onnxruntime")
    counts = next(r.counts for r in rep.passes if r.name == "attention-fusion")
    assert counts == {want: hf_corpus.SIZES["tiny"][1]}
    assert "Softmax" not in ops(out)
    for sequence, past in ((5, 0), (1, 7)) if cache else ((5, 0), (12, 0)):
        feeds = _decode_feeds(src, sequence, past, seed=sequence)
        for got, ref in zip(run(out, feeds), run(src, feeds), strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_torch_encoder_sequence_first_attention_is_multiheadattention(exporter):
    """nn.TransformerEncoder (batch_first, its fast path off for TorchScript) computes attention
    sequence-first inside: P·V goes Transpose [2, 0, 1, 3] into an (S·B, N·H) Gemm. For onnxruntime
    below opset 23 it becomes MultiHeadAttention, whose (B, S, N·H) is transposed by [1, 0, 2] for
    that Gemm; equal to the original at two batches (and two sequence lengths where it has them)."""
    import hf_corpus
    import numpy as np
    from helpers import ops, run

    src = onnx.load(_export("torch-encoder", exporter))
    out, rep = optimize(src, target="onnxruntime")
    att = next(r for r in rep.passes if r.name == "attention-fusion")
    assert att.counts == {"attention-into-MultiHeadAttention": hf_corpus.SIZES["tiny"][1]} and not att.refusals
    assert "Softmax" not in ops(out)
    mha = [n for n in out.graph.node if n.op_type == "MultiHeadAttention"]
    readers = [n for n in out.graph.node if set(n.input) & {m.output[0] for m in mha}]
    assert [(n.op_type, list(n.attribute[0].ints)) for n in readers] == [("Transpose", [1, 0, 2])] * len(mha)
    width = hf_corpus.SIZES["tiny"][0]
    # TorchScript traces nn.MultiheadAttention's sequence length into its Reshapes (16, the example's)
    sizes = ((1, 16), (3, 16)) if exporter == "torchscript" else ((1, 5), (3, 12))
    for batch, sequence in sizes:
        x = {"x": np.random.default_rng(sequence).standard_normal((batch, sequence, width)).astype(np.float32)}
        for got, ref in zip(run(out, x), run(src, x), strict=True):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
