"""One contract for every pass: rewrites only through ``PassResult.count``, refusals only through
``PassResult.refuse`` (or a ``Refused`` a matcher raises), rounds declared, never looped by hand."""

from __future__ import annotations

import ast
from types import MappingProxyType

import onnx
import pytest
from helpers import MODELS, ROOT

from rooftop.passes import REGISTRY
from rooftop.passes.base import PassContext, PassResult, Refused

PASSES = ROOT / "rooftop" / "passes"
SAMPLES = sorted(MODELS.glob("*.onnx"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
def test_every_pass_reports_through_the_contract(sample, target):
    """On every sample, each registered pass answers a PassResult whose rewrites are the sum of
    its counts, with read-only counts and refusals, each refusal a reason and the nodes left: nodes
    the output still holds."""
    model = onnx.load(sample)
    for name, cls in REGISTRY.items():
        out, res = cls().apply(model, PassContext(target=target, channel_multiple=8))
        assert isinstance(res, PassResult), name
        assert isinstance(res.counts, MappingProxyType) and isinstance(res.refusals, MappingProxyType), name
        assert res.rewrites == sum(res.counts.values()) and all(n > 0 for n in res.counts.values()), name
        assert (out is model) == (res.rewrites == 0), f"{name}: wrote a model without a rewrite, or the reverse"
        left = {n.name for n in out.graph.node} | {o for n in out.graph.node for o in n.output[:1]}
        for why, nodes in res.refusals.items():
            assert why and isinstance(why, str), name
            assert nodes and set(nodes) <= left, f"{name} refused nodes the output does not hold: {why}"


def test_a_result_cannot_be_filled_around_the_contract():
    res = PassResult()
    with pytest.raises(AttributeError):
        res.rewrites = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.counts["fused"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        res.refusals["why"] = ["n"]  # type: ignore[index]
    with pytest.raises(ValueError):
        res.count("fused", -1)


def test_a_raised_refusal_is_recorded_on_its_node_and_a_later_rewrite_withdraws_it():
    import onnx_graphsurgeon as gs

    node = gs.Node("Softmax", "sm", outputs=[gs.Variable("p")])
    res = PassResult()
    with res.refusing(node):
        raise Refused("the scores are not Q·Kᵀ")
    assert dict(res.refusals) == {"the scores are not Q·Kᵀ": ["sm"]} and res.rewrites == 0
    res.count("attention-into-Attention", node=node)
    assert dict(res.refusals) == {} and dict(res.counts) == {"attention-into-Attention": 1}


def _pass_modules():
    return [p for p in sorted(PASSES.glob("*.py")) if p.name not in ("base.py", "__init__.py")]


@pytest.mark.parametrize("path", _pass_modules(), ids=lambda p: p.stem)
def test_no_pass_module_goes_around_the_contract(path):
    """No pass writes a result's fields, keeps a Counter of its own, or returns a refusal as a
    string union (``X | str``): rewrites go through ``count``, refusals through ``refuse``/``Refused``."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                base = t.value if isinstance(t, ast.Subscript) else t
                assert not (isinstance(base, ast.Attribute) and base.attr in {"rewrites", "counts", "refusals"}), (
                    f"{path.name}:{node.lineno} writes a result field"
                )
        if isinstance(node, ast.Name):
            assert node.id != "Counter", f"{path.name}:{node.lineno} counts with a Counter of its own"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            members = {ast.unparse(m) for m in _union(node.returns)}
            assert not ("str" in members and members - {"str", "None"}), (
                f"{path.name}: {node.name} returns a value or a reason ({ast.unparse(node.returns)})"
            )


def _union(t: ast.expr) -> list[ast.expr]:
    """The members of a top-level ``A | B | ...`` annotation (``t`` itself when not a union)."""
    if isinstance(t, ast.BinOp) and isinstance(t.op, ast.BitOr):
        return _union(t.left) + _union(t.right)
    return [t]


def test_passes_that_need_rounds_declare_them():
    rounds = {name: cls.rounds for name, cls in REGISTRY.items() if cls.rounds > 1}
    assert rounds == {"requant": 6, "shape-chains": 8, "nhwc-int8": 256}
