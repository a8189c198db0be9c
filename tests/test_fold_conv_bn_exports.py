"""fold-conv-bn on real torch exports: ResNet and MobileNetV2 with BN kept (both exporters),
BN split into Mul/Add, a ConvTranspose decoder, a Gemm head with BN."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from helpers import ROOT, optimize, run

torch = pytest.importorskip("torch")
sys.path.insert(0, str(ROOT / "models"))
import archs  # noqa: E402

LINEAR = {"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv"}
AFFINE = {"BatchNormalization", "Mul", "Add", "Sub", "Div"}


def leftovers(model: onnx.ModelProto) -> list[str]:
    """BN or constant per-channel affine ops directly after a linear op."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consts = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"
    }
    bad = []
    for n in model.graph.node:
        if n.op_type not in AFFINE:
            continue
        srcs = [producers.get(i) for i in n.input if i not in consts]
        if n.op_type != "BatchNormalization" and len(srcs) != 1:
            continue  # two tensor operands: a residual, not per-channel affine
        if n.op_type in ("Add",) and any(p is not None and p.op_type == "MatMul" for p in srcs):
            continue  # MatMul's own bias
        if srcs and srcs[0] is not None and srcs[0].op_type in LINEAR - {"MatMul"}:
            bad.append(f"{srcs[0].op_type}->{n.op_type}")
    return bad


CASES = {
    "resnet-legacy": (lambda: archs.resnet18(width=16, num_classes=10), (1, 3, 64, 64), "legacy"),
    "resnet-dynamo": (lambda: archs.resnet18(width=16, num_classes=10), (1, 3, 64, 64), "dynamo"),
    "mobilenetv2-legacy": (lambda: archs.mobilenet_v2(0.35, 10), (1, 3, 64, 64), "legacy"),
    "mobilenetv2-dynamo": (lambda: archs.mobilenet_v2(0.35, 10), (1, 3, 64, 64), "dynamo"),
    "split-bn": (lambda: archs.SplitBN().eval(), (1, 3, 16, 16), "legacy"),
    "decoder": (lambda: archs.randomize_bn(archs.Decoder()), (1, 32, 8, 8), "legacy"),
    "gemm-head": (lambda: archs.randomize_bn(archs.GemmHead()), (4, 64), "legacy"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_export(case, tmp_path):
    make, shape, exporter = CASES[case]
    torch.manual_seed(0)
    net = make()
    x = torch.randn(*shape)
    src = archs.export(net, x, tmp_path / "m.onnx", exporter=exporter, fold=False)
    original = onnx.load(src)
    n_bn = sum(n.op_type == "BatchNormalization" for n in original.graph.node)
    assert n_bn > 0 or case == "split-bn"
    out, report = optimize(src, tmp_path / "o.onnx")
    fold = next(r for r in report.passes if r.name == "fold-conv-bn")
    assert fold.status == "applied", fold.reason
    assert fold.rewrites >= n_bn
    assert leftovers(out) == []
    assert "BatchNormalization" not in [n.op_type for n in out.graph.node]
    assert report.final_check is not None and report.final_check.ok
    feeds = {original.graph.input[0].name: x.numpy()}
    np.testing.assert_allclose(run(out, feeds)[0], net(x).detach().numpy(), rtol=1e-3, atol=1e-4)


def test_mobilenet_onnxruntime_target_fuses(tmp_path):
    net = archs.mobilenet_v2(0.35, 10)
    x = torch.randn(1, 3, 64, 64)
    src = archs.export(net, x, tmp_path / "m.onnx", fold=False)
    out, report = optimize(src, target="onnxruntime")
    types = [n.op_type for n in out.graph.node]
    assert "FusedConv" in types and "Clip" not in types  # every ReLU6 went into a FusedConv
    assert report.final_check.ok
