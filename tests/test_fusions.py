"""norm-fusion and gelu-fusion: the decomposed LayerNorm / RMSNorm / GELU of real exports (both torch
exporters) become one op where the opset allows, verified at two sizes; every refusal says why."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from helpers import HAS_TORCH, ROOT, init, make_model, needs_torch, ops, optimize, run, small_transformer, vi
from onnx import helper, numpy_helper

from rooftop.passes import PassContext
from rooftop.passes.gelu_fusion import GeluFusion
from rooftop.passes.norm_fusion import NormFusion

sys.path.insert(0, str(ROOT / "models"))
if HAS_TORCH:
    import archs
    import torch

DECOMPOSED = {"ReduceMean", "Sqrt", "Pow", "Erf", "Tanh", "Reciprocal"}


small = small_transformer


@needs_torch
@pytest.mark.parametrize("exporter,opset", [("legacy", 14), ("dynamo", None)])  # dynamo: torch's default opset
@pytest.mark.parametrize("name", ["bert", "gpt2", "vit"])
def test_transformer_exports_keep_no_decomposed_norm_or_gelu(tmp_path, name, exporter, opset):
    net, x, axes = small(name)
    src = archs.export_dynamic(net.eval(), x, tmp_path / "m.onnx", axes, exporter=exporter, opset=opset)
    n_ln = sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    n_gelu = sum(isinstance(m, torch.nn.GELU) for m in net.modules())
    out, report = optimize(src, opset=20)
    types = ops(out)
    assert not DECOMPOSED & set(types) - ({"Tanh"} if name == "bert" else set()), sorted(
        DECOMPOSED & set(types)
    )  # BERT's pooler is a real tanh
    assert types.count("LayerNormalization") == n_ln and types.count("Gelu") == n_gelu
    assert report.final_check is not None and report.final_check.ok
    assert report.verification.count(" and ") == 1  # two sizes of the dynamic axes
    feeds = {out.graph.input[0].name: x.numpy()}
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(run(out, feeds)[0], ref, rtol=1e-3, atol=1e-4)


@needs_torch
def test_old_opset_says_which_opset_enables_the_fusions(tmp_path):
    net, x, axes = small("bert")
    src = archs.export_dynamic(net.eval(), x, tmp_path / "m.onnx", axes, exporter="legacy", opset=14)
    out, report = optimize(src)
    norm = next(r for r in report.passes if r.name == "norm-fusion")
    gelu = next(r for r in report.passes if r.name == "gelu-fusion")
    assert norm.rewrites == 0 and gelu.rewrites == 0
    assert (
        len(norm.refusals["opset 14 < 17: LayerNormalization needs 17 (--opset 17 enables it)"]) == 5
    )  # embeddings + 2 per layer
    assert len(gelu.refusals["opset 14 < 20: Gelu needs 20 (--opset 20 enables it)"]) == 2
    from rooftop.report.text import summary_lines

    assert (
        "a higher opset would enable: LayerNormalization ×5, Gelu ×2, Attention ×2 (--opset 23 enables all of them)"
        in summary_lines(report)
    )


@needs_torch
def test_onnxruntime_target_fuses_gelu_at_the_models_opset(tmp_path):
    net, x, axes = small("gpt2")
    src = archs.export_dynamic(net.eval(), x, tmp_path / "m.onnx", axes, exporter="legacy", opset=17)
    out, report = optimize(src, target="onnxruntime")
    node = next(n for n in out.graph.node if n.op_type == "Gelu")
    assert node.domain == "com.microsoft" and "Erf" not in ops(out)
    assert report.final_check.ok


# ---- hand-written patterns and their negative twins -----------------------------------------


def layernorm_graph(eps_input: bool = False, axes=(-1,), opset: int = 17, shape=(2, 5, 8), residual: bool = False):
    """x - mean → Pow 2 → mean → + ε → Sqrt → Div → · γ → + β, ReduceMean axes as attribute (< 18);
    ``residual``: x is the sum a + b of two inputs."""
    c = shape[-1]
    nodes = [
        *([helper.make_node("Add", ["a", "b_in"], ["x"])] if residual else []),
        helper.make_node("ReduceMean", ["x"], ["m"], axes=list(axes), name="mean"),
        helper.make_node("Sub", ["x", "m"], ["d"]),
        helper.make_node("Pow", ["d", "two"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["v"], axes=list(axes)),
        helper.make_node("Add", ["v", "eps"], ["e"]),
        helper.make_node("Sqrt", ["e"], ["s"]),
        helper.make_node("Div", ["d", "s"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "b"], ["y"]),
    ]
    r = np.random.default_rng(0)
    inits = [
        init("two", np.array(2.0, np.float32)),
        init("g", r.random(c).astype(np.float32) + 0.5),
        init("b", r.standard_normal(c).astype(np.float32)),
    ]
    inputs = [vi("a", list(shape)), vi("b_in", list(shape))] if residual else [vi("x", list(shape))]
    if eps_input:
        inputs.append(vi("eps", []))
    else:
        inits.append(init("eps", np.array(1e-5, np.float32)))
    return make_model(nodes, inputs, [vi("y", list(shape))], inits, opset=opset)


def test_layernorm_pattern_becomes_one_op():
    m = layernorm_graph()
    out, res = NormFusion().apply(m, PassContext())
    assert ops(out) == ["LayerNormalization"] and res.counts == {"layernorm-into-LayerNormalization": 1}
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_layernorm_refusals_say_why():
    _out, res = NormFusion().apply(layernorm_graph(eps_input=True), PassContext())
    assert res.rewrites == 0 and res.refusals == {"epsilon is not a constant": ["mean"]}
    _out, res = NormFusion().apply(layernorm_graph(axes=(1,)), PassContext())
    assert res.rewrites == 0 and res.refusals == {"normalized axes are not the last ones": ["mean"]}
    _out, res = NormFusion().apply(layernorm_graph(opset=16), PassContext())
    assert res.refusals == {"opset 16 < 17: LayerNormalization needs 17 (--opset 17 enables it)": ["mean"]}


def rmsnorm_graph(form: str, opset: int = 23, residual: bool = False):
    """x · rsqrt(mean(x²) + ε) · γ (ReduceMean axes as an input); ``residual``: x = a + b, the
    sum read again by the next block as a graph output."""
    nodes = [
        *([helper.make_node("Add", ["a", "b"], ["x"])] if residual else []),
        helper.make_node("Pow", ["x", "two"], ["p"], name="square"),
        helper.make_node("ReduceMean", ["p", "ax"], ["v"]),
        helper.make_node("Add", ["v", "eps"], ["e"]),
        helper.make_node("Sqrt", ["e"], ["s"]),
    ]
    if form == "reciprocal":
        nodes += [helper.make_node("Reciprocal", ["s"], ["r"]), helper.make_node("Mul", ["x", "r"], ["n"])]
    elif form == "one-over":
        nodes += [helper.make_node("Div", ["one", "s"], ["r"]), helper.make_node("Mul", ["r", "x"], ["n"])]
    else:
        nodes += [helper.make_node("Div", ["x", "s"], ["n"])]
    nodes.append(helper.make_node("Mul", ["g", "n"], ["y"]))
    inits = [
        init("two", np.array(2.0, np.float32)),
        init("ax", np.array([-1], np.int64)),
        init("eps", np.array(1e-6, np.float32)),
        init("one", np.array(1.0, np.float32)),
        init("g", np.linspace(0.5, 1.5, 16).astype(np.float32)),
    ]
    if residual:  # the two branches name the same length differently, as shape inference does after a Reshape
        return make_model(
            nodes,
            [vi("a", ["batch", "seq", 16]), vi("b", ["batch", "unk__1", 16])],
            [vi("y", ["batch", "seq", 16]), vi("x", ["batch", "seq", 16])],
            inits,
            opset=opset,
        )
    return make_model(nodes, [vi("x", ["batch", 4, 16])], [vi("y", ["batch", 4, 16])], inits, opset=opset)


@pytest.mark.parametrize("form", ["reciprocal", "one-over", "div"])
def test_rmsnorm_forms_become_rmsnormalization(form):
    m = rmsnorm_graph(form)
    out, res = NormFusion().apply(m, PassContext())
    assert ops(out) == ["RMSNormalization"] and res.rewrites == 1
    for b in (1, 3):
        x = np.random.default_rng(b).standard_normal((b, 4, 16)).astype(np.float32)
        np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [18, 23])
def test_residual_rmsnorm_becomes_skipsimplifiedlayernormalization_for_onnxruntime(opset):
    m = rmsnorm_graph("reciprocal", opset=opset, residual=True)
    out, res = NormFusion().apply(m, PassContext(target="onnxruntime"))
    assert ops(out) == ["SkipSimplifiedLayerNormalization"]
    assert res.counts == {
        "add-rmsnorm-into-SkipSimplifiedLayerNormalization": 1,
        **({"rmsnorm-into-RMSNormalization": 1} if opset >= 23 else {}),
    }
    node = out.graph.node[0]
    assert node.domain == "com.microsoft" and list(node.output) == ["y", "", "", "x"]  # the sum stays an output
    r = np.random.default_rng(3)
    feeds = {k: r.standard_normal((2, 5, 16)).astype(np.float32) for k in ("a", "b")}
    for got, ref in zip(run(out, feeds), run(m, feeds), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # its twin: a fixed 1 against a length is a broadcast, refused (below 23 the opset is the reason)
    twin = rmsnorm_graph("reciprocal", opset=opset, residual=True)
    twin.graph.input[1].type.tensor_type.shape.dim[1].dim_value = 1
    _, res = NormFusion().apply(twin, PassContext(target="onnxruntime"))
    want = (
        "the residual Add broadcasts (or its shapes are unknown)"
        if opset >= 23
        else "opset 18 < 23: RMSNormalization needs 23 (--opset 23 enables it)"
    )
    assert list(res.refusals) == [want]


def gelu_graph(shared: bool = False, opset: int = 20, halved: bool = True):
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["u"]),
        helper.make_node("Erf", ["u"], ["f"], name="erf"),
        helper.make_node("Add", ["f", "one"], ["a"]),
        helper.make_node("Mul", ["x", "a"], ["xa" if halved else "y"]),
    ]
    if halved:
        nodes.append(helper.make_node("Mul", ["xa", "half"], ["y"]))
    outputs = [vi("y", [4, 8])]
    if shared:
        outputs.append(vi("a", [4, 8]))  # 1 + erf observed: the pattern cannot go
    inits = [
        init("sqrt2", np.array(np.sqrt(2.0), np.float32)),
        init("one", np.array(1.0, np.float32)),
        init("half", np.array(0.5, np.float32)),
    ]
    return make_model(nodes, [vi("x", [4, 8])], outputs, inits, opset=opset)


def test_gelu_pattern_and_its_twins():
    m = gelu_graph()
    out, res = GeluFusion().apply(m, PassContext())
    assert ops(out) == ["Gelu"] and res.counts == {"gelu-erf-into-Gelu": 1}
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-6)
    _out, res = GeluFusion().apply(gelu_graph(shared=True), PassContext())
    assert res.rewrites == 0 and res.refusals == {"(1 + erf) is read by another node or is a graph output": ["erf"]}
    _out, res = GeluFusion().apply(gelu_graph(opset=17), PassContext())
    assert res.refusals == {"opset 17 < 20: Gelu needs 20 (--opset 20 enables it)": ["erf"]}
    out, res = GeluFusion().apply(gelu_graph(opset=17), PassContext(target="onnxruntime"))
    assert ops(out) == ["Gelu"] and out.graph.node[0].domain == "com.microsoft"


@pytest.mark.parametrize("target", ["portable", "onnxruntime"])
def test_gelu_without_its_halving_is_twice_gelu(target):
    """x · (1 + erf(x/√2)), the 0.5 folded elsewhere by onnxsim (Whisper's TorchScript export):
    Gelu, then Mul by 2."""
    m = gelu_graph(halved=False)
    out, res = GeluFusion().apply(m, PassContext(target=target))
    assert ops(out) == ["Gelu", "Mul"] and res.counts == {"gelu-erf-into-Gelu-doubled": 1}
    assert numpy_helper.to_array(out.graph.initializer[-1]).tolist() == 2.0
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-6)


def residual_layernorm(broadcast: bool = False, sum_read_again: bool = True):
    """LayerNormalization(a + b) with the residual sum read again by the next block (as in BERT)."""
    b_shape = [1, 1, 16] if broadcast else [2, 5, 16]
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "beta"], ["n"], axis=-1, epsilon=1e-5, name="ln"),
    ]
    outputs = [vi("n", [2, 5, 16])]
    if sum_read_again:
        nodes.append(helper.make_node("Relu", ["s"], ["r"]))
        outputs.append(vi("r", [2, 5, 16]))
    inits = [
        init("g", np.linspace(0.5, 1.5, 16).astype(np.float32)),
        init("beta", np.linspace(-1, 1, 16).astype(np.float32)),
    ]
    return make_model(nodes, [vi("a", [2, 5, 16]), vi("b", b_shape)], outputs, inits)


# a provider whose SkipLayerNormalization is not known to lose (the CPU one's is: see the test below)
GPU = PassContext(target="onnxruntime", provider="CUDAExecutionProvider")
CPU_SKIP_LN = (
    "SkipLayerNormalization runs slower than Add + LayerNormalization on onnxruntime's CPU kernels "
    "(onnxruntime fuses the norm itself)"
)


def test_onnxruntime_target_writes_skiplayernormalization_keeping_the_sum():
    m = residual_layernorm()
    out, res = NormFusion().apply(m, GPU)
    assert ops(out) == ["SkipLayerNormalization", "Relu"] and res.counts == {
        "add-layernorm-into-SkipLayerNormalization": 1
    }
    node = out.graph.node[0]
    assert node.domain == "com.microsoft" and len(node.output) == 4 and node.output[3] == "s"  # the sum, for the Relu
    r = np.random.default_rng(0)
    feeds = {
        "a": r.standard_normal((2, 5, 16)).astype(np.float32),
        "b": r.standard_normal((2, 5, 16)).astype(np.float32),
    }
    for got, ref in zip(run(out, feeds), run(m, feeds)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    portable, res_p = NormFusion().apply(m, PassContext())
    assert res_p.rewrites == 0 and ops(portable) == ["Add", "LayerNormalization", "Relu"]


@pytest.mark.parametrize("sum_read_again", [True, False])
def test_on_the_cpu_provider_a_residual_layernorm_stays_standard_with_the_reason(sum_read_again):
    m = residual_layernorm(sum_read_again=sum_read_again)
    out, res = NormFusion().apply(m, PassContext(target="onnxruntime"))
    assert res.rewrites == 0 and res.refusals == {CPU_SKIP_LN: ["ln"]}
    assert ops(out) == ["Add", "LayerNormalization"] + (["Relu"] if sum_read_again else [])


def test_below_opset_17_a_residual_layernorm_goes_straight_to_skiplayernormalization():
    m = layernorm_graph(opset=14, residual=True)
    out, res = NormFusion().apply(m, GPU)
    assert ops(out) == ["SkipLayerNormalization"] and res.counts == {"add-layernorm-into-SkipLayerNormalization": 1}
    r = np.random.default_rng(2)
    feeds = {k: r.standard_normal((2, 5, 8)).astype(np.float32) for k in ("a", "b_in")}
    np.testing.assert_allclose(run(out, feeds)[0], run(m, feeds)[0], rtol=1e-5, atol=1e-5)
    # its twins: not a residual sum, the CPU provider, or the portable target: the opset is the reason
    for model, ctx in ((layernorm_graph(opset=14), GPU), (m, PassContext(target="onnxruntime")), (m, PassContext())):
        _, res = NormFusion().apply(model, ctx)
        assert res.rewrites == 0 and res.refusals == {
            "opset 14 < 17: LayerNormalization needs 17 (--opset 17 enables it)": ["mean"]
        }


def test_broadcasting_residual_is_refused():
    _out, res = NormFusion().apply(residual_layernorm(broadcast=True), GPU)
    assert res.rewrites == 0 and res.refusals == {"the residual Add broadcasts (or its shapes are unknown)": ["ln"]}


def test_bias_before_gelu_goes_into_biasgelu():
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"]),
        helper.make_node("Add", ["bias", "h"], ["hb"]),
        helper.make_node("Gelu", ["hb"], ["y"]),
    ]
    m = make_model(
        nodes,
        [vi("x", [2, 4, 8])],
        [vi("y", [2, 4, 12])],
        [
            init("W", np.random.default_rng(0).standard_normal((8, 12)).astype(np.float32)),
            init("bias", np.linspace(-1, 1, 12).astype(np.float32)),
        ],
        opset=20,
    )
    out, res = GeluFusion().apply(m, PassContext(target="onnxruntime"))
    assert ops(out) == ["MatMul", "BiasGelu"] and res.counts == {"bias-gelu-into-BiasGelu": 1}
    x = np.random.default_rng(1).standard_normal((2, 4, 8)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    portable, res_p = GeluFusion().apply(m, PassContext())
    assert res_p.rewrites == 0
