"""Builders and runners shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent

try:  # the tests that export real PyTorch models need torch; the pattern tests do not
    import torch  # noqa: F401

    HAS_TORCH = True
except ImportError:
    HAS_TORCH = False


def needs_torch(fn):
    """Skip a test that exports a PyTorch model where torch is not installed (it says so)."""
    import pytest

    return pytest.mark.skipif(not HAS_TORCH, reason="needs torch (pip install torch==2.13.0): exports a PyTorch model")(
        fn
    )


MODELS = ROOT / "models"


def vi(name: str, shape: Sequence[int | str | None] | None, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, None if shape is None else list(shape))


def init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[TensorProto] = (),
    opset: int = 17,
    extra_opsets: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra_opsets or {}).items()]
    m = helper.make_model(g, opset_imports=ops, producer_name="rooftop-tests")
    m.ir_version = 8
    # outputs declared without a shape (vi(name, None)) get the inferred one: the checker wants a shape
    if any(not o.type.tensor_type.HasField("shape") for o in m.graph.output):
        try:
            inferred = onnx.shape_inference.infer_shapes(m, data_prop=True)
            by_name = {o.name: o for o in inferred.graph.output}
            for o in m.graph.output:
                if not o.type.tensor_type.HasField("shape") and by_name[o.name].type.tensor_type.HasField("shape"):
                    o.CopyFrom(by_name[o.name])
        except Exception:  # noqa: BLE001 - tests of invalid graphs build them on purpose
            pass
    return m


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run in onnxruntime with its own graph optimizations off."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return s.run(None, dict(feeds))


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


FAST = ("--no-time", "--hardware", "xeon-avx512")


def cli(*args: str, cwd: Path | None = None, fast: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (exit codes, stderr, no traceback).

    ``fast``: no latency measurement and a built-in hardware profile, unless the test asks
    for them; the tests of timing and of the host profile pass ``fast=False``.
    """
    extra: tuple[str, ...] = ()
    if fast and "--list-passes" not in args and "--measure-hardware" not in args:
        extra = ("--no-time",) + (() if "--hardware" in args else ("--hardware", "xeon-avx512"))
    return subprocess.run(
        [sys.executable, "-m", "rooftop", *args, *extra], capture_output=True, text=True, cwd=cwd or ROOT, timeout=600
    )


def optimize(*args, **kwargs):
    """rooftop.optimize without timing and with a paper hardware profile unless asked otherwise."""
    import rooftop

    kwargs.setdefault("time", False)
    kwargs.setdefault("hardware", "xeon-avx512")
    return rooftop.optimize(*args, **kwargs)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def quantized_tolerance(original: onnx.ModelProto, feeds: dict, step: float) -> float:
    """The documented rule for float outputs of quantized models: one quantization step, or 1.1x
    as far as onnxruntime's own ORT_ENABLE_ALL execution of the original lands from the
    float-emulated reference on the same inputs."""
    from rooftop.runtime import make_session

    ref = make_session(original).run(None, feeds)[0]
    own = make_session(original, optimization="all").run(None, feeds)[0]
    return max(step * 1.0001, 1.1 * float(np.abs(own - ref).max()))


def small_transformer(name: str):
    """(module, example input, dynamic axes) of a tiny BERT-, GPT-2- or ViT-style net from
    models/archs.py (torch must be importable)."""
    import torch

    sys.path.insert(0, str(MODELS))
    import archs

    torch.manual_seed(0)
    if name == "bert":
        return (
            archs.BertEncoder(vocab=100, d=64, layers=2, heads=2),
            torch.randint(1, 100, (2, 12)),
            {0: "batch", 1: "seq"},
        )
    if name == "gpt2":
        return (
            archs.GPT2Decoder(vocab=100, d=64, layers=2, heads=2),
            torch.randint(1, 100, (2, 12)),
            {0: "batch", 1: "seq"},
        )
    return archs.ViT(image=32, patch=8, d=48, layers=2, heads=2, classes=10), torch.randn(2, 3, 32, 32), {0: "batch"}


def counted(n: int, kind: str = "rewrite"):
    """A PassResult of ``n`` rewrites of ``kind`` (for the test passes that rewrite by hand)."""
    from rooftop.passes.base import PassResult

    res = PassResult()
    res.count(kind, n)
    return res
