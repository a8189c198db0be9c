"""Real architectures written as torch nn.Modules (torchvision does not import beside torch here).

Used by models/build_samples.py, the export tests, and benchmarks/. Weights are
random; BatchNorm statistics are randomized so folding them is not a no-op.
Needs torch (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


# ---- ResNet ------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.down = None
        if stride != 1 or cin != c:
            self.down = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int = 1) -> None:
        super().__init__()
        out = c * 4
        self.conv1 = nn.Conv2d(cin, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.down = None
        if stride != 1 or cin != out:
            self.down = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self, block=Bottleneck, layers=(3, 4, 6, 3), width: int = 64, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        cin = width
        stages = []
        for i, n in enumerate(layers):
            c = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, c, 2 if (j == 0 and i > 0) else 1))
                cin = c * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def resnet50() -> nn.Module:
    return randomize_bn(ResNet(Bottleneck, (3, 4, 6, 3)))


def resnet18(width: int = 64, num_classes: int = 1000) -> nn.Module:
    return randomize_bn(ResNet(BasicBlock, (2, 2, 2, 2), width, num_classes))


# ---- MobileNetV2 -------------------------------------------------------------------------


def _cbr(cin, cout, k=3, s=1, g=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [_cbr(cin, hidden, 1)]
        layers += [
            _cbr(hidden, hidden, 3, stride, hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()

        def ch(c):
            return max(8, int(c * width + 4) // 8 * 8)

        cin = ch(32)
        layers = [_cbr(3, cin, 3, 2)]
        for t, c, n, s in self.CFG:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = ch(1280) if width > 1 else 1280
        layers.append(_cbr(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def mobilenet_v2(width: float = 1.0, num_classes: int = 1000) -> nn.Module:
    return randomize_bn(MobileNetV2(width, num_classes))


# ---- other shapes BN appears in ------------------------------------------------------------


class Decoder(nn.Module):
    """ConvTranspose upsampling decoder with BN (incl. a grouped ConvTranspose)."""

    def __init__(self) -> None:
        super().__init__()
        self.up1 = nn.ConvTranspose2d(32, 24, 4, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.up2 = nn.ConvTranspose2d(24, 16, 4, 2, 1, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.out = nn.Conv2d(16, 3, 3, 1, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.up1(x)))
        x = torch.relu(self.bn2(self.up2(x)))
        return torch.sigmoid(self.out(x))


class GemmHead(nn.Module):
    """MLP head: Linear -> BatchNorm1d -> ReLU, twice."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn1 = nn.Linear(64, 48), nn.BatchNorm1d(48)
        self.fc2, self.bn2 = nn.Linear(48, 32, bias=False), nn.BatchNorm1d(32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.fc1(x)))
        x = torch.relu(self.bn2(self.fc2(x)))
        return self.fc3(x)


class SplitBN(nn.Module):
    """BN expressed as per-channel Mul and Add (what PaddlePaddle exports), also bias-Add-then-Mul."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.c2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.s1 = nn.Parameter(torch.rand(1, 16, 1, 1) + 0.5)
        self.b1 = nn.Parameter(torch.randn(1, 16, 1, 1) * 0.1)
        self.s2 = nn.Parameter(torch.rand(16, 1, 1) + 0.5)
        self.b2 = nn.Parameter(torch.randn(16, 1, 1) * 0.1)

    def forward(self, x):
        x = torch.relu(self.c1(x) * self.s1 + self.b1)
        return torch.relu((self.c2(x) + self.b2) * self.s2)


class ShuffleBlock(nn.Module):
    """ShuffleNetV2's unit (torchvision's layout): split or downsample, two branches, concat, channel shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        c = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, c, 1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        bin_ = cin if stride > 1 else c
        self.branch2 = nn.Sequential(
            nn.Conv2d(bin_, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False),
            nn.BatchNorm2d(c),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.size()
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class ShuffleNetV2(nn.Module):
    """torchvision's shufflenet_v2_x1_0 (stages 4, 8, 4; widths 24, 116, 232, 464, 1024)."""

    def __init__(self, stages=(4, 8, 4), widths=(24, 116, 232, 464, 1024), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for n, cout in zip(stages, widths[1:4]):
            layers += [ShuffleBlock(cin, cout, 2)] + [ShuffleBlock(cout, cout, 1) for _ in range(n - 1)]
            cin = cout
        self.stages = nn.Sequential(*layers)
        self.conv5 = nn.Sequential(
            nn.Conv2d(cin, widths[4], 1, bias=False), nn.BatchNorm2d(widths[4]), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        x = self.conv5(self.stages(self.maxpool(self.conv1(x))))
        return self.fc(x.mean([2, 3]))


# ---- export --------------------------------------------------------------------------------


def export(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    exporter: str = "legacy",
    fold: bool = False,
    dynamic_batch: bool = False,
    opset: int = 17,
) -> Path:
    """Export with the legacy TorchScript exporter (``do_constant_folding=fold``) or the dynamo
    exporter (``optimize=fold``)."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                do_constant_folding=fold,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
                opset_version=opset,
            )
        else:
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=True,
                    optimize=fold,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic_batch else None,
                    external_data=False,
                )
    return path


# ---- transformers (written the way HF-style code writes them: shapes from x.size()) --------


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        self.h, self.d, self.causal = heads, d, causal
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def split(self, t):
        b, s, _ = t.size()
        return t.view(b, s, self.h, self.d // self.h).permute(0, 2, 1, 3)

    def forward(self, x, mask=None):
        b, s = x.size(0), x.size(1)
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        att = torch.matmul(q, k.transpose(-1, -2)) / (self.d // self.h) ** 0.5
        if self.causal:
            causal = torch.tril(torch.ones(s, s, dtype=torch.bool, device=x.device)).view(1, 1, s, s)
            att = att.masked_fill(~causal, float("-inf"))
        if mask is not None:
            att = att + mask
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).permute(0, 2, 1, 3).contiguous()
        return self.o(y.view(b, s, self.d))


class TransformerLayer(nn.Module):
    def __init__(self, d: int, heads: int, causal: bool = False, pre_norm: bool = False) -> None:
        super().__init__()
        self.att = SelfAttention(d, heads, causal)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.pre = pre_norm

    def forward(self, x, mask=None):
        if self.pre:
            x = x + self.att(self.ln1(x), mask)
            return x + self.ff(self.ln2(x))
        x = self.ln1(x + self.att(x, mask))
        return self.ln2(x + self.ff(x))


class BertEncoder(nn.Module):
    """BERT-style: token + position + type embeddings, attention mask from the input ids, N post-norm layers."""

    def __init__(self, vocab: int = 1000, d: int = 256, layers: int = 4, heads: int = 4, max_len: int = 512) -> None:
        super().__init__()
        self.tok, self.pos, self.typ = nn.Embedding(vocab, d), nn.Embedding(max_len, d), nn.Embedding(2, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(TransformerLayer(d, heads) for _ in range(layers))
        self.pool = nn.Linear(d, d)

    def forward(self, ids):
        b, s = ids.size(0), ids.size(1)
        pos = torch.arange(s, device=ids.device).unsqueeze(0).expand(b, s)
        x = self.ln(self.tok(ids) + self.pos(pos) + self.typ(torch.zeros_like(ids)))
        mask = (1.0 - (ids > 0).float()).view(b, 1, 1, s) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return torch.tanh(self.pool(x[:, 0]))


class GPT2Decoder(nn.Module):
    """GPT-2-style: causal mask built from the run-time sequence length, pre-norm layers, tied LM head."""

    def __init__(self, vocab: int = 1000, d: int = 256, layers: int = 4, heads: int = 4, max_len: int = 512) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_len, d)
        self.layers = nn.ModuleList(TransformerLayer(d, heads, causal=True, pre_norm=True) for _ in range(layers))
        self.ln = nn.LayerNorm(d)

    def forward(self, ids):
        s = ids.size(1)
        x = self.tok(ids) + self.pos(torch.arange(s, device=ids.device)).unsqueeze(0)
        for layer in self.layers:
            x = layer(x)
        return torch.matmul(self.ln(x), self.tok.weight.t())


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d) + 0.1 * torch.randn(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class LlamaLayer(nn.Module):
    """HF LLaMA-style: RMSNorm, rotary q/k after the split into heads, KV cache concatenated on the
    length axis, an additive causal mask, SwiGLU."""

    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.h, self.hd = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up, self.down = (
            nn.Linear(d, ff, bias=False),
            nn.Linear(d, ff, bias=False),
            nn.Linear(ff, d, bias=False),
        )
        self.n1, self.n2 = RMSNorm(d), RMSNorm(d)

    def forward(self, x, cos, sin, mask, past_k, past_v):
        b, s, d = x.shape
        h = self.n1(x)
        q, k, v = (t.view(b, s, self.h, self.hd).transpose(1, 2) for t in (self.q(h), self.k(h), self.v(h)))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / self.hd**0.5 + mask, dim=-1)
        x = x + self.o(torch.matmul(att, v).transpose(1, 2).reshape(b, s, d))
        h = self.n2(x)
        return x + self.down(nn.functional.silu(self.gate(h)) * self.up(h)), k, v


class LlamaDecoder(nn.Module):
    """A decoder with an explicit KV cache: ``forward(ids, k0, v0, k1, v1, …)`` returns the logits and
    the present keys and values; positions (and the rotary tables' rows) start at the past length."""

    def __init__(
        self, vocab: int = 256, d: int = 64, layers: int = 2, heads: int = 4, ff: int = 128, max_len: int = 512
    ) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaLayer(d, heads, ff) for _ in range(layers))
        self.norm, self.head = RMSNorm(d), nn.Linear(d, vocab, bias=False)
        hd = d // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(max_len).float(), inv)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1), persistent=False)
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1), persistent=False)

    def forward(self, ids, *past):
        s, p = ids.shape[1], past[0].shape[2]
        pos = torch.arange(p, p + s, device=ids.device)
        cos, sin = self.cos[pos][None, None], self.sin[pos][None, None]
        cols = torch.arange(p + s, device=ids.device)[None, :]
        mask = torch.where(cols > pos[:, None], torch.tensor(float("-inf")), torch.tensor(0.0))[None, None]
        x, present = self.emb(ids), []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (self.head(self.norm(x)), *present)


def export_llama(
    model: LlamaDecoder, path: str | Path, exporter: str = "legacy", opset: int = 18, seq: int = 5, past: int = 3
) -> Path:
    """Export with dynamic batch, sequence and past lengths; inputs ``ids, past.{i}.key/value``,
    outputs ``logits, present.{i}.key/value``."""
    path = Path(path)
    n, heads, hd = len(model.layers), model.layers[0].h, model.layers[0].hd
    ids = torch.randint(0, model.emb.num_embeddings, (2, seq))
    cache = [torch.randn(2, heads, past, hd) for _ in range(2 * n)]
    kv = [f"past.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    outs = ["logits"] + [f"present.{i}.{kind}" for i in range(n) for kind in ("key", "value")]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            axes = {"ids": {0: "batch", 1: "seq"}, **{k: {0: "batch", 2: "past"} for k in kv}}
            torch.onnx.export(
                model,
                (ids, *cache),
                str(path),
                dynamo=False,
                input_names=["ids", *kv],
                output_names=outs,
                dynamic_axes=axes,
                opset_version=opset,
            )
        else:
            import contextlib
            import io

            batch, s, p = (
                torch.export.Dim("batch", min=1, max=64),
                torch.export.Dim("seq", min=1, max=256),
                torch.export.Dim("past", min=1, max=256),
            )
            shapes = ({0: batch, 1: s}, *({0: batch, 2: p} for _ in kv))
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(
                    model,
                    (ids, *cache),
                    str(path),
                    dynamo=True,
                    input_names=["ids", *kv],
                    output_names=outs,
                    dynamic_shapes=(shapes[0], tuple(shapes[1:])),
                    opset_version=opset,
                )
    return path


class ViT(nn.Module):
    """ViT: patch-embedding Conv, a class token expanded to the batch, pre-norm layers."""

    def __init__(
        self, image: int = 224, patch: int = 16, d: int = 192, layers: int = 4, heads: int = 3, classes: int = 1000
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, d, patch, patch)
        n = (image // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.layers = nn.ModuleList(TransformerLayer(d, heads, pre_norm=True) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x):
        b = x.size(0)
        x = self.embed(x)
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos
        for layer in self.layers:
            x = layer(x)
        return self.head(self.ln(x)[:, 0])


class YoloLike(nn.Module):
    """YOLO-style detector: CSP-ish Conv-BN-SiLU backbone, upsample + concat neck, heads reshaped with x.shape."""

    def __init__(self, classes: int = 20, anchors: int = 3, w: int = 16) -> None:
        super().__init__()

        def cbs(cin, cout, k=3, s=1):
            return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

        self.na, self.no = anchors, classes + 5
        self.b1 = nn.Sequential(cbs(3, w, 3, 2), cbs(w, 2 * w, 3, 2), cbs(2 * w, 2 * w))
        self.b2 = nn.Sequential(cbs(2 * w, 4 * w, 3, 2), cbs(4 * w, 4 * w))
        self.b3 = nn.Sequential(cbs(4 * w, 8 * w, 3, 2), cbs(8 * w, 8 * w))
        self.lat = cbs(8 * w, 4 * w, 1)
        self.fuse = cbs(8 * w, 4 * w)
        self.h1 = nn.Conv2d(4 * w, anchors * self.no, 1)
        self.h2 = nn.Conv2d(8 * w, anchors * self.no, 1)

    def head(self, conv, x):
        y = conv(x)
        b, _, h, w = y.shape
        y = y.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2).contiguous()
        return y.view(b, -1, self.no)

    def forward(self, x):
        p3 = self.b2(self.b1(x))
        p4 = self.b3(p3)
        up = nn.functional.interpolate(self.lat(p4), size=(p3.shape[2], p3.shape[3]), mode="nearest")
        n3 = self.fuse(torch.cat([up, p3], 1))
        return torch.cat([self.head(self.h1, n3), self.head(self.h2, p4)], 1)


def export_dynamic(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    axes: dict[int, str],
    exporter: str = "legacy",
    opset: int = 17,
    fold: bool = True,
) -> Path:
    """Export with named dynamic axes on the single input (and the output's batch)."""
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "legacy":
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                do_constant_folding=fold,
                input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": axes, "output": {0: axes.get(0, "batch")}} if 0 in axes else {"input": axes},
                opset_version=opset,
            )
        else:
            import contextlib
            import io

            dims = {i: torch.export.Dim(n, min=2, max=4096) for i, n in axes.items()}
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    dynamo=True,
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_shapes={list(__import__("inspect").signature(model.forward).parameters)[0]: dims},
                )
    return path
