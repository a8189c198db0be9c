"""pad-channels: zero-pad Conv channel counts to the multiple that kernels block by.

Kernels work on blocks of channels: onnxruntime's NCHWc layout uses blocks of 8
(AVX2) or 16 (AVX-512) and leaves a Conv whose channel count is not a multiple
of the block on the slow path; tensor cores want multiples of 8 in fp16.

What it does. A Conv (standard domain, constant float weights, ``group == 1``)
whose output channels ``C`` are at least the multiple ``N`` but not a multiple
of it gets ``Cp = ceil(C / N) · N`` output channels: zero filters and zero bias
for the new ones. The padded tensor carries a *layout*: the position of each real
channel among ``Cp``. The layout flows through per-channel ops — BatchNormalization
(pad channels get scale 1, bias 0, mean 0, var 1), Relu, LeakyRelu, Clip, Sigmoid,
Tanh, HardSigmoid, HardSwish, Identity, Dropout, Mul/Add/Sub with a per-channel or
broadcast constant (scattered to the layout), Add/Mul/Sub of two tensors with the
same layout (residuals stay padded), Max/Average/Global pooling, Resize with scales,
depthwise Conv (``group`` grows to ``Cp``, zero filters), Concat on channels
(layouts are concatenated) and Flatten of a globally pooled ``[N, C, 1, 1]`` — into
the next Conv, whose input-channel weights are scattered to the layout with zero
columns for the padding, or into a Gemm/MatMul head, whose weights get zero rows. Wherever the exact
channel count is observable (graph outputs, Reshape/Flatten, Gemm/MatMul heads,
Softmax or reductions over channels, anything unknown) a
Gather on axis 1 (or a Slice when the real channels are a prefix) takes the real
channels back, so the outputs are identical in shape and value.

Pad channels may hold nonzero values (Sigmoid(0) = 0.5), never non-finite ones:
only ops that map finite values to finite values carry the padding, so a zero
weight times a pad value is always exactly zero.

When it runs. With ``--channel-multiple N`` (4, 8, 16, 32). Without it the
multiple comes from the hardware profile (``host``: 16 with AVX-512, 8 with AVX2;
GPU profiles: 8) and the pass only runs where the profile says padding pays
(``pad_pays``: x86 profiles whose onnxruntime blocks channels, and GPUs). It pays
only where the runtime blocks channels: the report shows the FLOPs and bytes added
next to the measured latency, so the trade is visible.

Refuses: the stem's input channels (a graph input is never padded); Convs with
fewer than ``N`` output channels (padding 3 to 16 would cost more than it saves);
grouped non-depthwise Convs, ConvTranspose, non-float or non-constant weights
(their inputs are sliced back instead); a padded Conv whose output reaches no other
Conv through padding-carrying ops (nothing would absorb the padding).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import Namer, const_value
from rooftop.passes.base import Pass, PassContext, PassResult

UNARY = {
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "Dropout",
    "Neg",
    "Abs",
}
POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
BINARY = {"Add", "Mul", "Sub"}


class Handled(Enum):
    """What a consumer did with padded inputs: carried the padding on to its output, or absorbed
    it in its weights (None where neither: the padding is sliced off before it)."""

    CARRIED = "carried"
    ABSORBED = "absorbed"


class Layout:
    """Where the real channels of a padded tensor sit among ``total`` channels."""

    def __init__(self, pos: np.ndarray, total: int) -> None:
        self.pos = np.asarray(pos, dtype=np.int64)
        self.total = int(total)

    @property
    def real(self) -> int:
        return len(self.pos)

    def same(self, other: Layout) -> bool:
        return self.total == other.total and np.array_equal(self.pos, other.pos)

    def is_prefix(self) -> bool:
        return np.array_equal(self.pos, np.arange(self.real))


def _std(node: gs.Node) -> bool:
    return node.domain in ("", "ai.onnx", None)


def _float_const(t: gs.Tensor) -> np.ndarray | None:
    v = const_value(t)
    return v if v is not None and v.dtype.kind == "f" else None


def _scatter(values: np.ndarray, layout: Layout, fill: float, axis: int = 0) -> np.ndarray:
    shape = list(values.shape)
    shape[axis] = layout.total
    out = np.full(shape, fill, dtype=values.dtype)
    idx = [slice(None)] * values.ndim
    idx[axis] = layout.pos
    out[tuple(idx)] = values
    return out


class PadChannels(Pass):
    name = "pad-channels"
    summary = (
        "zero-pad Conv channels to the kernel block (4/8/16/32), carry the "
        "padding through per-channel ops, slice it off where observable"
    )
    needs_shapes = True
    needs_ops = frozenset({"Conv"})

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        n = ctx.channel_multiple
        if n is None:
            return PassResult(["not run: no --channel-multiple and the hardware profile does not say padding pays"])
        return PassResult() if n < 2 else super().idle(model, ctx)

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        assert ctx.channel_multiple is not None  # idle otherwise
        return _Padder(graph, ctx.channel_multiple).run()


class _Padder:
    """The state of one pad-channels run over one graph."""

    def __init__(self, graph: gs.Graph, n: int) -> None:
        self.n = n
        self.graph = graph
        self.layouts: dict[int, Layout] = {}  # id(tensor) -> layout
        self.slices: dict[int, gs.Tensor] = {}
        self.names = Namer(graph)
        self.res = PassResult()

    def const(self, base: str, values: np.ndarray) -> gs.Constant:
        """A new constant with a name no other tensor has (unnamed nodes give empty bases)."""
        return gs.Constant(self.names.fresh(base), values)

    def run(self) -> PassResult:
        padded = absorbed = 0
        for node in list(self.graph.nodes):
            if not _std(node):
                self._observe_inputs(node)
                continue
            handled = self._propagate(node)
            if handled is Handled.ABSORBED:
                absorbed += 1
            if node.op == "Conv" and self._pad_output(node):
                padded += 1
            if handled is None:
                self._observe_inputs(node)
        self._observe_outputs()
        res = self.res
        if padded:
            res.count("conv-output-padded", padded)
            res.count("consumer-absorbed-padding", absorbed)
            res.notes.append(
                f"padded {padded} Conv outputs to multiples of {self.n}; {absorbed} consumers absorbed the padding"
            )
        res.notes += [f"left unpadded ({why}): {len(nodes)}" for why, nodes in sorted(res.refusals.items())]
        return res

    # -- padding a producer ------------------------------------------------------------------------

    def _pad_output(self, node: gs.Node) -> bool:
        W = _float_const(node.inputs[1]) if len(node.inputs) > 1 else None
        if W is None or int(node.attrs.get("group", 1)) != 1 or W.ndim < 3:
            return False
        y = node.outputs[0]
        if id(y) in self.layouts:  # already carries a layout (depthwise etc.)
            return False
        c = W.shape[0]
        if c < self.n or c % self.n == 0:
            return False
        if not self._reaches_conv(y):
            return False
        B = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            B = const_value(node.inputs[2])
            if B is None:  # checked before anything changes: never a half-padded Conv
                self.res.refuse("bias not constant", node)
                return False
        layout = Layout(np.arange(c), -(-c // self.n) * self.n)
        node.inputs[1] = self.const(f"{node.name or y.name}_Wpad", _scatter(W, layout, 0.0))
        if B is not None:
            node.inputs[2] = self.const(f"{node.name or y.name}_Bpad", _scatter(B, layout, 0.0))
        self.layouts[id(y)] = layout
        return True

    def _reaches_conv(self, t: gs.Tensor, depth: int = 0) -> bool:
        if depth > 64:
            return False
        for c in t.outputs:
            if not _std(c):
                continue
            if c.op == "Conv":
                g = int(c.attrs.get("group", 1))
                if g == 1 and c.inputs[0] is t:
                    return True
                if c.inputs[0] is t and self._depthwise(c, t):
                    if any(self._reaches_conv(o, depth + 1) for o in c.outputs):
                        return True
            elif c.op in ("Gemm", "MatMul") and c.inputs[0] is t:
                return True  # a head whose weights take the padding
            elif c.op in UNARY | POOL | BINARY | {"BatchNormalization", "Concat", "Resize", "Flatten"}:
                if any(self._reaches_conv(o, depth + 1) for o in c.outputs):
                    return True
        return False

    @staticmethod
    def _depthwise(node: gs.Node, x: gs.Tensor) -> bool:
        W = const_value(node.inputs[1]) if len(node.inputs) > 1 else None
        g = int(node.attrs.get("group", 1))
        return W is not None and g > 1 and W.shape[1] == 1 and W.shape[0] == g

    # -- carrying a layout through a consumer --------------------------------------------------------

    def _propagate(self, node: gs.Node) -> Handled | None:
        """How the node handled its padded inputs (carried the padding on, or absorbed it in its
        weights); None when they must be sliced off before it."""
        ins = [self.layouts.get(id(t)) for t in node.inputs]
        if not any(ins):
            return Handled.CARRIED
        rule = _RULES.get(node.op)
        return rule(self, node, ins) if rule is not None else None

    def _name(self, node: gs.Node, suffix: str) -> str:
        return f"{node.name or node.outputs[0].name}_{suffix}"

    def _carry(self, node: gs.Node, lay: Layout) -> Handled:
        self.layouts[id(node.outputs[0])] = lay
        return Handled.CARRIED

    def _conv(self, node: gs.Node, ins: list) -> Handled | None:
        lay = ins[0]
        if lay is None or any(x is not None for x in ins[1:]):
            return None
        W = _float_const(node.inputs[1])
        g = int(node.attrs.get("group", 1))
        if W is None:
            return None
        if g == 1 and W.shape[1] == lay.real:
            node.inputs[1] = self.const(self._name(node, "Win"), _scatter(W, lay, 0.0, axis=1))
            return Handled.ABSORBED
        if not (g == lay.real and W.shape[0] == g and W.shape[1] == 1):
            return None
        # depthwise: grow the groups
        B = None
        if len(node.inputs) > 2 and node.inputs[2].name:
            B = const_value(node.inputs[2])
            if B is None:  # before anything changes
                self.res.refuse("bias not constant", node)
                return None
        node.inputs[1] = self.const(self._name(node, "Wdw"), _scatter(W, lay, 0.0, axis=0))
        if B is not None:
            node.inputs[2] = self.const(self._name(node, "Bdw"), _scatter(B, lay, 0.0))
        node.attrs["group"] = lay.total
        return self._carry(node, lay)

    def _batchnorm(self, node: gs.Node, ins: list) -> Handled | None:
        lay = ins[0]
        if lay is None or any(x is not None for x in ins[1:]):
            return None
        if int(node.attrs.get("training_mode", 0)) or any(o.outputs for o in node.outputs[1:]):
            return None
        vals = [const_value(t) for t in node.inputs[1:5]]
        if any(v is None or v.size != lay.real for v in vals):
            return None
        for i, (v, fill) in enumerate(zip(vals, (1.0, 0.0, 0.0, 1.0)), start=1):
            node.inputs[i] = self.const(self._name(node, f"p{i}"), _scatter(v.reshape(-1), lay, fill))
        return self._carry(node, lay)

    def _unary(self, node: gs.Node, ins: list) -> Handled | None:
        if ins[0] is None:
            return None
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            return None
        if node.op == "Clip" and any(x is not None for x in ins[1:]):
            return None
        return self._carry(node, ins[0])

    def _flatten(self, node: gs.Node, ins: list) -> Handled | None:
        x = node.inputs[0]
        if ins[0] is None or int(node.attrs.get("axis", 1)) != 1 or x.shape is None or len(x.shape) < 2:
            return None
        if not all(d == 1 for d in x.shape[2:]):
            return None
        return self._carry(node, ins[0])  # [N, C, 1, 1] -> [N, C]: channels stay on axis 1

    def _matmul(self, node: gs.Node, ins: list) -> Handled | None:
        lay = ins[0]
        if lay is None or any(x is not None for x in ins[1:]):
            return None
        x = node.inputs[0]
        B = _float_const(node.inputs[1])
        if B is None or B.ndim != 2 or x.shape is None or len(x.shape) != 2 or int(node.attrs.get("transA", 0)):
            return None
        k_axis = 1 if (node.op == "Gemm" and int(node.attrs.get("transB", 0))) else 0
        if B.shape[k_axis] != lay.real:
            return None
        node.inputs[1] = self.const(self._name(node, "Bpad"), _scatter(B, lay, 0.0, axis=k_axis))
        return Handled.ABSORBED

    def _pool(self, node: gs.Node, ins: list) -> Handled | None:
        return self._carry(node, ins[0]) if ins[0] is not None else None

    def _resize(self, node: gs.Node, ins: list) -> Handled | None:
        lay = ins[0]
        if lay is None or any(x is not None for x in ins[1:]):
            return None
        if len(node.inputs) > 3 and node.inputs[3].name:  # sizes hold the channel count
            sizes = const_value(node.inputs[3])
            if sizes is None or len(sizes) < 2 or int(sizes[1]) != lay.real:
                return None
            s = sizes.copy()
            s[1] = lay.total
            node.inputs[3] = self.const(self._name(node, "sizes"), s)
        return self._carry(node, lay)

    def _binary(self, node: gs.Node, ins: list) -> Handled | None:
        if len(node.inputs) != 2:
            return None
        a, b = ins
        if a is not None and b is not None:
            return self._carry(node, a) if a.same(b) else None
        lay = a or b
        k = 1 if a is not None else 0  # the other, unpadded input: it must be a constant
        c = const_value(node.inputs[k])
        if c is None:
            return None
        x = node.inputs[1 - k]
        rank = len(x.shape) if x.shape is not None else 4
        if c.ndim > rank:
            return None
        lead = rank - c.ndim
        c_full = c.reshape((1,) * lead + c.shape)
        if c_full.ndim >= 2 and c_full.shape[1] == lay.real and lay.real > 1:
            new = _scatter(c_full, lay, 1.0 if node.op == "Mul" else 0.0, axis=1)
            node.inputs[k] = self.const(self._name(node, "c"), new.reshape(new.shape[lead:]))  # the constant's own rank
        elif c_full.ndim >= 2 and c_full.shape[1] != 1:
            return None
        return self._carry(node, lay)

    def _concat(self, node: gs.Node, ins: list) -> Handled | None:
        axis = int(node.attrs.get("axis", 0))
        rank0 = len(node.outputs[0].shape) if node.outputs[0].shape is not None else None
        if not (axis == 1 or (rank0 is not None and axis < 0 and axis + rank0 == 1)):
            return None
        pos, off = [], 0
        for t, lt in zip(node.inputs, ins):
            if lt is not None:
                pos.append(lt.pos + off)
                off += lt.total
                continue
            if t.shape is None or len(t.shape) < 2 or not isinstance(t.shape[1], int):
                return None
            pos.append(np.arange(t.shape[1]) + off)
            off += t.shape[1]
        return self._carry(node, Layout(np.concatenate(pos), off))

    # -- slicing the padding off where the exact count is observable -------------------------------------

    def _slice_node(self, t: gs.Tensor, out: gs.Tensor) -> gs.Node:
        lay = self.layouts[id(t)]
        p = self.names.fresh(f"{t.name}_unpad")
        if lay.is_prefix() and (self.graph.opset or 13) < 10:  # Slice-1: starts/ends/axes are attributes
            return gs.Node("Slice", p, {"starts": [0], "ends": [int(lay.real)], "axes": [1]}, inputs=[t], outputs=[out])
        if lay.is_prefix():
            return gs.Node(
                "Slice",
                p,
                inputs=[
                    t,
                    self.const(f"{p}_starts", np.array([0], np.int64)),
                    self.const(f"{p}_ends", np.array([lay.real], np.int64)),
                    self.const(f"{p}_axes", np.array([1], np.int64)),
                ],
                outputs=[out],
            )
        return gs.Node("Gather", p, {"axis": 1}, inputs=[t, self.const(f"{p}_idx", lay.pos)], outputs=[out])

    def _sliced(self, t: gs.Tensor) -> gs.Tensor:
        key = id(t)
        if key not in self.slices:
            out = gs.Variable(self.names.fresh(f"{t.name}_unpadded"), dtype=t.dtype)
            self.graph.nodes.append(self._slice_node(t, out))
            self.slices[key] = out
        return self.slices[key]

    def _observe_inputs(self, node: gs.Node) -> None:
        for i, t in enumerate(list(node.inputs)):
            if id(t) in self.layouts:
                node.inputs[i] = self._sliced(t)

    def _observe_outputs(self) -> None:
        """A padded graph output: the producer writes ``<name>_padded`` and a slice writes ``<name>``."""
        for i, t in enumerate(list(self.graph.outputs)):
            if id(t) not in self.layouts:
                continue
            name, shape, dtype = t.name, t.shape, t.dtype
            t.name = f"{name}_padded"
            out = self._sliced(t)
            out.name, out.shape, out.dtype = name, shape, dtype
            self.graph.outputs[i] = out


# how each op type handles padded channels arriving at its inputs (None from a rule: slice them off first)
_RULES = {
    "Conv": _Padder._conv,
    "BatchNormalization": _Padder._batchnorm,
    "Flatten": _Padder._flatten,
    "Gemm": _Padder._matmul,
    "MatMul": _Padder._matmul,
    "Resize": _Padder._resize,
    "Concat": _Padder._concat,
    **{op: _Padder._unary for op in UNARY},
    **{op: _Padder._pool for op in POOL},
    **{op: _Padder._binary for op in BINARY},
}
