"""requant: keep int8 graphs in int8 — integer ops instead of DequantizeLinear → float op → QuantizeLinear.

A QDQ model (what ``onnxruntime.quantization.quantize_static`` writes, and what QAT
exports produce) expresses every quantized op as DQ → float op → Q. A runtime that
does not fuse those groups moves every activation as int8, then as fp32 into the op
and fp32 out of it, then as int8 again: more bytes than the fp32 model. Rewrites:

1. ``DQ(s, z) → Q(s, z)`` with equal scale, zero point and type: removed (exact).
2. Data movement between a DQ and a Q with the same parameters — MaxPool, Reshape,
   Transpose, Flatten, Squeeze, Unsqueeze, Slice, Gather, Resize (nearest), Identity,
   and Concat whose inputs all share them — runs on the int8 tensor directly (exact:
   these ops commute with the monotonic affine map, and ``Q(DQ(x)) == x``).
3. ``DQ(x) → Conv → [Relu] → Q`` becomes QLinearConv and ``DQ(a) → MatMul → [Relu] → Q``
   becomes QLinearMatMul (standard domain): with constant 2-D weights, per-tensor or
   per-channel weight scales (per-channel with ``--target onnxruntime`` only: OpenVINO, a runtime
   a portable model must load in, takes only per-tensor scales in these ops); with a second
   quantized activation (attention's scores and value product: ``DQ(a) → MatMul ← DQ(b)``),
   per-tensor scales on both; the Conv bias, when it is ``DQ(int32, x_scale·w_scale)`` as
   quantizers write it, is used as is, a float bias is quantized at
   ``x_scale·w_scale``. A Relu before the Q is absorbed when the Q's zero point is
   the bottom of its range (then ``Q(relu(v)) == Q(v)`` for every v); otherwise the
   group is left alone. These integer kernels accumulate in int32 and requantize
   once, so a result may differ from the float path by one quantization step.
4. A QLinear producer whose only consumer is ``DQ(s1) → Q(s2)`` takes ``s2`` (and its
   zero point) as its output scale: a true requantize (within one step). Different
   scales are never merged anywhere else (onnxruntime's DoubleQDQPairsRemover does,
   and changes outputs by a full step).

5. With ``--target onnxruntime``: DQ → Add/Mul/Concat/AveragePool/GlobalAveragePool/
   Sigmoid/LeakyRelu/Softmax → Q become com.microsoft QLinearAdd, QLinearMul, QLinearConcat,
   QLinearAveragePool, QLinearGlobalAveragePool, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax,
   and DQ → Gemm → Q becomes QGemm (int32 bias at a_scale·b_scale).
7. ``DQ(s, z) → Relu/Clip → Q(s, z)`` (same parameters, constant bounds) becomes a Clip on the
   integers between ``Q(min)`` and ``Q(max)`` — exact, since Q∘clip∘DQ = clip∘(Q∘DQ) for a
   monotonic affine map (symmetric int8 activations leave ReLU6 unabsorbed by QLinearConv).
6. ``QuantizeLinear(float constant)`` — a weight as PyTorch's QAT export writes it — is folded
   to the int8 constant the runtime would compute (round half to even, saturate), so the
   DQ → Conv/MatMul/Gemm group it feeds can become an integer op.

Refuses: blocked quantization, int4/uint4 and float8 types (passed through),
non-constant scales or zero points, weights that are not int8/uint8 constants, a
DQ→op→Q group whose float tensor is observed elsewhere (another consumer or a graph
output), mismatched activation types between input and output. Verification compares
quantized outputs within one quantization step.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._graph import Namer, bypass, const_value, is_graph_output, single_consumer
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

MOVEMENT = {
    "MaxPool",
    "Reshape",
    "Transpose",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Gather",
    "Resize",
    "Identity",
}
INT8 = (np.dtype(np.int8), np.dtype(np.uint8))
MS_QLINEAR = {
    "Add": "QLinearAdd",
    "Mul": "QLinearMul",
    "Concat": "QLinearConcat",
    "AveragePool": "QLinearAveragePool",
    "GlobalAveragePool": "QLinearGlobalAveragePool",
    "Sigmoid": "QLinearSigmoid",
    "LeakyRelu": "QLinearLeakyRelu",
    "Gemm": "QGemm",
    "Softmax": "QLinearSoftmax",
}


class QParams:
    """Constant scale / zero point of a Q or DQ node."""

    def __init__(self, node: gs.Node) -> None:
        self.node = node
        self.scale = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
        zp = const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        self.zp = zp
        self.axis = int(node.attrs.get("axis", 1))
        self.block = int(node.attrs.get("block_size", 0))

    @property
    def ok(self) -> bool:
        if self.scale is None or self.block:
            return False
        if self.zp is None:
            return False  # default zero point means uint8 0; be explicit and refuse
        return self.zp.dtype in INT8

    @property
    def per_tensor(self) -> bool:
        return self.scale is not None and self.scale.size == 1 and (self.zp is None or self.zp.size == 1)

    def same(self, other: QParams) -> bool:
        return (
            self.ok
            and other.ok
            and self.per_tensor
            and other.per_tensor
            and self.zp.dtype == other.zp.dtype
            and np.array_equal(self.scale.astype(np.float32), other.scale.astype(np.float32))
            and np.array_equal(self.zp, other.zp)
        )

    @property
    def qmin(self) -> int:
        return -128 if self.zp.dtype == np.int8 else 0


def _become(node: gs.Node, q: QParams, op: str, inputs: list, attrs: dict, domain: str = "") -> None:
    """``node`` turns into the integer ``op`` and writes the Q's output; the Q goes."""
    out = q.node.outputs[0]
    q.node.inputs.clear()
    q.node.outputs.clear()
    node.op, node.domain, node.attrs = op, domain, attrs
    node.inputs.clear()
    node.inputs.extend(inputs)
    node.outputs.clear()
    node.outputs.append(out)


def _dq(t: gs.Tensor) -> QParams | None:
    if len(t.inputs) != 1 or t.inputs[0].op != "DequantizeLinear":
        return None
    p = QParams(t.inputs[0])
    return p if p.ok else None


def _constant_dq(
    names: Namer, base: str, values: np.ndarray, scale: gs.Tensor | np.ndarray, zp: np.ndarray
) -> QParams | None:
    """QParams of a DequantizeLinear of constants (not inserted in the graph: its inputs are what
    the QLinear op that replaces the group reads)."""
    scale_t = scale if isinstance(scale, gs.Tensor) else gs.Constant(names.fresh(f"{base}_scale"), scale)
    dq = gs.Node(
        "DequantizeLinear",
        inputs=[gs.Constant(names.fresh(f"{base}_q"), values), scale_t, gs.Constant(names.fresh(f"{base}_zp"), zp)],
    )
    p = QParams(dq)
    return p if p.ok else None


def _scalar_as_quantized(names: Namer, t: gs.Tensor, dtype: np.dtype) -> QParams | None:
    """A float scalar constant ``c`` written exactly as a quantized tensor of ``dtype``: the value
    1 (or 0 with zero point 1, for a negative ``c`` in uint8) at scale ``|c|``, so that
    ``(v - zp)·scale == c``. Attention's ``scores * 1/sqrt(d)`` then runs as QLinearMul."""
    c = const_value(t)
    if c is None or c.size != 1 or c.dtype.kind != "f" or not np.isfinite(c).all() or float(c.reshape(-1)[0]) == 0.0:
        return None
    v = float(c.reshape(-1)[0])
    if dtype == np.uint8:
        q, zp = (1, 0) if v > 0 else (0, 1)
    else:
        q, zp = (1 if v > 0 else -1), 0
    return _constant_dq(
        names, t.name or "scalar", np.array(q, dtype), np.array(abs(v), np.float32), np.array(zp, dtype)
    )


def _retyped(names: Namer, d: QParams, dtype: np.dtype) -> QParams | None:
    """A DequantizeLinear of a constant, per-tensor, rewritten to the other 8-bit type
    (int8 v, z  <->  uint8 v + 128, z + 128, same scale): the same dequantized values."""
    v = const_value(d.node.inputs[0])
    if v is None or not d.per_tensor or v.dtype not in INT8 or np.dtype(dtype) not in INT8 or v.dtype == dtype:
        return None
    shift = 128 if np.dtype(dtype) == np.uint8 else -128
    return _constant_dq(
        names,
        f"{d.node.inputs[0].name or 'const'}_retyped",
        np.asarray(v.astype(np.int16) + shift).astype(dtype),
        d.node.inputs[1],
        np.asarray(d.zp.astype(np.int16) + shift).astype(dtype),
    )


def _fold_weight_q(graph: gs.Graph, q: gs.Node, res: PassResult, names: Namer) -> int:
    """``QuantizeLinear(float constant)`` (PyTorch's QDQ export writes weights so) becomes the
    int8 constant the runtime would compute: ``sat(rint(w / scale) + zp)`` in float32, round half
    to even, per tensor or per axis. Smaller than the float weight, and the DQ → Conv/MatMul
    group it feeds can then become an integer op."""
    p = QParams(q)
    w = const_value(q.inputs[0])
    if (
        w is None
        or w.dtype != np.float32
        or not p.ok
        or "output_dtype" in q.attrs
        or is_graph_output(graph, q.outputs[0])
    ):
        return 0
    shape = [1] * w.ndim
    if not p.per_tensor:
        if w.ndim == 0:
            return 0
        axis = p.axis % w.ndim
        if p.scale.size != w.shape[axis]:
            return 0
        shape[axis] = -1
    scale = p.scale.astype(np.float32).reshape(shape if p.scale.size > 1 else ())
    zp = p.zp.astype(np.int32).reshape(shape if p.zp.size > 1 else ())
    info = np.iinfo(p.zp.dtype)
    values = np.asarray(np.clip(np.rint(w / scale).astype(np.int64) + zp, info.min, info.max)).astype(p.zp.dtype)
    out = q.outputs[0]
    q.inputs.clear()
    q.outputs.clear()
    const = gs.Constant(names.fresh(f"{out.name}_int8"), values)
    for c in list(out.outputs):
        for i, t in enumerate(c.inputs):
            if t is out:
                c.inputs[i] = const
    res.count("weight QuantizeLinear folded to int8")
    return 1


def _clamp_bounds(node: gs.Node) -> tuple[float, float] | None:
    """(min, max) of a Relu or a Clip with constant (or absent) bounds, else None."""
    if node.op == "Relu":
        return 0.0, float("inf")
    if "min" in node.attrs or "max" in node.attrs:  # Clip before opset 11
        return float(node.attrs.get("min", -np.inf)), float(node.attrs.get("max", np.inf))
    vals = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        if len(node.inputs) > i and node.inputs[i].name:
            v = const_value(node.inputs[i])
            if v is None or v.size != 1:
                return None
            vals.append(float(v.reshape(-1)[0]))
        else:
            vals.append(default)
    return vals[0], vals[1]


def _q_after(graph: gs.Graph, t: gs.Tensor) -> QParams | None:
    if is_graph_output(graph, t):
        return None
    c = single_consumer(t)
    if c is None or c.op != "QuantizeLinear" or c.inputs[0] is not t:
        return None
    p = QParams(c)
    return p if p.ok else None


class Requant(Pass):
    name = "requant"
    summary = (
        "int8 graphs stay int8: drop DQ→Q pairs, data movement on int8, "
        "DQ→Conv/MatMul→Q to QLinearConv/QLinearMatMul, fold requantize"
    )

    needs_ops = frozenset({"DequantizeLinear"})
    rounds = 6  # a DQ→Q pair removed or a QLinear op written lets its neighbour's group match next round

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        return _Run(ctx.target, graph).round(graph)


class _Run:
    """The state of one requant run: the target (portable or onnxruntime)."""

    def __init__(self, target: str, graph: gs.Graph) -> None:
        self.target = target
        self.names = Namer(graph)  # one scan of the graph's names for every tensor this run creates

    def round(self, graph: gs.Graph) -> PassResult:
        """Every rule once over the graph (the template repeats the round while it rewrites)."""
        res = PassResult()
        for node in list(graph.nodes):
            if not node.outputs or node.domain not in ("", "ai.onnx", None):
                continue
            with res.refusing(node):
                self._rule(graph, node, res)
        return res

    def _rule(self, graph: gs.Graph, node: gs.Node, res: PassResult) -> None:
        if node.op == "QuantizeLinear":
            self._dq_q(graph, node, res) or _fold_weight_q(graph, node, res, self.names)
        elif node.op in MOVEMENT or node.op == "Concat":
            self._movement(graph, node, res)
        elif node.op in ("Conv", "MatMul"):
            self._qlinear(graph, node, res)
        elif node.op in ("Relu", "Clip"):
            self._int_clamp(graph, node, res)
        elif node.op in ("QLinearConv", "QLinearMatMul"):
            _fold_requant(graph, node, res)
        elif self.target == "onnxruntime" and node.op in MS_QLINEAR:
            self._ms_qlinear(graph, node, res)

    # 5. (target onnxruntime) com.microsoft QLinear* for elementwise, pooling, concat, Gemm
    def _ms_qlinear(self, graph: gs.Graph, node: gs.Node, res: PassResult) -> int:
        op = node.op
        y = node.outputs[0]
        q = _q_after(graph, y)
        if q is None:
            return 0
        if not q.per_tensor:
            raise Refused(f"{op}: output quantized per channel")
        if op == "Gemm":
            return self._qgemm(graph, node, q, res)
        data = list(range(len(node.inputs))) if op in ("Add", "Mul", "Concat") else [0]
        if op in ("Add", "Mul") and len(node.inputs) != 2:
            return 0
        if op not in ("Add", "Mul", "Concat") and any(t.name for t in node.inputs[1:]):
            raise Refused(f"{op}: takes inputs the QLinear form has no place for")
        dqs = [_dq(node.inputs[i]) for i in data]
        if op in ("Add", "Mul") and sum(d is None for d in dqs) == 1:
            k = dqs.index(None)
            dqs[k] = _scalar_as_quantized(self.names, node.inputs[k], q.zp.dtype)  # a float constant: exact int8 form
        if op in ("Add", "Mul"):  # a quantized constant of the other 8-bit type: shifted by 128, exactly
            dqs = [
                _retyped(self.names, d, q.zp.dtype) if d is not None and d.zp.dtype != q.zp.dtype else d for d in dqs
            ]
        if any(d is None for d in dqs):
            raise Refused(f"{op}: an input is neither dequantized nor a constant")
        if any(not d.per_tensor or d.zp.dtype != q.zp.dtype for d in dqs):
            raise Refused(f"{op}: an input is quantized per channel or as another type than the output")
        triples = [[d.node.inputs[0], d.node.inputs[1], d.node.inputs[2]] for d in dqs]
        ys, yz = q.node.inputs[1], q.node.inputs[2]
        if op in ("Add", "Mul"):
            inputs = triples[0] + triples[1] + [ys, yz]
        elif op == "Concat":
            inputs = [ys, yz] + [t for tr in triples for t in tr]
        else:
            inputs = triples[0] + [ys, yz]
        attrs = dict(node.attrs)
        if op in ("GlobalAveragePool", "AveragePool"):
            attrs["channels_last"] = 0
        if op == "Softmax":  # the axis means what it meant at the model's opset (it changed at 13)
            attrs = {
                "axis": int(node.attrs.get("axis", -1 if (graph.opset or 13) >= 13 else 1)),
                "opset": int(graph.opset or 13),
            }
        _become(node, q, MS_QLINEAR[op], inputs, attrs, "com.microsoft")
        res.count(f"{MS_QLINEAR[op]} (com.microsoft)")
        return 1

    def _qgemm(self, graph: gs.Graph, node: gs.Node, q: QParams, res: PassResult) -> int:
        a, b = _dq(node.inputs[0]), _dq(node.inputs[1])
        if a is None or b is None:
            raise Refused("Gemm: an input is not dequantized")
        if not a.per_tensor or a.zp.dtype != q.zp.dtype:
            raise Refused("Gemm: input quantized per channel or as another type than the output")
        bq = const_value(b.node.inputs[0])
        if bq is None or bq.ndim != 2 or not (b.per_tensor or b.scale.size in bq.shape):
            raise Refused("Gemm: weight not a constant 2-D tensor with per-tensor or per-column scales")
        if float(node.attrs.get("beta", 1.0)) != 1.0:
            raise Refused("Gemm: beta is not 1")
        transB = int(node.attrs.get("transB", 0))
        n_out = bq.shape[0] if transB else bq.shape[1]
        inputs = [*_operand(a), *_operand(b)]
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = _bias(node.inputs[2], a, b, n_out)
            if bias is None:
                raise Refused("bias is not an int32 constant at input scale × weight scale, nor a float constant")
            inputs.append(bias)
        else:
            inputs.append(gs.Variable.empty())
        inputs += [q.node.inputs[1], q.node.inputs[2]]
        attrs = {k: v for k, v in node.attrs.items() if k in ("transA", "transB", "alpha")}
        _become(node, q, "QGemm", inputs, attrs, "com.microsoft")
        res.count("QGemm (com.microsoft)")
        return 1

    # 1. DQ -> Q with equal parameters
    def _dq_q(self, graph: gs.Graph, q: gs.Node, res: PassResult) -> int:
        dq = _dq(q.inputs[0])
        if dq is None:
            return 0
        qp = QParams(q)
        if not qp.same(dq):
            return 0  # a true requantize: _fold_requant takes it after a QLinear producer
        if bypass(graph, q, dq.node.inputs[0], q.outputs[0]):
            res.count("DQ→Q pair removed")
            return 1
        raise Refused("DQ→Q joins a graph input or constant to a graph output")

    # 2. data movement on int8
    def _movement(self, graph: gs.Graph, node: gs.Node, res: PassResult) -> int:
        y = node.outputs[0]
        q = _q_after(graph, y)
        if q is None:
            return 0
        if not q.per_tensor:
            raise Refused(f"{node.op}: output quantized per channel")
        if node.op == "Resize":
            mode = node.attrs.get("mode", "nearest")
            if (mode.decode() if isinstance(mode, bytes) else mode) != "nearest":
                raise Refused("Resize: mode is not nearest (interpolation is not exact on integers)")
        data_idx = list(range(len(node.inputs))) if node.op == "Concat" else [0]
        dqs = [_dq(node.inputs[i]) for i in data_idx]
        if any(d is None for d in dqs):
            raise Refused(f"{node.op}: an input is not dequantized")
        if any(not d.same(q) for d in dqs):
            raise Refused(f"{node.op}: input and output quantization differ")
        for i, d in zip(data_idx, dqs):
            node.inputs[i] = d.node.inputs[0]
        qnode = q.node
        out = qnode.outputs[0]
        qnode.inputs.clear()
        qnode.outputs.clear()
        node.outputs[0] = out
        res.count(f"{node.op} on int8")
        return 1

    # 2b. DQ(s, z) -> Relu/Clip -> Q(s, z)  ==>  Clip on the integers (exact)
    def _int_clamp(self, graph: gs.Graph, node: gs.Node, res: PassResult) -> int:
        q = _q_after(graph, node.outputs[0])
        d = _dq(node.inputs[0])
        if q is None or d is None:
            return 0
        if (graph.opset or 0) < 12:  # Clip on int8/uint8 needs opset 12
            raise Refused(f"{node.op}: an integer Clip needs opset 12 (--opset 13)")
        if not q.per_tensor or not d.same(q):
            raise Refused(f"{node.op}: input and output quantization differ")
        bounds = _clamp_bounds(node)
        if bounds is None:
            raise Refused("Clip: bounds are not constant scalars")
        s, z = float(q.scale.reshape(-1)[0]), int(q.zp.reshape(-1)[0])
        info = np.iinfo(q.zp.dtype)

        def level(v: float, default: int) -> int:
            return (
                default
                if not np.isfinite(v)
                else int(np.clip(np.rint(np.float32(v) / np.float32(s)) + z, info.min, info.max))
            )

        lo, hi = level(bounds[0], info.min), level(bounds[1], info.max)
        names = self.names
        out = q.node.outputs[0]
        q.node.inputs.clear()
        q.node.outputs.clear()
        node.op, node.attrs = "Clip", {}
        node.inputs.clear()
        node.inputs.extend(
            [
                d.node.inputs[0],
                gs.Constant(names.fresh(f"{out.name}_lo"), np.array(lo, q.zp.dtype)),
                gs.Constant(names.fresh(f"{out.name}_hi"), np.array(hi, q.zp.dtype)),
            ]
        )
        node.outputs[0] = out
        res.count("Relu/Clip as an integer Clip")
        return 1

    # 3. DQ -> Conv/MatMul [-> Relu] -> Q  ==>  QLinearConv / QLinearMatMul
    def _qlinear(self, graph: gs.Graph, node: gs.Node, res: PassResult) -> int:
        found = _qlinear_group(graph, node, self.target)
        if found is None:
            return 0
        x, w, wq, q, relu = found
        inputs = [*_operand(x), *_operand(w), q.node.inputs[1], q.node.inputs[2]]
        if node.op == "Conv":
            if wq.ndim < 3 or not (w.per_tensor or (w.axis in (0, -wq.ndim) and w.scale.size == wq.shape[0])):
                raise Refused("Conv: weight scales neither per tensor nor per output channel")
            if len(node.inputs) > 2 and node.inputs[2].name:
                bias = _bias(node.inputs[2], x, w, wq.shape[0])
                if bias is None:
                    raise Refused("bias is not an int32 constant at input scale × weight scale, nor a float constant")
                inputs.append(bias)
            new_op, attrs = "QLinearConv", dict(node.attrs)
        else:  # MatMul: constant 2-D weights [K, N], or two per-tensor activations (any rank)
            if wq is not None and (
                wq.ndim != 2 or not (w.per_tensor or (w.scale.size == wq.shape[1] and w.axis in (1, -1)))
            ):
                raise Refused("MatMul: weight not 2-D with per-tensor or per-column scales")
            new_op, attrs = "QLinearMatMul", {}
        if relu is not None:
            relu.inputs.clear()
            relu.outputs.clear()
        _become(node, q, new_op, inputs, attrs)
        res.count(
            f"{new_op} from DQ→{'Conv' if new_op == 'QLinearConv' else 'MatMul'}{'→Relu' if relu is not None else ''}→Q"
        )
        return 1


def _qlinear_group(graph: gs.Graph, node: gs.Node, target: str):
    """(x, w, the constant int8 weight or None, the QuantizeLinear after it, a Relu between) of a
    DQ → Conv/MatMul (→ Relu) → Q group around ``node``; None when it is not one; ``Refused``."""
    if len(node.inputs) < 2:
        return None
    x = _dq(node.inputs[0])
    w = _dq(node.inputs[1])
    if x is None and w is None:
        return None
    if x is None or w is None:
        raise Refused(f"{node.op}: one input is dequantized, the other is float")
    if not x.per_tensor:
        raise Refused(f"{node.op}: activation quantized per channel")
    wq = const_value(w.node.inputs[0])
    if wq is None:  # activation x activation (attention scores, the value product): MatMul only
        if node.op != "MatMul" or not w.per_tensor:
            raise Refused(
                f"{node.op}: second input is a quantized activation with "
                "per-channel scales (or a Conv weight computed at run time)",
            )
    elif wq.dtype not in INT8:
        raise Refused(f"{node.op}: weight is {wq.dtype}, not int8/uint8")
    y = node.outputs[0]
    relu = None
    c = single_consumer(y)
    if c is not None and c.op == "Relu" and not is_graph_output(graph, y):
        relu, y = c, c.outputs[0]
    q = _q_after(graph, y)
    if q is None:
        raise Refused(f"{node.op}: its float output is used (no single QuantizeLinear after it)")
    if not q.per_tensor or q.zp.dtype != x.zp.dtype:
        raise Refused(f"{node.op}: output quantized per channel or as another type than the input")
    if relu is not None and int(q.zp.reshape(-1)[0]) != q.qmin:
        raise Refused(f"{node.op}: the Relu after it is not implied by the output zero point")
    if wq is not None and not w.per_tensor and target == "portable":
        raise Refused(
            f"{node.op}: weight quantized per channel, which QLinear{node.op} takes in onnxruntime "
            "but not in OpenVINO (portable keeps the QDQ form; --target onnxruntime converts it)",
        )
    return x, w, wq, q, relu


def _operand(p: QParams) -> list[gs.Tensor]:
    """A QLinear op's (tensor, scale, zero point) of a DequantizeLinear's input (its zero point named)."""
    return [p.node.inputs[0], p.node.inputs[1], p.node.inputs[2]]


def _bias(t: gs.Tensor, x: QParams, w: QParams, cout: int) -> gs.Tensor | None:
    """The int32 bias at scale x_scale * w_scale (per output channel)."""
    target = (np.float64(x.scale.reshape(-1)[0]) * w.scale.astype(np.float64).reshape(-1)) * np.ones(cout)
    if len(t.inputs) == 1 and t.inputs[0].op == "DequantizeLinear":
        node = t.inputs[0]
        bq, bs = const_value(node.inputs[0]), const_value(node.inputs[1])
        bz = const_value(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
        if bq is None or bs is None or bq.dtype != np.int32 or (bz is not None and np.any(bz != 0)):
            return None
        if not np.allclose(bs.astype(np.float64) * np.ones(cout), target, rtol=1e-6, atol=0):
            return None
        return node.inputs[0]
    fb = const_value(t)
    if fb is None or fb.dtype.kind != "f":
        return None
    q = np.round(fb.astype(np.float64) / target)
    if np.any(np.abs(q) > 2**31 - 1):
        return None
    return gs.Constant(f"{t.name}_int32", q.astype(np.int32))


# 4. QLinear producer -> DQ(s1) -> Q(s2): the producer writes at s2
def _fold_requant(graph: gs.Graph, node: gs.Node, res: PassResult) -> int:
    y = node.outputs[0]
    if is_graph_output(graph, y):
        return 0
    dq = single_consumer(y)
    if dq is None or dq.op != "DequantizeLinear":
        return 0
    p1 = QParams(dq)
    if not p1.ok or not p1.per_tensor:
        return 0
    q = _q_after(graph, dq.outputs[0])
    if q is None or not q.per_tensor or q.zp.dtype != p1.zp.dtype:
        return 0
    node.inputs[6] = q.node.inputs[1]
    node.inputs[7] = q.node.inputs[2]
    out = q.node.outputs[0]
    for n in (q.node, dq):
        n.inputs.clear()
        n.outputs.clear()
    node.outputs[0] = out
    res.count("requantize folded into producer")
    return 1
