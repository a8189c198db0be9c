"""Transformers as people export them: the ``transformers`` package's architectures, built from
their configs (random weights, nothing downloaded), plus ``torch.nn.TransformerEncoder``, exported
with either torch exporter, dynamic batch and sequence.

    build("bert", "torchscript", size="tiny") -> Path of the cached .onnx

``tiny`` (2 layers, width 64) is what the tests export; ``small`` (4 layers, width 256) what the
benchmark times. Exports are cached in benchmarks/cache/transformers.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "benchmarks" / "cache" / "transformers"
ARCHS = [
    "bert",
    "distilbert",
    "roberta",
    "vit",
    "deit",
    "clip-text",
    "clip-vision",
    "whisper-encoder",
    "t5-encoder",
    "gpt2",
    "llama",
    "llama-gqa",
    "torch-encoder",
]
SIZES = {"tiny": (64, 2, 4), "small": (256, 4, 4)}  # width, layers, heads


def _hf(name: str, width: int, layers: int, heads: int):
    import transformers as T

    ff, vocab = 2 * width, 1000
    if name == "bert":
        return T.BertModel(
            T.BertConfig(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                intermediate_size=ff,
                vocab_size=vocab,
            )
        ), "ids"
    if name == "distilbert":
        return T.DistilBertModel(
            T.DistilBertConfig(dim=width, n_layers=layers, n_heads=heads, hidden_dim=ff, vocab_size=vocab)
        ), "ids"
    if name == "roberta":
        return T.RobertaModel(
            T.RobertaConfig(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                intermediate_size=ff,
                vocab_size=vocab,
            )
        ), "ids"
    if name in ("vit", "deit"):
        C, M = (T.ViTConfig, T.ViTModel) if name == "vit" else (T.DeiTConfig, T.DeiTModel)
        return M(
            C(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                intermediate_size=ff,
                image_size=32,
                patch_size=8,
            )
        ), "image"
    if name == "clip-text":
        return T.CLIPTextModel(
            T.CLIPTextConfig(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                intermediate_size=ff,
                vocab_size=vocab,
            )
        ), "ids"
    if name == "clip-vision":
        return T.CLIPVisionModel(
            T.CLIPVisionConfig(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                intermediate_size=ff,
                image_size=32,
                patch_size=8,
            )
        ), "image"
    if name == "whisper-encoder":
        cfg = T.WhisperConfig(
            d_model=width,
            encoder_layers=layers,
            encoder_attention_heads=heads,
            encoder_ffn_dim=ff,
            decoder_layers=1,
            decoder_attention_heads=heads,
            num_mel_bins=16,
            max_source_positions=32,
        )
        return T.WhisperModel(cfg).get_encoder(), "mel"
    if name == "t5-encoder":
        return T.T5EncoderModel(
            T.T5Config(
                d_model=width, num_layers=layers, num_heads=heads, d_ff=ff, d_kv=width // heads, vocab_size=vocab
            )
        ), "ids"
    if name == "gpt2":
        return T.GPT2Model(T.GPT2Config(n_embd=width, n_layer=layers, n_head=heads, vocab_size=vocab)), "ids"
    if name in ("llama", "llama-gqa"):
        kv = heads if name == "llama" else heads // 2
        return T.LlamaModel(
            T.LlamaConfig(
                hidden_size=width,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=kv,
                intermediate_size=ff,
                vocab_size=vocab,
            )
        ), "ids"
    if name == "torch-encoder":
        import torch

        layer = torch.nn.TransformerEncoderLayer(width, heads, ff, activation="gelu", batch_first=True)
        return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False), "embedded"
    raise ValueError(f"unknown architecture {name}")


DECODERS = ("gpt2", "llama", "llama-gqa")  # the architectures ``cache=True`` exports


def build(
    name: str, exporter: str = "torchscript", *, size: str = "tiny", opset: int | None = None, cache: bool = False
) -> Path:
    """The cached export of ``name`` (``exporter``: torchscript or dynamo; ``opset``: the exporter's
    default when None). ``cache`` (a decoder of ``DECODERS``): with a KV cache, as a decoder is
    deployed: inputs ``x`` and ``past.{i}.key/value`` (batch, kv heads, past, head size), outputs
    ``y`` and ``present.{i}.key/value``; dynamic batch, sequence and past length."""
    import torch

    width, layers, heads = SIZES[size]
    path = CACHE / f"{name}-{exporter}-{size}-op{opset or 'default'}{'-cache' if cache else ''}.onnx"
    if path.exists():
        return path
    torch.manual_seed(0)
    model, kind = _hf(name, width, layers, heads)
    model.eval()
    if cache:
        return _export_with_cache(model, name, exporter, opset, path)
    example, axes = _example(kind, width)

    class Wrapped(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            out = self.m(x)
            return out if isinstance(out, torch.Tensor) else out[0]

    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), _no_fastpath(), torch.no_grad():
        if exporter == "torchscript":
            torch.onnx.export(
                Wrapped(model),
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": dict(axes)},
                opset_version=opset or 17,
            )
        else:
            dims = {i: torch.export.Dim(n, min=2, max=256) for i, n in axes.items()}
            kw = {"opset_version": opset} if opset else {}
            torch.onnx.export(
                Wrapped(model),
                (example,),
                str(path),
                dynamo=True,
                input_names=["x"],
                output_names=["y"],
                dynamic_shapes={"x": dims},
                external_data=False,
                **kw,
            )
    return path


def _export_with_cache(model, name: str, exporter: str, opset: int | None, path: Path) -> Path:
    """Export a decoder taking and returning its KV cache as flat tensors (``build``'s ``cache``)."""
    import torch
    from transformers import DynamicCache

    if name not in DECODERS:
        raise ValueError(f"{name} is not a decoder: no KV cache")
    cfg = model.config
    layers = cfg.num_hidden_layers
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head = cfg.hidden_size // cfg.num_attention_heads

    class WithCache(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, ids, past):
            try:
                c = DynamicCache(config=cfg)
            except TypeError:  # transformers 4
                c = DynamicCache()
            for i in range(layers):
                c.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(ids, past_key_values=c, use_cache=True)
            kv = out.past_key_values
            if hasattr(kv, "layers"):
                pairs = [(x.keys, x.values) for x in kv.layers]
            else:  # transformers 4
                pairs = zip(kv.key_cache, kv.value_cache, strict=True)
            return (out.last_hidden_state, *[t for pair in pairs for t in pair])

    names = [f"past.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    outs = ["y"] + [n.replace("past", "present") for n in names]
    ids = torch.randint(1, 1000, (2, 5))
    past = tuple(torch.randn(2, kv_heads, 3, head) for _ in names)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet(), _no_fastpath(), torch.no_grad():
        if exporter == "torchscript":
            axes = {"x": {0: "batch", 1: "sequence"}, **{n: {0: "batch", 2: "past"} for n in names}}
            torch.onnx.export(
                WithCache(model),
                (ids, past),
                str(path),
                dynamo=False,
                input_names=["x", *names],
                output_names=outs,
                dynamic_axes=axes,
                opset_version=opset or 17,
            )
        else:
            b, s = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("sequence", min=1, max=256)
            p = torch.export.Dim("past", min=1, max=256)
            torch.onnx.export(
                WithCache(model),
                (ids, past),
                str(path),
                dynamo=True,
                input_names=["x", *names],
                output_names=outs,
                dynamic_shapes=({0: b, 1: s}, tuple({0: b, 2: p} for _ in names)),
                external_data=False,
                **({"opset_version": opset} if opset else {}),
            )
    return path


@contextlib.contextmanager
def _no_fastpath():
    """nn.TransformerEncoder's inference fast path (one fused aten op) off, as people exporting it
    with TorchScript turn it off: that exporter has no conversion for the fused op."""
    import torch

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


@contextlib.contextmanager
def _quiet():
    """The exporters' chatter off, Python's and what torch's C++ writes to the file descriptors
    (its IR graph when an export fails); the exception itself still reaches the caller."""
    from rooftop._compat import quiet_fds

    with warnings.catch_warnings(), quiet_fds():
        warnings.simplefilter("ignore")
        yield


def _example(kind: str, width: int):
    import torch

    if kind == "ids":
        return torch.randint(1, 1000, (2, 16)), {0: "batch", 1: "sequence"}
    if kind == "image":
        return torch.randn(2, 3, 32, 32), {0: "batch"}
    if kind == "mel":
        return torch.randn(2, 16, 64), {0: "batch"}
    return torch.randn(2, 16, width), {0: "batch", 1: "sequence"}


def candidates(model) -> dict[str, int]:
    """What a fusion pass must fuse or refuse by name, counted in the model as exported: Softmaxes
    that read a product of two activations (attention), ReduceMeans read by ``x - mean`` (LayerNorm),
    Erfs of ``x/√2`` and Tanhs of ``√(2/π)·(...)`` (GELU)."""
    import numpy as np
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if np.prod(t.dims) <= 1}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    big = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)

    def scalar_of(name):
        v = consts.get(name)
        return float(np.asarray(v).reshape(-1)[0]) if v is not None and np.asarray(v).size == 1 else None

    def reads_product(t, depth=0):
        n = producer.get(t)
        if n is None or depth > 6:
            return False
        if n.op_type == "MatMul":
            return all(i not in big and i not in consts for i in n.input[:2])
        if n.op_type in ("Add", "Where", "Div", "Mul", "Cast"):
            return any(i not in consts and i not in big and reads_product(i, depth + 1) for i in n.input)
        return False

    out = {"attention": 0, "layernorm": 0, "gelu": 0}
    for n in model.graph.node:
        if n.op_type == "Softmax" and reads_product(n.input[0]):
            out["attention"] += 1
        elif n.op_type == "ReduceMean" and any(
            r.op_type == "Sub" and r.input[1] == n.output[0] for r in readers.get(n.output[0], [])
        ):
            out["layernorm"] += 1
        elif n.op_type in ("Erf", "Tanh"):
            p = producer.get(n.input[0])
            want = (1.41421356, 0.70710678) if n.op_type == "Erf" else (0.79788456,)
            if (
                p is not None
                and p.op_type in ("Div", "Mul")
                and any(s is not None and any(abs(s - w) < 1e-3 for w in want) for s in map(scalar_of, p.input))
            ):
                out["gelu"] += 1
    return out


PASS_OF = {"attention": "attention-fusion", "layernorm": "norm-fusion", "gelu": "gelu-fusion"}


def outcome(report, kind: str) -> tuple[int, int, dict[str, int]]:
    """(fused, refused, refusals by reason) of ``kind``'s pass in an optimize report (first run)."""
    rec = next((r for r in report.passes if r.name == PASS_OF[kind]), None)
    if rec is None:
        return 0, 0, {}
    prefix = {"attention": "attention-into", "layernorm": "layernorm-into", "gelu": "gelu-"}[kind]
    fused = sum(v for k, v in rec.counts.items() if k.startswith(prefix) or (kind == "layernorm" and "layernorm" in k))
    if kind == "layernorm":  # a residual LayerNorm is counted twice (LayerNormalization, then its Skip form)
        fused = sum(v for k, v in rec.counts.items() if k.startswith("layernorm-into"))
    refusals = {why: len(nodes) for why, nodes in rec.refusals.items()}
    return fused, sum(refusals.values()), refusals


__all__ = ["ARCHS", "CACHE", "DECODERS", "SIZES", "build", "candidates", "outcome"]
