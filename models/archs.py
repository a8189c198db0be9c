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
        layers += [_cbr(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
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
