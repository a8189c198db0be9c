"""shape-chains: golden graphs per rule (positive and negative twins), dynamic axes at two sizes,
idempotence, and torch exports with dynamic axes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import MODELS, init, make_model, ops, optimize, run, vi
from onnx import TensorProto, helper

from rooftop.passes import PassContext
from rooftop.passes.shape_chains import ShapeChains

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast"}


def chains(m, limit=1 << 20):
    return ShapeChains().apply(m, PassContext(fold_limit=limit))


def check_sizes(m, out, name="x", shapes=((1, 3, 4, 4), (5, 3, 4, 4)), dtype=np.float32):
    onnx.checker.check_model(out)
    r = np.random.default_rng(0)
    for s in shapes:
        x = r.standard_normal(s).astype(dtype)
        for a, b in zip(run(out, {name: x}), run(m, {name: x})):
            np.testing.assert_array_equal(a, b)


def i64(name, v):
    return init(name, np.array(v, dtype=np.int64))


def relu_wrapped(nodes, x_shape, inits=()):
    """x -> Relu -> <nodes reading r, writing t> -> Neg -> y: keeps inputs/outputs away from the rewrite."""
    return make_model(
        [helper.make_node("Relu", ["x"], ["r"]), *nodes, helper.make_node("Neg", ["t"], ["y"])],
        [vi("x", x_shape)],
        [vi("y", None)],
        list(inits),
    )


def view_model(index: int, tail: list[int]):
    """Reshape(x, Concat(Unsqueeze(Gather(Shape(x), index)), tail)) with a dynamic batch."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "idx"], ["d"], axis=0),
        helper.make_node("Unsqueeze", ["d", "ax0"], ["du"]),
        helper.make_node("Concat", ["du", "tail"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    return make_model(
        nodes, [vi("x", ["batch", 3, 4, 4])], [vi("y", None)], [i64("idx", index), i64("ax0", [0]), i64("tail", tail)]
    )


def target_of(m):
    node = next(n for n in m.graph.node if n.op_type == "Reshape")
    t = next(t for t in m.graph.initializer if t.name == node.input[1])
    return onnx.numpy_helper.to_array(t).tolist()


def test_view_batch_minus_one_becomes_zero_minus_one():
    m = view_model(0, [-1])
    out, res = chains(m)
    assert ops(out) == ["Reshape"]
    assert target_of(out) == [0, -1]
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # still dynamic
    check_sizes(m, out)
    out2, res2 = chains(out)
    assert res2.rewrites == 0 and out2 is out


def test_static_dim_folds_under_dynamic_batch():
    m = view_model(1, [-1])  # Shape(x)[1] is the static 3
    out, res = chains(m)
    assert ops(out) == ["Reshape"]
    assert target_of(out) == [3, -1]
    check_sizes(m, out)


def test_equal_symbolic_dims_across_tensors():
    """Target built from dims of x, applied to y = Relu(x): equal dim names are equal dims."""
    nodes = [
        helper.make_node("Relu", ["x"], ["yr"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["b"]),
        helper.make_node("Gather", ["s", "i1"], ["q"]),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["bu"]),
        helper.make_node("Unsqueeze", ["q", "ax0"], ["qu"]),
        helper.make_node("Concat", ["bu", "qu", "tail"], ["t"], axis=0),
        helper.make_node("Reshape", ["yr", "t"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", ["batch", "seq", 8])],
        [vi("y", None)],
        [i64("i0", 0), i64("i1", 1), i64("ax0", [0]), i64("tail", [2, 4])],
    )
    out, _ = chains(m)
    assert sorted(ops(out)) == ["Relu", "Reshape"]
    assert target_of(out) == [0, 0, 2, 4]
    check_sizes(m, out, shapes=((1, 3, 8), (2, 7, 8)))


def test_target_from_another_tensor_stays_dynamic_but_shorter():
    """Reshape(x, Shape(z)[0:2]) with independent dynamic dims: no constant target exists, but the
    Shape→Slice chain becomes one Shape(start=0, end=2)."""
    nodes = [
        helper.make_node("Shape", ["z"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en"], ["t"]),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", ["n"]), vi("z", ["a", "b", 2])], [vi("y", None)], [i64("st", [0]), i64("en", [2])])
    out, res = chains(m)
    assert ops(out) == ["Shape", "Reshape"]
    assert res.refusals == {
        "reads a dynamic dim: stays computed at run time": ["t_shape0"]
    }  # the rebuilt Shape(start, end)
    shape_node = out.graph.node[0]
    assert {a.name: a.i for a in shape_node.attribute} == {"start": 0, "end": 2}
    r = np.random.default_rng(0)
    for a, b in ((2, 3), (4, 5)):
        feeds = {"x": r.standard_normal(a * b).astype(np.float32), "z": np.zeros((a, b, 2), np.float32)}
        np.testing.assert_array_equal(run(out, feeds)[0], run(m, feeds)[0])


def test_target_from_another_tensor_opset13_kept():
    nodes = [
        helper.make_node("Shape", ["z"], ["s"]),
        helper.make_node("Slice", ["s", "st", "en"], ["t"]),
        helper.make_node("Reshape", ["x", "t"], ["y"]),
    ]
    m = make_model(
        nodes, [vi("x", ["n"]), vi("z", ["a", "b", 2])], [vi("y", None)], [i64("st", [0]), i64("en", [2])], opset=13
    )
    out, res = chains(m)
    assert res.rewrites == 0


def test_allowzero_uses_minus_one_not_zero():
    m = view_model(0, [48])
    m.graph.node[-1].attribute.append(helper.make_attribute("allowzero", 1))
    m.opset_import[0].version = 18
    out, _ = chains(m)
    assert ops(out) == ["Reshape"] and target_of(out) == [-1, 48]
    check_sizes(m, out)


def test_two_symbolic_elements_with_allowzero_kept():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1),
    ]
    m = make_model(nodes, [vi("x", ["a", "b"])], [vi("y", None)], opset=18)
    out, res = chains(m)
    assert "Shape" in ops(out)


@pytest.mark.parametrize("first,second", [("Unsqueeze", "Squeeze"), ("Squeeze", "Unsqueeze")])
def test_squeeze_unsqueeze_pairs(first, second):
    shape = ["n", 4] if first == "Unsqueeze" else ["n", 1, 4]
    m = relu_wrapped(
        [helper.make_node(first, ["r", "ax"], ["a"]), helper.make_node(second, ["a", "ax"], ["t"])],
        shape,
        [i64("ax", [1])],
    )
    out, res = chains(m)
    assert res.rewrites == 1 and ops(out) == ["Relu", "Neg"]
    xs = [(1, 4), (3, 4)] if first == "Unsqueeze" else [(1, 1, 4), (3, 1, 4)]
    check_sizes(m, out, shapes=xs)


def test_pair_between_graph_input_and_output_is_kept():
    """Removing it would lose the output's name (its producer would be the graph input)."""
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["a"]), helper.make_node("Squeeze", ["a", "ax"], ["y"])]
    m = make_model(nodes, [vi("x", ["n", 4])], [vi("y", ["n", 4])], [i64("ax", [1])])
    out, res = chains(m)
    assert res.rewrites == 0 and ops(out) == ["Unsqueeze", "Squeeze"]


def test_squeeze_unsqueeze_different_axes_kept():
    nodes = [helper.make_node("Unsqueeze", ["x", "a1"], ["a"]), helper.make_node("Squeeze", ["a", "a2"], ["y"])]
    m = make_model(nodes, [vi("x", [1, 4])], [vi("y", None)], [i64("a1", [1]), i64("a2", [0])])
    out, res = chains(m)
    assert res.rewrites == 0


def test_transpose_pair_cancels_and_merges():
    m = relu_wrapped(
        [
            helper.make_node("Transpose", ["r"], ["a"], perm=[0, 2, 1]),
            helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 1]),
        ],
        ["n", 3, 5],
    )
    out, res = chains(m)
    assert res.rewrites == 1 and ops(out) == ["Relu", "Neg"]
    check_sizes(m, out, shapes=((1, 3, 5), (2, 3, 5)))
    m2 = relu_wrapped(
        [
            helper.make_node("Transpose", ["r"], ["a"], perm=[0, 2, 1]),
            helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0, 2]),
        ],
        ["n", 3, 5],
    )
    out2, res2 = chains(m2)
    assert res2.rewrites == 1 and ops(out2) == ["Relu", "Transpose", "Neg"]
    check_sizes(m2, out2, shapes=((1, 3, 5), (2, 3, 5)))


def test_identity_transpose_removed():
    m = relu_wrapped([helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1])], [2, 3])
    out, res = chains(m)
    assert ops(out) == ["Relu", "Neg"]


def test_reshape_pair_merges():
    m = relu_wrapped(
        [helper.make_node("Reshape", ["r", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["t"])],
        [2, 3, 4],
        [i64("s1", [6, 4]), i64("s2", [4, -1])],
    )
    out, res = chains(m)
    assert ops(out) == ["Relu", "Reshape", "Neg"]
    check_sizes(m, out, shapes=((2, 3, 4),))


def test_reshape_pair_with_copy_zero_kept():
    m = relu_wrapped(
        [helper.make_node("Reshape", ["r", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["t"])],
        [2, 3, 4],
        [i64("s1", [6, 4]), i64("s2", [0, 2, 2])],
    )
    out, res = chains(m)
    assert ops(out).count("Reshape") == 2


def test_cast_same_dtype_removed_other_kept():
    m = relu_wrapped([helper.make_node("Cast", ["r"], ["t"], to=TensorProto.FLOAT)], ["n", 3])
    out, _ = chains(m)
    assert ops(out) == ["Relu", "Neg"]
    m2 = make_model(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT16)],
        [vi("x", ["n", 3])],
        [vi("y", None, TensorProto.FLOAT16)],
    )
    out2, res2 = chains(m2)
    assert res2.rewrites == 0


def test_expand_to_own_shape_removed():
    m = relu_wrapped([helper.make_node("Shape", ["r"], ["s"]), helper.make_node("Expand", ["r", "s"], ["t"])], ["n", 3])
    out, _ = chains(m)
    assert ops(out) == ["Relu", "Neg"]
    check_sizes(m, out, shapes=((1, 3), (4, 3)))


def test_expand_that_broadcasts_kept():
    m = relu_wrapped([helper.make_node("Expand", ["r", "s"], ["t"])], ["n", 1], [i64("s", [1, 5])])
    out, res = chains(m)
    assert "Expand" in ops(out)


def test_whole_slice_removed_partial_kept():
    big = 2**63 - 1
    m = relu_wrapped(
        [helper.make_node("Slice", ["r", "st", "en", "ax"], ["t"])],
        ["n", 6],
        [i64("st", [0]), i64("en", [big]), i64("ax", [1])],
    )
    out, _ = chains(m)
    assert ops(out) == ["Relu", "Neg"]
    m2 = relu_wrapped(
        [helper.make_node("Slice", ["r", "st", "en", "ax"], ["t"])],
        ["n", 6],
        [i64("st", [0]), i64("en", [4]), i64("ax", [1])],
    )
    out2, res2 = chains(m2)
    assert "Slice" in ops(out2)


def test_reshape_to_same_shape_and_flatten_removed():
    m = relu_wrapped(
        [helper.make_node("Reshape", ["r", "s"], ["a"]), helper.make_node("Flatten", ["a"], ["t"], axis=1)],
        [4, 6],
        [i64("s", [4, 6])],
    )
    out, _ = chains(m)
    assert ops(out) == ["Relu", "Neg"]


def test_constant_of_shape_respects_fold_limit():
    nodes = [
        helper.make_node("ConstantOfShape", ["s"], ["c"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    m = make_model(nodes, [vi("x", [256, 256])], [vi("y", [256, 256])], [i64("s", [256, 256])])
    out, res = chains(m, limit=1024)
    assert "ConstantOfShape" in ops(out)
    assert res.refusals == {"its folded value would be larger than --fold-limit": ["c"]}
    out2, res2 = chains(m, limit=1 << 20)
    assert ops(out2) == ["Add"] and not res2.refusals


def test_encoder_sample_has_no_shape_ops_left_and_runs_at_two_sizes():
    src = MODELS / "encoder_dynamic.onnx"
    original = onnx.load(src)
    out, rep = optimize(src)
    assert not [n for n in out.graph.node if n.op_type in {"Shape", "Gather", "Unsqueeze", "Concat"}]
    assert rep.verification.count("input=") == 2
    r = np.random.default_rng(3)
    for shape in ((1, 5, 32), (3, 11, 32)):
        x = r.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(run(out, {"input": x})[0], run(original, {"input": x})[0], rtol=1e-4, atol=1e-5)


def test_torch_view_batch(tmp_path):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4 * 6 * 6, 5)

        def forward(self, x):
            y = torch.relu(self.c(x))
            return self.fc(y.view(y.size(0), -1))

    import sys

    sys.path.insert(0, str(MODELS))
    import archs

    src = archs.export(Net().eval(), torch.randn(2, 3, 8, 8), tmp_path / "v.onnx", dynamic_batch=True)
    before = onnx.load(src)
    assert "Shape" in ops(before)
    out, rep = optimize(src)
    assert not set(ops(out)) & SHAPE_OPS
    assert rep.verification.count("input=") == 2
    for b in (1, 7):
        x = np.random.default_rng(b).standard_normal((b, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(run(out, {"input": x})[0], run(before, {"input": x})[0], rtol=1e-4, atol=1e-5)
