"""Build the bundled sample models (committed .onnx files; using them needs no torch).

    pip install torch==2.13.0   # the CPU wheel on disk
    python models/build_samples.py

Weights are random (seeded): the samples exist to exercise the passes, not to classify.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _torch():
    try:
        import torch
    except ImportError:
        sys.exit("models/build_samples.py needs torch: pip install torch==2.13.0")

    torch.manual_seed(0)
    return torch


def build_cnn():
    """A small ResNet (3 basic blocks, 32x32 input) with BatchNorm statistics that are not trivial."""
    _torch()
    import torch
    from archs import BasicBlock, randomize_bn
    from torch import nn

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.layer1 = BasicBlock(16, 16, 1)
            self.layer2 = BasicBlock(16, 32, 2)
            self.layer3 = BasicBlock(32, 64, 2)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
            return self.fc(x)

    return randomize_bn(SmallResNet())


def build_odd():
    torch = _torch()
    nn = torch.nn

    class OddNet(nn.Module):
        """Pruned-looking channel counts: a stem, residual adds, a depthwise conv, a concat and a head."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 23, 3, 1, 1), nn.ReLU())
            self.c1 = nn.Conv2d(23, 45, 3, 2, 1)
            self.c2 = nn.Conv2d(45, 45, 3, 1, 1)
            self.dw = nn.Conv2d(45, 45, 3, 1, 1, groups=45)
            self.pw = nn.Conv2d(45, 91, 1)
            self.side = nn.Conv2d(45, 37, 1)
            self.c3 = nn.Conv2d(128, 181, 3, 2, 1)
            self.fc = nn.Linear(181, 10)

        def forward(self, x):
            x = self.stem(x)
            x = torch.relu(self.c1(x))
            x = torch.relu(x + self.c2(x))
            y = torch.relu(self.pw(torch.relu(self.dw(x))))
            x = torch.cat([y, self.side(x)], 1)
            x = torch.relu(self.c3(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return OddNet().eval()


def build_dynamic():
    torch = _torch()
    nn = torch.nn

    class TinyEncoder(nn.Module):
        """Attention with head splits written the PyTorch way (x.size(...) inside view)."""

        def __init__(self, d: int = 32, heads: int = 4) -> None:
            super().__init__()
            self.h, self.d = heads, d
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
            self.head = nn.Linear(d, 4)

        def forward(self, x):
            b, s = x.size(0), x.size(1)
            q, k, v = self.qkv(x).chunk(3, dim=-1)
            q = q.view(b, s, self.h, self.d // self.h).transpose(1, 2)
            k = k.view(b, s, self.h, self.d // self.h).transpose(1, 2)
            v = v.view(b, s, self.h, self.d // self.h).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / (self.d // self.h) ** 0.5, dim=-1)
            o = (a @ v).transpose(1, 2).contiguous().view(x.size(0), x.size(1), self.d)
            x = self.ln(x + self.proj(o))
            x = x + self.ff(x)
            return self.head(x.mean(1)).view(x.size(0), -1)

    return TinyEncoder().eval()


def report(path: Path) -> None:
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    print(f"wrote {path.relative_to(HERE.parent)}: {len(m.graph.node)} nodes, {os.path.getsize(path):,} bytes")


def quantize(src: Path, dst: Path, shape: tuple[int, ...]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.data = iter([{"input": rng.standard_normal(shape).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
    report(dst)


def main() -> None:
    torch = _torch()
    x = torch.randn(1, 3, 32, 32)
    cnn = build_cnn()
    # BN kept, as a legacy export with do_constant_folding=False leaves it
    import archs

    report(archs.export(cnn, x, HERE / "resnet_bn.onnx", fold=False, dynamic_batch=True))
    report(
        archs.export_dynamic(
            build_dynamic(), torch.randn(2, 7, 32), HERE / "encoder_dynamic.onnx", {0: "batch", 1: "seq"}, fold=False
        )
    )
    report(archs.export(build_odd(), x, HERE / "odd_channels.onnx", fold=True))
    folded = archs.export(cnn, x, HERE / "_resnet_folded.onnx", fold=True)
    quantize(folded, HERE / "resnet_qdq_int8.onnx", (1, 3, 32, 32))
    folded.unlink()


if __name__ == "__main__":
    main()
