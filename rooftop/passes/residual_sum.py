"""residual-sum: on onnxruntime's CPU provider, the residual Add in front of a LayerNormalization
is written as a two-input Sum, so that onnxruntime does not fuse the pair into its slower kernel.

Algebra. ``Add(a, b) = Sum(a, b)``: the same elementwise float addition with the same
broadcasting (Sum takes multidirectional broadcasting since opset 8). Exact.

Why. At ORT_ENABLE_EXTENDED and above, onnxruntime's SkipLayerNormFusion replaces
``LayerNormalization(Add(a, b))`` (and a bias Add before it) with com.microsoft
SkipLayerNormalization whenever the Add's only reader is the norm and both inputs are 3-D of one
known shape. Its CPU kernel runs slower than the Add and LayerNormalization kernels it replaces:
on a 4-layer RoBERTa at 1×128×256, nine SkipLayerNormalization took 720 µs a run against 258 µs
for the Adds and LayerNormalizations they replaced (onnxruntime's profiler, 2 threads), and the
whole model ran ×1.07 against ×0.85 (benchmarks/RESULTS.md). The fusion matches the op type
Add only, so the Sum keeps the two kernels. The cleaner a graph's shapes, the more often the
fusion fires: an export whose shape arithmetic was folded away shows the loss, the same export
as given may not.

It runs right after norm-fusion, before the other fusions: a fusion that lets onnxruntime see the
residual's shapes (RoBERTa's attention, whose Reshapes hid them) otherwise measures slower at its
gate for a reason that is not its own (×1.09, SkipLayerNormalization 0.08→0.71 ms). The gate
times it against its input (Sum is a new op type) and, as it adds no node and no work, keeps it
unless clearly slower: Sum and Add are the same kernel cost (bench_skip_layernorm.py, ×0.99–1.04
where nothing fuses), and where onnxruntime would fuse, the pass is faster.

Idle on another runtime or execution provider (their kernels are not the slow ones). Refuses
(the Add stays, the reason on the LayerNormalization): the sum read by another node or a graph
output (onnxruntime does not fuse it then); inputs that are not 3-D of one shape (likewise);
element types other than float32, float16 and bfloat16 (likewise).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._match import matches, only_consumer, producer, same_shape
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

CPU = "CPUExecutionProvider"
_FUSED_TYPES = (np.float32, np.float16)
NOT_HERE = "only onnxruntime's CPU provider fuses Add + LayerNormalization into a slower kernel"


def _residual(graph: gs.Graph, ln: gs.Node) -> gs.Node | None:
    """The residual Add read only by ``ln``, which onnxruntime would fuse with it; None when ``ln``
    does not read an Add (not a candidate); ``Refused`` when onnxruntime would not fuse them."""
    add = producer(ln.inputs[0], "Add")
    if add is None or len(add.inputs) != 2:
        return None
    if only_consumer(add.outputs[0], graph) is not ln:
        raise Refused("the sum is read by another node or is a graph output: onnxruntime does not fuse it")
    a, b = add.inputs
    known = a.shape is not None and b.shape is not None  # (a com.microsoft op's output: onnxruntime knows it)
    if known and (len(a.shape) != 3 or not same_shape(a.shape, b.shape)):
        raise Refused("the Add's inputs are not 3-D of one shape: onnxruntime does not fuse it")
    dtype = ln.inputs[1].dtype  # γ: a constant, its type known where the activation's may not be
    if dtype is None or not any(np.dtype(dtype) == t for t in _FUSED_TYPES) and str(dtype) != "bfloat16":
        raise Refused("not float32/float16/bfloat16: onnxruntime does not fuse it")
    return add


class ResidualSum(Pass):
    name = "residual-sum"
    summary = "onnxruntime CPU: the residual Add before a LayerNormalization → Sum (keeps its faster kernels)"
    needs_shapes = True
    needs_ops = frozenset({"LayerNormalization"})

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        if ctx.runtime != "onnxruntime" or ctx.provider != CPU:
            return PassResult(notes=[NOT_HERE])
        return super().idle(model, ctx)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        for _ln, add in matches(graph, res, ("LayerNormalization",), _residual):
            add.op = "Sum"
            res.count("residual Add → Sum", node=add)
        return res
