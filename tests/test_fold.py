"""The numpy forms shape-chains folds with agree exactly (values, element type, shape) with
onnxruntime running the node, and refuse what they do not cover, so onnx's reference evaluator
decides."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run
from onnx import helper

from rooftop.passes import _fold

i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
CASES = [
    ("Add", [np.array([1, 2, 3], np.int64), np.array(5, np.int64)], {}, 17),
    ("Sub", [X, np.ones((3, 1), np.float32)], {}, 17),
    ("Mul", [np.array(2, np.int64), np.array(3, np.int64)], {}, 17),  # 0-d stays 0-d int64
    ("Mul", [np.array([2**62], np.int64), np.array([4], np.int64)], {}, 17),  # wraps as int64 does
    ("Unsqueeze", [X, i64(0, -1)], {}, 17),
    ("Unsqueeze", [np.array(7, np.int64), i64(0)], {}, 13),
    ("Unsqueeze", [X], {"axes": [1]}, 11),
    ("Squeeze", [np.ones((1, 3, 1), np.float32), i64(-1)], {}, 17),
    ("Squeeze", [np.ones((1, 3, 1), np.float32)], {}, 17),
    ("Squeeze", [np.ones((1, 3, 1), np.float32)], {"axes": [0]}, 11),
    ("Reshape", [X, i64(0, -1)], {}, 17),
    ("Reshape", [X, i64(2, 0, 2, -1)], {}, 13),
    ("Reshape", [np.zeros((0, 3), np.float32), i64(3, 0)], {"allowzero": 1}, 17),
    ("Expand", [np.array([[1], [2]], np.int64), i64(2, 3)], {}, 17),
    ("Expand", [X, i64(3, 1, 1, 1)], {}, 17),  # a 1 in the shape keeps the input's dim
    ("Expand", [np.array(1.5, np.float32), i64(1, 4)], {}, 17),
    ("Concat", [i64(1, 2), i64(3), i64(4, 5)], {"axis": 0}, 17),
    ("Concat", [X, X], {"axis": -1}, 17),
    ("Gather", [i64(10, 20, 30), i64(-1)], {}, 17),
    ("Gather", [X, np.array([[0, 2], [1, 1]], np.int32)], {"axis": 1}, 17),
    ("Gather", [i64(10, 20, 30), np.array(1, np.int64)], {"axis": 0}, 17),  # a scalar index drops the axis
]


def onnxruntime_runs(op, ins, attrs, opset):
    """The node alone in a model, its inputs graph inputs, run by onnxruntime with nothing fused."""
    names = [f"i{k}" for k in range(len(ins))]
    node = helper.make_node(op, names, ["y"], **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, ins)
        ],
        [helper.make_empty_tensor_value_info("y")],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return run(m, dict(zip(names, ins)))[0]


@pytest.mark.parametrize("op,ins,attrs,opset", CASES, ids=[f"{c[0]}-{k}" for k, c in enumerate(CASES)])
def test_numpy_form_equals_the_reference(op, ins, attrs, opset):
    (got,) = _fold.fold(op, ins, attrs, opset)
    want = np.asarray(onnxruntime_runs(op, ins, attrs, opset))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_what_it_does_not_cover_goes_to_the_reference():
    assert _fold.fold("Div", [i64(7), i64(2)], {}, 17) is None  # not a form here
    assert _fold.fold("Add", [i64(1), np.array([1.0], np.float32)], {}, 17) is None  # mixed types: invalid model
    assert _fold.fold("Unsqueeze", [X], {"axes": [0]}, 13) is None  # attribute axes at opset 13
    assert _fold.fold("Unsqueeze", [X, i64(0)], {}, 11) is None  # input axes before opset 13
    assert _fold.fold("Gather", [X, np.array([0.0])], {}, 17) is None
    assert _fold.fold("Reshape", [np.zeros((0,), np.float32), i64(1, 0)], {}, 17) is None  # 0 past the input's rank
