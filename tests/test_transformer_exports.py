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
    (a, e) for a in ("bert", "vit", "gpt2", "t5-encoder", "whisper-encoder", "llama") for e in ("torchscript", "dynamo")
]
CORPUS += [("clip-text", "torchscript"), ("distilbert", "dynamo"), ("llama-gqa", "dynamo"), ("torch-encoder", "dynamo")]


def _export(name: str, exporter: str):
    import hf_corpus

    try:
        return hf_corpus.build(name, exporter)
    except Exception as e:  # noqa: BLE001 - an exporter that cannot export the architecture
        pytest.skip(f"{exporter} cannot export {name}: {str(e).splitlines()[0][:100]}")


@pytest.mark.slow
@pytest.mark.parametrize("target,opset", [("onnxruntime", None), ("portable", 23)])
def test_no_candidate_is_left_in_silence(target, opset):
    import hf_corpus

    blocks = fused = needs_opset = 0
    for name, exporter in CORPUS:
        model = onnx.load(_export(name, exporter))
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
        done, _, why = hf_corpus.outcome(rep, "attention")
        fused += done
        needs_opset += sum(n for w, n in why.items() if "--opset 23 enables it" in w)
    # at opset 23 the standard Attention takes every form of the corpus; at the exporters' opsets the
    # (batch, heads, length, head size) form (LLaMA, nn.TransformerEncoder) waits for --opset 23 and says so
    assert fused + needs_opset >= 0.9 * blocks, (
        f"{fused} of {blocks} attention blocks fused, {needs_opset} need opset 23"
    )
    if target == "portable":
        assert fused >= 0.9 * blocks
