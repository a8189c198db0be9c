"""Every workaround of rooftop/_compat.py against the upstream behaviour it relies on: each test
fails when that behaviour changes, so a new release is noticed where the workaround lives."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys

import numpy as np
import onnx
import pytest
from helpers import MODELS, init, make_model, vi
from onnx import helper

from rooftop import _compat


def test_onnxsim_is_loaded_without_its_toolkit_and_a_later_import_is_the_real_package():
    """onnxsim 0.8: its package __init__ re-exports a quantization toolkit (torch, sympy, a
    52,000-line pruning module); the simplifier alone is loaded, and a later ``import onnxsim``
    still gets the whole package."""
    code = """
import sys
from rooftop._compat import onnxsim_simplify
f = onnxsim_simplify()
print(f.__module__, *(m in sys.modules for m in ("onnxsim", "onnxsim.pruning", "sympy", "torch")))
import onnxsim
print(onnxsim.simplify is f, hasattr(onnxsim, "apply_magnitude_pruning"), "onnxsim.pruning" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "onnxsim.onnx_simplifier False False False False"
    assert out[1] == "True True True"


def test_onnxsim_still_takes_the_options_simplify_passes_and_the_annotations_it_stubs():
    f = _compat.onnxsim_simplify()
    params = inspect.signature(f).parameters
    for name in (
        "check_n",
        "perform_optimization",
        "skip_fuse_bn",
        "skipped_optimizers",
        "tensor_size_threshold",
        "skip_shape_inference",
    ):
        assert name in params, name
    import importlib.util

    simplifier = open(importlib.util.find_spec("onnxsim.onnx_simplifier").origin).read()
    for module, names in _compat.ANNOTATION_ONLY.items():  # the simplifier reads them from there (annotations)
        assert module.split(".")[-1] in simplifier and all(n in simplifier for n in names), module


def test_graphsurgeon_formats_constant_values_in_its_cleanup_log_and_names_only_stops_it():
    """onnx-graphsurgeon 0.5-0.6 prints a Constant's values when it formats a node (what made
    cleanup slow); names_only formats names for the duration and puts the classes back."""
    import onnx_graphsurgeon as gs

    c = gs.Constant("w", np.arange(5000, dtype=np.float32))
    node = gs.Node("Constant", "n", attrs={"value": c}, outputs=[gs.Variable("y")])
    assert "4.999e+03" in str(node)  # a Constant node's value is printed by numpy
    with _compat.names_only():
        assert str(node) == "n" and repr(c) == "w"
    assert str(node) != "n"
    from onnx_graphsurgeon.logger import G_LOGGER

    assert hasattr(G_LOGGER, "severity") and hasattr(G_LOGGER, "colors") and G_LOGGER.CRITICAL > 0


def test_onnxruntime_and_the_interpreter_still_have_what_the_workarounds_call():
    import atexit
    import ctypes

    import onnxruntime as ort

    assert callable(ort.set_default_logger_severity)
    assert callable(atexit._run_exitfuncs)
    if sys.platform.startswith("linux"):
        assert hasattr(ctypes.CDLL("libc.so.6"), "malloc_trim")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here: onnxsim runs in the process")
def test_isolated_turns_a_native_crash_into_an_exception():
    assert _compat.isolated(lambda: b"ok") == b"ok"
    with pytest.raises(_compat.NativeCrash, match="SIGSEGV"):
        _compat.isolated(lambda: os.kill(os.getpid(), signal.SIGSEGV) or b"")
    with pytest.raises(RuntimeError, match="ValueError: no"):
        _compat.isolated(lambda: (_ for _ in ()).throw(ValueError("no")))
    with pytest.raises(_compat.NativeCrash, match="did not finish"):
        _compat.isolated(lambda: __import__("time").sleep(5) or b"", timeout_s=0.3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here: onnxsim runs in the process")
def test_a_native_crash_in_onnxsim_rolls_simplify_back_and_the_model_is_written(monkeypatch, tmp_path):
    """onnxsim's C++ dies by a signal (as it did on one real model): simplify is rolled back with
    the reason, the other passes run, and a verified model is written."""
    import rooftop

    def crash(*a, **k):
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(_compat, "onnxsim_simplify", lambda: crash)
    import rooftop.passes.simplify as simplify

    monkeypatch.setattr(simplify, "onnxsim_simplify", lambda: crash)
    src = MODELS / "encoder_dynamic.onnx"
    out, rep = rooftop.optimize(str(src), tmp_path / "o.onnx", time=False, hardware="xeon-avx512")
    rec = next(r for r in rep.passes if r.name == "simplify")
    assert rec.status.value == "rolled back" and "onnxsim crashed (SIGSEGV)" in rec.reason
    assert next(r for r in rep.passes if r.name == "shape-chains").status.value == "applied"
    assert rep.final_check.ok and (tmp_path / "o.onnx").exists()
    assert len(onnx.load(tmp_path / "o.onnx").graph.node) < len(onnx.load(src).graph.node)


def test_simplify_still_folds_through_the_isolated_worker():
    import rooftop

    nodes = [helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Mul", ["x", "c"], ["y"])]
    m = make_model(
        nodes,
        [vi("x", [2, 2])],
        [vi("y", [2, 2])],
        [init("a", np.ones((2, 2), np.float32)), init("b", np.ones((2, 2), np.float32))],
    )
    out, rep = rooftop.optimize(m, passes=["simplify"], time=False, analyze=False)
    assert rep.passes[0].status.value == "applied" and [n.op_type for n in out.graph.node] == ["Mul"]


def test_graphsurgeon_keeps_a_large_initializer_lazy_behind_a_private_attribute(tmp_path):
    """onnx-graphsurgeon 0.5-0.6 imports an initializer as a Constant whose ``_values`` is a
    LazyValues (read on first use): lazy_of and read_external_lazily rely on it."""
    import onnx_graphsurgeon as gs

    w = np.ones((64, 64), np.float32)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w)]
    )
    onnx.save(m, tmp_path / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    lazy_model = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    graph = gs.import_onnx(lazy_model)
    const = graph.tensors()["w"]
    assert _compat.lazy_of(const) is not None
    seen = []
    _compat.read_external_lazily(graph, lambda t: seen.append(t.name) or w * 2)
    np.testing.assert_array_equal(np.asarray(_compat.lazy_of(const).load()), w * 2)
    assert seen == ["w"]
