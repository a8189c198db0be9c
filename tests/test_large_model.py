"""A model whose weights exceed 2 GB goes through optimize (external data in, external data out)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import init, make_model, vi, optimize
from onnx import helper

from rooftop.model_io import load_model
from rooftop.verify import make_session


@pytest.mark.slow
def test_over_2gb_model(tmp_path):
    k, n = 8192, 33000  # two 1.08 GB weights: 2.16 GB in all, over protobuf's 2 GiB limit
    r = np.random.default_rng(0)
    w1 = r.standard_normal((k, n), dtype=np.float32) * 0.01
    w2 = r.standard_normal((n, k), dtype=np.float32) * 0.01
    scale = (r.random(n, dtype=np.float32) + 0.5).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Mul", ["h", "scale"], ["hs"]),
        helper.make_node("MatMul", ["hs", "w2"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [1, k])], [vi("y", [1, k])], [init("w1", w1), init("w2", w2), init("scale", scale)])
    del w1, w2
    src = tmp_path / "big.onnx"
    onnx.save(m, src, save_as_external_data=True, location="big.onnx.data", size_threshold=1024)
    del m
    out = tmp_path / "out.onnx"
    model, report = optimize(src, out)
    fold = next(p for p in report.passes if p.name == "fold-conv-bn")
    assert fold.status == "applied" and fold.rewrites == 1 and fold.verified
    assert report.final_check is not None and report.final_check.ok
    assert (tmp_path / "out.onnx.data").stat().st_size > 2**31
    assert out.stat().st_size < 1 << 20
    loaded = load_model(out)
    assert [nd.op_type for nd in loaded.graph.node] == ["MatMul", "MatMul"]
    sess = make_session(loaded)
    x = np.ones((1, k), np.float32)
    ref = make_session(load_model(src)).run(None, {"x": x})[0]
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref, rtol=1e-4, atol=1e-4)
