"""Per-operator cost: FLOPs, integer ops, bytes moved; per-model totals and peak activation memory.

The model (see also the README):

- FLOPs: a multiply-add is 2 FLOPs. Conv: ``2·N·Cout·Hout·Wout·(Cin/group)·Kh·Kw`` plus
  ``N·Cout·Hout·Wout`` for a bias; ConvTranspose: ``2·N·Cin·Hin·Win·(Cout/group)·Kh·Kw``
  (+ bias); MatMul/Gemm: ``2·M·N·K`` per batch (+ ``M·N`` for Gemm's C); Einsum:
  ``2·∏(all index sizes)`` when it contracts. Elementwise ops and activations: 1 per
  output element (transcendentals flagged). BatchNormalization 2 per element;
  Layer/Instance/Group normalization 5; Softmax 3. Pooling: 1 per input element read
  (output elements × window); global pooling and reductions: 1 per input element.
  Resize: 0 for nearest, ``2·2^k`` per output element for linear over k axes, ``2·4^k``
  for cubic. LSTM: ``seq·batch·dirs·(8·H·(I+H) + 10·H)``; GRU ``(6·H·(I+H) + 8·H)``.
  Integer and quantized ops (QLinear*, *Integer, Q/DQ) count integer ops, reported apart.
- Bytes (memory traffic): every input read once (weights included), every output
  written once, at the tensor's dtype size. Reshape, Squeeze, Unsqueeze, Flatten,
  Shape, Size, Constant and Identity are metadata in most runtimes: flagged, not charged.
- An op without a rule, or whose shapes cannot be inferred, is *unknown*: it is listed,
  never counted as zero.

Shapes come from ONNX shape inference after binding dynamic dims (``input_shapes``,
defaults: batch 1, other symbolic dims 32 as in verification); tensors inference cannot
resolve are taken from one onnxruntime run of the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import ModelProto

from rooftop.model_io import weightless
from rooftop.runtime import graph_inputs, index_bounds, make_session, random_inputs

TRANSCENDENTAL = {
    "Exp",
    "Log",
    "Tanh",
    "Sigmoid",
    "Erf",
    "Gelu",
    "FastGelu",
    "BiasGelu",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Pow",
    "Reciprocal",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Elu",
    "Selu",
    "Celu",
    "Mish",
    "HardSwish",
    "QuickGelu",
    "Softmax",
    "LogSoftmax",
    "HardSigmoid",
    "Swish",
    "SiLU",
}
ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Mean",
    "Sum",
    "Mod",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Neg",
    "Abs",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Elu",
    "Selu",
    "Celu",
    "Mish",
    "ThresholdedRelu",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Asinh",
    "Acosh",
    "Atanh",
    "IsNaN",
    "IsInf",
    "BitShift",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "BitwiseNot",
    "Shrink",
    "Trilu",
    "Dropout",
    # com.microsoft elementwise
    "FastGelu",
    "BiasGelu",
    "QuickGelu",
    "BiasAdd",
    "Swish",
}
MOVEMENT = {
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "ScatterND",
    "ScatterElements",
    "Transpose",
    "Pad",
    "Tile",
    "Expand",
    "Cast",
    "CastLike",
    "DepthToSpace",
    "SpaceToDepth",
    "ReverseSequence",
    "Compress",
    "ConstantOfShape",
    "OneHot",
    "Range",
    "EyeLike",
    "NonZero",
    "TopK",
    "ArgMax",
    "ArgMin",
    "Unique",
}
METADATA = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Shape", "Size", "Constant", "Identity"}
REDUCE = {
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "GlobalLpPool",
    "LpNormalization",
}
Q_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
QLINEAR_ELEMENTWISE = {
    "QLinearAdd",
    "QLinearMul",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearSoftmax",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearReduceMean",
}


@dataclass
class NodeCost:
    name: str
    op_type: str
    flops: float = 0.0  # floating point operations
    int_ops: float = 0.0  # integer operations (quantized kernels)
    bytes_read: float = 0.0
    bytes_written: float = 0.0
    dtype: str = "fp32"  # which peak applies: fp32, fp16, int8
    known: bool = True
    reason: str = ""
    metadata: bool = False
    transcendental: bool = False
    layer: str = ""  # the repeated block the node belongs to ("3" for model.layers.3), "" outside any

    @property
    def bytes(self) -> float:
        return self.bytes_read + self.bytes_written

    @property
    def ops(self) -> float:
        return self.flops + self.int_ops

    @property
    def intensity(self) -> float:
        return self.ops / self.bytes if self.bytes else float("inf") if self.ops else 0.0


@dataclass
class Totals:
    flops: float = 0.0
    int_ops: float = 0.0
    bytes: float = 0.0
    params: int = 0
    param_bytes: int = 0
    peak_activation_bytes: int = 0
    nodes: int = 0
    unknown: int = 0


@dataclass
class ModelCost:
    nodes: list[NodeCost]
    totals: Totals
    by_op_type: dict[str, dict[str, float]] = field(default_factory=dict)
    unknown: list[NodeCost] = field(default_factory=list)
    shape_source: str = "onnx shape inference"
    bound_shapes: dict[str, list[int]] = field(default_factory=dict)


# ---- shapes ---------------------------------------------------------------------------------------


@dataclass
class TensorInfo:
    shape: tuple[int, ...] | None
    dtype: np.dtype | None

    @property
    def numel(self) -> int | None:
        return None if self.shape is None else math.prod(self.shape)  # (math.prod: np.prod costs 10 µs a call)

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        if n is None or self.dtype is None:
            return None
        return n * self.dtype.itemsize


def _vi_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    tt = vi.type.tensor_type
    dtype = None
    if tt.elem_type:
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception:  # noqa: BLE001
            dtype = None
    if not tt.HasField("shape"):
        return TensorInfo(None, dtype)
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        else:
            return TensorInfo(None, dtype)
    return TensorInfo(tuple(dims), dtype)


def _bind_inputs(
    model: ModelProto, input_shapes: Mapping[str, Sequence[int]]
) -> tuple[ModelProto, dict[str, list[int]]]:
    """A weightless copy of ``model`` whose graph inputs have concrete shapes."""

    shapes = bound_inputs(model, input_shapes)
    sk = weightless(model)
    g = sk.graph
    for new in g.input:
        if new.name in shapes:
            for d, v in zip(new.type.tensor_type.shape.dim, shapes[new.name]):
                d.Clear()
                d.dim_value = int(v)
    del g.output[:]
    for o in model.graph.output:  # let inference fill in concrete output shapes
        g.output.append(onnx.helper.make_tensor_value_info(o.name, o.type.tensor_type.elem_type, None))
    return sk, {k: list(v) for k, v in shapes.items()}


ShapeMemo = dict  # (tensor, producer op, producer inputs) -> TensorInfo from an earlier run


def _memo_keys(model: ModelProto) -> dict[str, tuple]:
    """Each node output's key in a ShapeMemo: written by the same op from the same inputs, it has the same shape."""
    return {o: (o, n.op_type, tuple(n.input)) for n in model.graph.node for o in n.output if o}


def tensor_infos(
    model: ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    allow_run: bool = True,
    memo: ShapeMemo | None = None,
) -> tuple[dict[str, TensorInfo], str, dict[str, list[int]]]:
    """Shape and dtype of every tensor, with dynamic dims bound. ``memo`` carries shapes found by
    running an earlier model of the same run (same bound inputs): a tensor written by the same op
    from the same inputs has the shape it had then. Those shapes seed onnx's shape inference,
    which carries them through the nodes a pass added; only what it still cannot give needs a run."""
    infos: dict[str, TensorInfo] = {}
    for t in model.graph.initializer:
        infos[t.name] = TensorInfo(
            tuple(int(d) for d in t.dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        )
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    infos[n.output[0]] = TensorInfo(
                        tuple(int(d) for d in a.t.dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(a.t.data_type))
                    )
    bound: dict[str, list[int]] = {}
    source = "onnx shape inference"
    keys = _memo_keys(model)
    remembered = {o: memo[k] for o, k in keys.items() if k in memo} if memo else {}
    try:
        sk, bound = _bind_inputs(model, input_shapes or {})
        if remembered:  # what an earlier run found seeds the inference: it goes on from there through new nodes
            _seed(sk, remembered)
        inferred = onnx.shape_inference.infer_shapes(sk, check_type=False, strict_mode=False, data_prop=True)
        for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            info = _vi_info(vi)
            if vi.name not in infos or infos[vi.name].shape is None:
                infos[vi.name] = info
    except Exception:  # noqa: BLE001
        sk = None
    missing = [o for o in keys if o not in infos or infos[o].shape is None]
    infos.update((o, remembered[o]) for o in missing if o in remembered)
    missing = [o for o in missing if o not in remembered]
    if missing and allow_run:
        got = _shapes_from_profile(model, bound, missing)
        rest = [o for o in missing if o not in got]
        if rest:  # (unnamed twins, a dtype numpy does not know): their values, from a run
            got.update(_shapes_from_run(model, bound, rest))
        if got:
            source = f"onnx shape inference + one onnxruntime run ({len(got)} tensors)"
            infos.update(got)
            if memo is not None:
                memo.update((keys[o], info) for o, info in got.items())
    elif remembered:
        source = f"onnx shape inference + an earlier onnxruntime run ({len(remembered)} tensors)"
    return infos, source, bound


def _seed(sk: ModelProto, known: Mapping[str, TensorInfo]) -> None:
    """Put the shapes in ``known`` on the skeleton as value_info, for shape inference to start from."""
    have = {vi.name for vi in sk.graph.output} | {vi.name for vi in sk.graph.value_info}
    for name, info in known.items():
        if name in have or info.shape is None or info.dtype is None:
            continue
        try:
            elem = onnx.helper.np_dtype_to_tensor_dtype(info.dtype)
        except Exception:  # noqa: BLE001 - a dtype onnx does not name: left to inference
            continue
        sk.graph.value_info.append(onnx.helper.make_tensor_value_info(name, elem, list(info.shape)))


_PROFILER_TYPES = {"float": "float32", "double": "float64"}  # the rest are numpy's names (int64, bool, float16, ...)


def _shapes_from_profile(
    model: ModelProto, bound: Mapping[str, Sequence[int]], names: list[str]
) -> dict[str, TensorInfo]:
    """The missing shapes from onnxruntime's profiler (one run, no intermediate kept)."""
    from rooftop.analysis.timing import profile_shapes

    try:
        specs = graph_inputs(model)
        feeds = random_inputs(
            specs, {s.name: tuple(bound.get(s.name, [])) for s in specs}, seed=0, highs=index_bounds(model)
        )
        events = profile_shapes(model, feeds)
    except Exception:  # noqa: BLE001 - ops onnxruntime cannot run stay unknown (or go to the run below)
        return {}
    return _match_profile(model, events, set(names))


def _match_profile(
    model: ModelProto, shapes_by_node: Mapping[str, list], wanted: set[str] | None = None
) -> dict[str, TensorInfo]:
    """Each node's output shapes as the profiler reported them (node name -> one per output),
    matched to its outputs by position when the node's name is unique and the counts agree
    (``wanted``: only these tensors)."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        key = n.name or (n.output[0] if n.output else n.op_type)
        counts[key] = counts.get(key, 0) + 1
    got: dict[str, TensorInfo] = {}
    for n in model.graph.node:
        key = n.name or (n.output[0] if n.output else n.op_type)
        outs = [o for o in n.output if o]
        shapes = shapes_by_node.get(key)
        if (
            counts[key] != 1
            or shapes is None
            or len(shapes) != len(outs)
            or (wanted is not None and not wanted & set(outs))
        ):
            continue
        for o, (dtype, shape) in zip(outs, shapes, strict=True):
            if wanted is None or o in wanted:
                try:
                    dt = np.dtype(_PROFILER_TYPES.get(dtype, dtype))
                except TypeError:  # a type numpy cannot size (string, sequence, map): left unknown
                    continue
                got[o] = TensorInfo(tuple(int(d) for d in shape), dt)
    return got


def bound_inputs(
    model: ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """The input shapes the analysis runs ``model`` at (dynamic dims bound as ``tensor_infos`` binds them)."""
    from rooftop.shapes import as_sets, bind

    sets = as_sets(input_shapes)
    return {k: tuple(v) for k, v in bind(graph_inputs(model), sets[0] if sets else {})[0].items()}


def remember(memo: ShapeMemo, model: ModelProto, shapes_by_node: Mapping[str, list]) -> int:
    """Put the output shapes of a profiled run of ``model`` (at the inputs ``bound_inputs`` gives)
    into ``memo``, for its analysis and the next models' to start from; returns how many."""
    got = _match_profile(model, shapes_by_node)
    keys = _memo_keys(model)
    memo.update((keys[o], info) for o, info in got.items() if o in keys)
    return len(got)


def _shapes_from_run(model: ModelProto, bound: Mapping[str, Sequence[int]], names: list[str]) -> dict[str, TensorInfo]:
    """Run the model once with the missing tensors as extra outputs. The outputs are appended to the
    model's own graph for the session's creation and removed right after (a copy would duplicate
    every weight: 1.3 GB more on a 1.3 GB decoder)."""
    g = model.graph
    n_out = len(g.output)
    have = {o.name for o in g.output}
    try:
        g.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
        specs = graph_inputs(model)
        feeds = random_inputs(
            specs, {s.name: tuple(bound.get(s.name, [])) for s in specs}, seed=0, highs=index_bounds(model)
        )
        sess = make_session(model, prepack=False)
    except Exception:  # noqa: BLE001 - ops onnxruntime cannot run stay unknown
        return {}
    finally:
        while len(g.output) > n_out:
            g.output.pop()
    try:
        outs = sess.run(names, feeds)
    except Exception:  # noqa: BLE001
        return {}
    # sequences and maps come back as lists and dicts: no shape to give, they stay unknown
    return {
        n: TensorInfo(tuple(int(d) for d in v.shape), v.dtype) for n, v in zip(names, outs) if isinstance(v, np.ndarray)
    }


# ---- rules ------------------------------------------------------------------------------------------

Rule = Callable[[onnx.NodeProto, list, list, dict], "tuple[float, float] | str"]
RULES: dict[str, Rule] = {}


def rule(*ops: str):
    def deco(fn):
        for o in ops:
            RULES[o] = fn
        return fn

    return deco


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _numel(info: TensorInfo | None) -> int | None:
    return None if info is None else info.numel


def _conv_like(node, ins, outs, attrs, transpose=False, integer=False):
    x, w, y = ins[0], ins[1] if len(ins) > 1 else None, outs[0]
    if x is None or w is None or y is None or x.shape is None or w.shape is None or y.shape is None:
        return "shapes unknown"
    g = int(attrs.get("group", 1))
    k = math.prod(w.shape[2:]) if len(w.shape) > 2 else 1
    if not transpose:
        cin_per_group = w.shape[1]
        macs = math.prod(y.shape) * cin_per_group * k
    else:
        cout_per_group = w.shape[1]
        macs = math.prod(x.shape) * cout_per_group * k
    ops = 2.0 * macs
    bias_idx = 8 if node.op_type == "QLinearConv" else 2
    if len(node.input) > bias_idx and node.input[bias_idx]:
        ops += math.prod(y.shape)
    if node.op_type == "FusedConv":
        ops += math.prod(y.shape)  # the fused activation
        if len(node.input) > 3 and node.input[3]:
            ops += math.prod(y.shape)  # the fused sum
    _ = g
    return (0.0, ops) if integer else (ops, 0.0)


@rule("Conv", "FusedConv", "NhwcConv")
def _conv(node, ins, outs, attrs):
    return _conv_like(node, ins, outs, attrs)


@rule("ConvTranspose")
def _convt(node, ins, outs, attrs):
    return _conv_like(node, ins, outs, attrs, transpose=True)


@rule("ConvInteger")
def _convint(node, ins, outs, attrs):
    return _conv_like(node, ins, outs, attrs, integer=True)


@rule("QLinearConv")
def _qlinearconv(node, ins, outs, attrs):
    # inputs: x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B
    return _conv_like(node, [ins[0], ins[3]], outs, attrs, integer=True)


def _matmul_ops(a: TensorInfo, b: TensorInfo, y: TensorInfo) -> float | None:
    if a.shape is None or y.shape is None:
        return None
    k = a.shape[-1] if len(a.shape) >= 1 else 1
    return 2.0 * math.prod(y.shape) * k


@rule("MatMul", "FusedMatMul")
def _matmul(node, ins, outs, attrs):
    if None in (ins[0], ins[1], outs[0]):
        return "shapes unknown"
    ops = _matmul_ops(ins[0], ins[1], outs[0])
    if ops is None:
        return "shapes unknown"
    if node.op_type == "FusedMatMul" and int(attrs.get("transA", 0)) and ins[0].shape and len(ins[0].shape) >= 2:
        ops = 2.0 * math.prod(outs[0].shape) * ins[0].shape[-2]
    return ops, 0.0


@rule("MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
def _matmul_int(node, ins, outs, attrs):
    b_idx = 3 if node.op_type == "QLinearMatMul" else 1
    a, b, y = ins[0], ins[b_idx] if len(ins) > b_idx else None, outs[0]
    if a is None or b is None or y is None:
        return "shapes unknown"
    ops = _matmul_ops(a, b, y)
    return "shapes unknown" if ops is None else (0.0, ops)


@rule("Gemm")
def _gemm(node, ins, outs, attrs):
    a, y = ins[0], outs[0]
    if a is None or y is None or a.shape is None or y.shape is None:
        return "shapes unknown"
    k = a.shape[0] if int(attrs.get("transA", 0)) else a.shape[1]
    ops = 2.0 * math.prod(y.shape) * k
    if len(node.input) > 2 and node.input[2]:
        ops += math.prod(y.shape)
    return ops, 0.0


@rule("QGemm")
def _qgemm(node, ins, outs, attrs):
    a, y = ins[0], outs[0]
    if a is None or y is None or a.shape is None or y.shape is None:
        return "shapes unknown"
    k = a.shape[0] if int(attrs.get("transA", 0)) else a.shape[1]
    return 0.0, 2.0 * math.prod(y.shape) * k


@rule("Einsum")
def _einsum(node, ins, outs, attrs):
    eq = attrs.get("equation", b"")
    eq = eq.decode() if isinstance(eq, bytes) else str(eq)
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, info in zip(terms, ins):
        if info is None or info.shape is None or "..." in term:
            return "Einsum with ellipsis or unknown shapes"
        for ch, d in zip(term, info.shape):
            sizes[ch] = max(sizes.get(ch, 1), int(d))
    total = float(math.prod(sizes.values())) if sizes else 1.0
    out_letters = set(rhs) if _ else set()
    contracted = set(sizes) - out_letters
    return (2.0 * total if contracted else total), 0.0


def _per_elem(k: float, which: str = "out"):
    def fn(node, ins, outs, attrs):
        t = outs[0] if which == "out" else ins[0]
        n = _numel(t)
        if n is None:
            return "shapes unknown"
        return k * n, 0.0

    return fn


for _op in ELEMENTWISE:
    RULES[_op] = _per_elem(1.0)
RULES["BatchNormalization"] = _per_elem(2.0)
for _op in (
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "MeanVarianceNormalization",
    "RMSNormalization",
):
    RULES[_op] = _per_elem(5.0)
for _op in ("Softmax", "LogSoftmax", "Hardmax"):
    RULES[_op] = _per_elem(3.0)
for _op in REDUCE:
    RULES[_op] = _per_elem(1.0, "in")
for _op in MOVEMENT:
    RULES[_op] = lambda node, ins, outs, attrs: (0.0, 0.0)


@rule("MaxPool", "AveragePool", "LpPool")
def _pool(node, ins, outs, attrs):
    y = outs[0]
    if y is None or y.shape is None:
        return "shapes unknown"
    k = math.prod(attrs.get("kernel_shape", [1]))
    return float(math.prod(y.shape) * k), 0.0


@rule("QLinearAveragePool")
def _qpool(node, ins, outs, attrs):
    r = _pool(node, ins, outs, attrs)
    return r if isinstance(r, str) else (0.0, r[0])


@rule("Resize", "Upsample")
def _resize(node, ins, outs, attrs):
    x, y = ins[0], outs[0]
    if x is None or y is None or x.shape is None or y.shape is None:
        return "shapes unknown"
    mode = attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    k = sum(1 for a, b in zip(x.shape, y.shape) if a != b)
    per = 0 if mode == "nearest" else (2 * 2**k if mode == "linear" else 2 * 4**k)
    return float(per * math.prod(y.shape)), 0.0


@rule("LSTM", "GRU", "RNN")
def _rnn(node, ins, outs, attrs):
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or w is None or x.shape is None or w.shape is None:
        return "shapes unknown"
    seq, batch, inp = x.shape if int(attrs.get("layout", 0)) == 0 else (x.shape[1], x.shape[0], x.shape[2])
    dirs = w.shape[0]
    h = int(attrs.get("hidden_size", w.shape[1] // {"LSTM": 4, "GRU": 3, "RNN": 1}[node.op_type]))
    gates, extra = {"LSTM": (4, 10), "GRU": (3, 8), "RNN": (1, 2)}[node.op_type]
    return float(seq * batch * dirs * (2 * gates * h * (inp + h) + extra * h)), 0.0


@rule("Attention")
def _ms_attention(node, ins, outs, attrs):
    x, w = ins[0], ins[1] if len(ins) > 1 else None
    if x is None or w is None or x.shape is None or w.shape is None or len(x.shape) != 3:
        return "shapes unknown"
    b, s, hidden = x.shape
    out_hidden = w.shape[1] // 3
    proj = 2.0 * b * s * hidden * w.shape[1]
    att = 2.0 * 2 * b * s * s * out_hidden + 3.0 * b * int(attrs.get("num_heads", 1)) * s * s
    return proj + att, 0.0


@rule("MultiHeadAttention", "GroupQueryAttention")
def _mha(node, ins, outs, attrs):
    q, k = ins[0], ins[1] if len(ins) > 1 else None
    if q is None or q.shape is None or len(q.shape) != 3:
        return "shapes unknown"
    b, s, hidden = q.shape
    skv = k.shape[1] if (k is not None and k.shape is not None and len(k.shape) == 3) else s
    return 2.0 * 2 * b * s * skv * hidden + 3.0 * b * int(attrs.get("num_heads", 1)) * s * skv, 0.0


@rule("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
def _qdq(node, ins, outs, attrs):
    n = _numel(ins[0])
    if n is None:
        return "shapes unknown"
    return 0.0, 2.0 * n


for _op in QLINEAR_ELEMENTWISE:
    RULES[_op] = lambda node, ins, outs, attrs: (
        "shapes unknown" if _numel(outs[0]) is None else (0.0, 2.0 * _numel(outs[0]))
    )
RULES["QLinearGlobalAveragePool"] = lambda node, ins, outs, attrs: (
    "shapes unknown" if _numel(ins[0]) is None else (0.0, float(_numel(ins[0])))
)
for _op in METADATA:
    RULES[_op] = lambda node, ins, outs, attrs: (0.0, 0.0)


def _peak_dtype(node: onnx.NodeProto, ins: list, int_ops: float) -> str:
    if int_ops:
        return "int8"
    for t in ins:
        if t is not None and t.dtype is not None and t.dtype.kind == "f":
            return "fp16" if t.dtype.itemsize == 2 else "fp32" if t.dtype.itemsize == 4 else "fp64"
    return "fp32"


def node_cost(node: onnx.NodeProto, infos: Mapping[str, TensorInfo]) -> NodeCost:
    name = node.name or (node.output[0] if node.output else node.op_type)
    ins = [infos.get(i) if i else None for i in node.input]
    outs = [infos.get(o) if o else None for o in node.output]
    c = NodeCost(name, node.op_type)
    if node.op_type in METADATA:
        c.metadata = True
        return c
    if node.op_type in ("If", "Loop", "Scan"):
        c.known, c.reason = False, "control flow: the cost depends on the branch or trip count"
        return c
    fn = RULES.get(node.op_type)
    if fn is None:
        c.known, c.reason = False, f"no cost rule for {node.domain + '.' if node.domain else ''}{node.op_type}"
        return c
    try:
        r = fn(node, ins, outs, _attrs(node))
    except Exception as e:  # noqa: BLE001
        r = f"cost rule failed: {e}"
    if isinstance(r, str):
        c.known, c.reason = False, r
        return c
    c.flops, c.int_ops = float(r[0]), float(r[1])
    read = [t.nbytes for i, t in zip(node.input, ins) if i]
    written = [t.nbytes for o, t in zip(node.output, outs) if o]
    if any(b is None for b in read + written):
        c.known, c.reason = False, "tensor sizes unknown"
        c.flops = c.int_ops = 0.0
        return c
    c.bytes_read, c.bytes_written = float(sum(read)), float(sum(written))
    c.dtype = _peak_dtype(node, ins, c.int_ops)
    c.transcendental = node.op_type in TRANSCENDENTAL
    return c


def peak_activation_bytes(model: ModelProto, infos: Mapping[str, TensorInfo]) -> int:
    """Largest sum of live activation tensors, walking nodes in order. Outputs of metadata ops
    alias their input's buffer; weights are not activations."""
    weights = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"
    }
    root: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity") and n.input and n.output:
            src = n.input[0]
            root[n.output[0]] = root.get(src, src)
    last_use: dict[str, int] = {}
    for i, n in enumerate(model.graph.node):
        for t in n.input:
            if t:
                last_use[root.get(t, t)] = i
    end = len(model.graph.node)
    for o in model.graph.output:
        last_use[root.get(o.name, o.name)] = end
    live: dict[str, int] = {}
    peak = 0
    for vi in model.graph.input:
        if vi.name not in weights:
            live[vi.name] = (infos.get(vi.name) and infos[vi.name].nbytes) or 0
    dying: dict[int, list[str]] = {}  # node index -> tensors last used there (freed after it)
    for t in live:
        dying.setdefault(max(last_use.get(t, -1), 0), []).append(t)
    total = peak = sum(live.values())
    for i, n in enumerate(model.graph.node):
        for o in n.output:
            if o and o not in weights and o not in root and o not in live:
                info = infos.get(o)
                live[o] = info.nbytes if info is not None and info.nbytes is not None else 0
                total += live[o]
                dying.setdefault(max(last_use.get(o, -1), i), []).append(o)
        peak = max(peak, total)
        for t in dying.pop(i, ()):
            total -= live.pop(t)
    return int(peak)


def analyze(
    model: ModelProto,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    *,
    allow_run: bool = True,
    memo: ShapeMemo | None = None,
) -> ModelCost:
    infos, source, bound = tensor_infos(model, input_shapes, allow_run=allow_run, memo=memo)
    nodes = [node_cost(n, infos) for n in model.graph.node]
    for c, layer in zip(nodes, node_layers(model)):
        c.layer = layer
    t = Totals(nodes=len(nodes))
    by: dict[str, dict[str, float]] = {}
    for c in nodes:
        if c.known:
            t.flops += c.flops
            t.int_ops += c.int_ops
            t.bytes += c.bytes
        else:
            t.unknown += 1
        d = by.setdefault(c.op_type, {"count": 0, "flops": 0.0, "int_ops": 0.0, "bytes": 0.0, "unknown": 0})
        d["count"] += 1
        d["flops"] += c.flops
        d["int_ops"] += c.int_ops
        d["bytes"] += c.bytes
        d["unknown"] += 0 if c.known else 1
    for tensor in model.graph.initializer:
        n = math.prod(tensor.dims) if tensor.dims else 1
        t.params += n
        info = infos.get(tensor.name)
        t.param_bytes += (info.nbytes or 0) if info is not None else 0
    t.peak_activation_bytes = peak_activation_bytes(model, infos)
    return ModelCost(nodes, t, by, [c for c in nodes if not c.known], source, bound)


_LAYER = re.compile(r"(?:^|[./_])(?:layers?|blocks?|h|encoder\.layer|decoder\.layers?)[./_](\d+)(?=[./_]|$)")


def node_layers(model: ModelProto) -> list[str]:
    """The repeated block each node belongs to, as exporters name them: in the node's name
    (``/model/layers.3/self_attn/...``), else in a weight it reads (``model.layers.3.mlp...``; a
    weight without a number puts it outside the blocks), else the deepest block among the nodes that
    produce its inputs (a Softmax between two MatMuls of block 3 is block 3). Nodes before the first
    block (embedding, mask) and after the last (final norm, head) have none."""

    def number(text: str) -> int | None:
        m = _LAYER.search(text)
        return int(m.group(1)) if m else None

    # weights (16 elements or more) name their block, or say the node is outside every block
    # (the final norm and the LM head read ``model.norm.weight``, ``lm_head.weight``)
    weights = {t.name for t in model.graph.initializer if math.prod(t.dims) >= 16}
    of: dict[str, int] = {}
    out: list[str] = []
    for n in model.graph.node:
        k = number(n.name)
        named = [i for i in n.input if i in weights]
        if k is None and named:
            k = next((v for v in (number(i) for i in named) if v is not None), None)
        elif k is None:
            k = max((of[i] for i in n.input if i in of), default=None)
        if k is not None:
            for o in n.output:
                of[o] = k
        out.append("" if k is None else str(k))
    return out


def human(n: float, unit: str = "") -> str:
    """1234567 -> '1.23 M'."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for k, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= k:
            return f"{n / k:.3g} {s}{unit}"
    return f"{n:.3g} {unit}".rstrip()
