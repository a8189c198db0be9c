"""A model whose weights exceed 2 GB goes through optimize (external data in, external data out).

The weights are streamed to the data file in slices, and the model is checked from the files by
onnxruntime one session at a time, so the test itself never holds a weight twice. The fold
(a per-column Mul into the MatMul before it) rewrites a small weight; the two big ones pass
through untouched, as most of an LLM's weights do.
"""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from helpers import init, make_model, optimize, vi
from onnx import TensorProto, helper

from rooftop.runtime import make_session

K, N = 8192, 33000  # two 1.08 GB weights: 2.16 GB in all, over protobuf's 2 GiB limit
S = 256  # the small weight the fold rewrites


def external(name: str, dims: tuple[int, int], location: str, offset: int) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims), data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(dims[0] * dims[1] * 4))):
        e = t.external_data.add()
        e.key, e.value = key, value
    return t


def write_big_model(d) -> None:
    """big.onnx + big.onnx.data, the weights written 1024 rows at a time."""
    tensors = []
    with open(d / "big.onnx.data", "wb") as f:
        for i, (name, dims) in enumerate((("w1", (K, N)), ("w2", (N, K)))):
            tensors.append(external(name, dims, "big.onnx.data", f.tell()))
            r = np.random.default_rng(i)
            for row in range(0, dims[0], 1024):
                f.write((r.standard_normal((min(1024, dims[0] - row), dims[1]), dtype=np.float32) * 0.01).tobytes())
    r = np.random.default_rng(2)
    scale = (r.random(K, dtype=np.float32) + 0.5).astype(np.float32)
    w0 = (r.standard_normal((S, K), dtype=np.float32) * 0.05).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h0"]),
        helper.make_node("Mul", ["h0", "scale"], ["hs"]),
        helper.make_node("MatMul", ["hs", "w1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [1, S])], [vi("y", [1, K])], [init("scale", scale), init("w0", w0)])
    m.graph.initializer.extend(tensors)
    onnx.save(m, d / "big.onnx")


def run_file(path, x: np.ndarray) -> np.ndarray:
    sess = make_session(None, path=str(path))
    y = sess.run(None, {"x": x})[0]
    del sess
    gc.collect()
    return y


@pytest.mark.slow
def test_over_2gb_model(tmp_path):
    write_big_model(tmp_path)
    src, out = tmp_path / "big.onnx", tmp_path / "out.onnx"
    model, report = optimize(src, out)
    ops = [nd.op_type for nd in model.graph.node]
    del model
    gc.collect()
    fold = next(p for p in report.passes if p.name == "fold-conv-bn")
    assert fold.status == "applied" and fold.rewrites == 1 and fold.verified
    assert report.final_check is not None and report.final_check.ok
    assert ops == ["MatMul", "MatMul", "MatMul"]
    assert (tmp_path / "out.onnx.data").stat().st_size > 2**31
    assert out.stat().st_size < 1 << 20
    assert [nd.op_type for nd in onnx.load(out, load_external_data=False).graph.node] == ["MatMul"] * 3
    x = np.ones((1, S), np.float32)
    np.testing.assert_allclose(run_file(out, x), run_file(src, x), rtol=1e-4, atol=1e-4)
