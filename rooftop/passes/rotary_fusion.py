"""rotary-fusion: rotary position embeddings written out (``transformers``' rotate_half) become
one standard RotaryEmbedding (opset 23).

Algebra. With x of shape (B, N, S, H), h = H/2, x₁ = x[..., :h], x₂ = x[..., h:], and c, s of
shape (B|1, S, H) whose two halves are equal (``Cos``/``Sin`` of ``Concat(f, f)`` on the last
axis, as ``transformers`` builds them, maybe cast or scaled by a constant):

    y = x · Unsqueeze(c, 1) + Concat(−x₂, x₁) · Unsqueeze(s, 1)

is ``RotaryEmbedding(x, c[..., :h], s[..., :h])`` (non-interleaved, the whole head rotated):
y₁ = x₁·c₁ − x₂·s₁, y₂ = x₂·c₁ + x₁·s₁. Seven ops that each read and write a (B, N, S, H)
tensor become one. The op takes its caches as (B, S, h) (onnxruntime does not broadcast their
batch): the half of c and s is sliced, and expanded over the batch when c has batch 1, once per
cache tensor, shared by every layer that reads it.

Refuses (the ops are left, the reason on the Add): below opset 23 (the reason names ``--opset
23``; com.microsoft RotaryEmbedding takes position ids and cache tables, not this form); c or s
not proved to have equal halves; the two halves of x not cut at H/2 of the last axis; x not 4-D;
an intermediate read by another node or a graph output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._graph import Namer, const_value
from rooftop.passes._match import matches, only_consumer, other_input, producer, replace, scalar
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

ROTARY_OPSET = 23


@dataclass
class _Rotary:
    x: gs.Tensor
    cos: gs.Tensor  # (B|1, S, H), halves equal
    sin: gs.Tensor
    half: int
    nodes: list[gs.Node]


class RotaryFusion(Pass):
    name = "rotary-fusion"
    summary = "rotary embeddings written out (rotate_half) → RotaryEmbedding (opset 23)"
    needs_shapes = True
    needs_ops = frozenset({"Neg"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        opset = int(graph.opset or 0)
        names, caches = Namer(graph), {}

        def match(g: gs.Graph, add: gs.Node) -> _Rotary | None:
            return _rotary(g, add, opset)

        for add, r in matches(graph, res, ("Add",), match):
            cos = _cache(graph, r.cos, r.x, r.half, names, caches)
            sin = _cache(graph, r.sin, r.x, r.half, names, caches)
            out = add.outputs[0]
            fused = gs.Node("RotaryEmbedding", names.fresh(f"{out.name}_rotary"), {}, [r.x, cos, sin], [out])
            replace(graph, r.nodes, fused)
            res.count("rotate-half-into-RotaryEmbedding", node=fused)
        return res


def _rotary(graph: gs.Graph, add: gs.Node, opset: int) -> _Rotary | None:
    """The rotary embedding whose last op is ``add``; None when ``add`` does not add a rotate_half
    product; ``Refused`` with the first condition that failed when it does."""
    muls = [producer(t, "Mul") for t in add.inputs]
    if len(muls) != 2 or any(m is None for m in muls):
        return None
    for m_rot, m_x in (muls, muls[::-1]):
        turned = next((t for t in m_rot.inputs if _rotate_half(t) is not None), None)
        if turned is not None:
            break
    else:
        return None
    if opset < ROTARY_OPSET:
        raise Refused(f"opset {opset} < {ROTARY_OPSET}: RotaryEmbedding needs {ROTARY_OPSET} (--opset 23 enables it)")
    x, halves = _rotate_half(turned)
    cos = other_input(m_x, x)
    if cos is None:
        raise Refused("the rotated half is not added to x times the cosines (a different x)")
    if _rank(x) != 4:
        raise Refused("x is not (batch, heads, sequence, head size)")
    c3, s3 = _equal_halves(cos, "Cos"), _equal_halves(other_input(m_rot, turned), "Sin")
    width = next((w for w in (_last(x), _last(c3)) if w is not None), None)  # (the table's, where x's is lost)
    h = width // 2 if width is not None and width % 2 == 0 else None
    if h is None or _cut(halves[2], width) != (h, width) or _cut(halves[3], width) != (0, h):
        raise Refused("x is not cut in two halves at H/2 of its last axis")
    inner = [m_rot, m_x, *halves]
    if any(only_consumer(o, graph) is None for n in inner for o in n.outputs):
        raise Refused("an intermediate of the rotary embedding is read by another node or is a graph output")
    return _Rotary(x, c3, s3, h, [add, *inner])


def _rotate_half(t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, [Concat, Neg, upper Slice, lower Slice]) when ``t = Concat(−Slice(x), Slice(x))`` on the
    last axis (where the cuts are is checked by ``_cut``); None otherwise."""
    cat = producer(t, "Concat")
    if cat is None or len(cat.inputs) != 2 or int(cat.attrs.get("axis", 0)) not in (-1, 3):
        return None
    neg = producer(cat.inputs[0], "Neg")
    upper = producer(neg.inputs[0], "Slice") if neg is not None else None
    lower = producer(cat.inputs[1], "Slice")
    if upper is None or lower is None or upper.inputs[0] is not lower.inputs[0]:
        return None
    return lower.inputs[0], [cat, neg, upper, lower]


def _last(t: gs.Tensor) -> int | None:
    d = t.shape[-1] if t.shape is not None and len(t.shape) else None
    return d if isinstance(d, int) and d > 0 else None


def _rank(t: gs.Tensor) -> int | None:
    """The rank of ``t``: its shape's, else a Transpose's perm or a constant Reshape target's."""
    if t.shape is not None:
        return len(t.shape)
    n = producer(t)
    if n is not None and n.op == "Transpose" and "perm" in n.attrs:
        return len(n.attrs["perm"])
    target = const_value(n.inputs[1]) if n is not None and n.op == "Reshape" else None
    return int(target.size) if target is not None else None


def _cut(s: gs.Node, width: int) -> tuple[int, int] | None:
    """(start, end) of a Slice of the last axis (``width`` long) with step 1, the end clipped."""
    ins = list(s.inputs) + [None] * (5 - len(s.inputs))
    starts, ends, axes, steps = (const_value(t) if t is not None else None for t in ins[1:5])
    if starts is None or ends is None or starts.size != 1 or ends.size != 1:
        return None
    if axes is None or axes.size != 1 or int(axes.ravel()[0]) not in (-1, 3):
        return None
    if steps is not None and int(steps.ravel()[0]) != 1:
        return None
    return int(starts.ravel()[0]), min(int(ends.ravel()[0]), width)


def _equal_halves(t: gs.Tensor, op: str) -> gs.Tensor:
    """The (B|1, S, H) table under ``Unsqueeze(·, 1)`` when it is ``op`` (Cos or Sin) of
    ``Concat(f, f)`` on the last axis, through Casts and products with constants; ``Refused``."""
    un = producer(t, "Unsqueeze")
    axes = None
    if un is not None:
        axes = un.attrs.get("axes")
        axes = np.ravel(axes) if axes is not None else const_value(un.inputs[1]) if len(un.inputs) > 1 else None
    if axes is None or [int(a) for a in np.ravel(axes)] != [1]:
        raise Refused(f"the {op.lower()}ines are not a (batch, sequence, head size) table unsqueezed at axis 1")
    table, cur = un.inputs[0], un.inputs[0]
    for _ in range(4):  # a Cast or a constant scale (``attention_scaling``) after the Cos/Sin
        n = producer(cur)
        if n is not None and n.op == "Cast":
            cur = n.inputs[0]
        elif n is not None and n.op == "Mul" and any(scalar(i) is not None for i in n.inputs):
            cur = next(i for i in n.inputs if scalar(i) is None)
        else:
            break
    trig = producer(cur, op)
    cat = producer(trig.inputs[0], "Concat") if trig is not None else None
    if cat is None or int(cat.attrs.get("axis", 0)) != -1 and int(cat.attrs.get("axis", 0)) != 2:
        raise Refused(f"the {op.lower()}ines are not {op} of a Concat of one angle table with itself")
    if len(cat.inputs) != 2 or cat.inputs[0] is not cat.inputs[1]:
        raise Refused(f"the two halves of the {op.lower()}ines are not proved equal")
    if table.shape is None or len(table.shape) != 3:
        raise Refused(f"the {op.lower()}ine table is not (batch, sequence, head size)")
    return table


def _cache(graph: gs.Graph, table: gs.Tensor, x: gs.Tensor, h: int, names: Namer, caches: dict) -> gs.Tensor:
    """``table[..., :h]`` as (B, S, h): sliced, and expanded over x's batch when the table's batch
    may differ from it; once per table (the (B, 1, 1) target once per run)."""
    if table.name in caches:
        return caches[table.name]
    half = _op(graph, names, "Slice", table, [0], [h], [-1], shape=[*table.shape[:2], h], dtype=table.dtype)
    batch = x.shape[0] if x.shape is not None else None
    out = half
    if batch is None or table.shape[0] != batch:
        if "#target" not in caches:  # (any x: every layer's has the batch of the graph's input)
            b = _op(graph, names, "Shape", x, shape=[1], dtype=np.int64, start=0, end=1)
            caches["#target"] = _op(graph, names, "Concat", b, [1, 1], shape=[3], dtype=np.int64, axis=0)
        out = _op(graph, names, "Expand", half, caches["#target"], shape=[batch, table.shape[1], h], dtype=table.dtype)
    caches[table.name] = out
    return out


def _op(graph: gs.Graph, names: Namer, op: str, *inputs, shape, dtype, **attrs) -> gs.Variable:
    """Append one ``op`` node reading ``inputs`` (lists are int64 constants) and return its output."""
    ins = [
        i if isinstance(i, gs.Tensor) else gs.Constant(names.fresh(f"rotary_{op.lower()}_c"), np.array(i, np.int64))
        for i in inputs
    ]
    out = gs.Variable(names.fresh(f"{ins[0].name}_{op.lower()}"), dtype=dtype, shape=shape)
    graph.nodes.append(gs.Node(op, names.fresh(f"{ins[0].name}_{op.lower()}_node"), attrs, ins, [out]))
    return out
