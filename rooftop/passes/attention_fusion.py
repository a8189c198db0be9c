"""attention-fusion: scaled dot-product attention written out becomes one attention op.

Algebra. With q, k, v of shape (B, S, N·H) split into N heads of H:

    Q  = Transpose(Reshape(q, [·, ·, N, H]), [0, 2, 1, 3])                       (B, N, S, H)
    Kᵀ = Transpose(Reshape(k, [·, ·, N, H]), [0, 2, 3, 1])                       (B, N, H, T)
         (or [0, 2, 1, 3] and then [0, 1, 3, 2])
    V  = Transpose(Reshape(v, [·, ·, N, H]), [0, 2, 1, 3])                       (B, N, T, H)
    P  = Softmax(Q·Kᵀ / c [+ M], axis=-1)            (· c instead of / c; or no scale: c = 1)
    y  = Reshape(Transpose(P·V, [0, 2, 1, 3]), [·, ·, N·H])                      (B, S, N·H)

is attention with N heads, scale 1/c and the additive bias M. Every op between the projections
and y reads and writes a (B, N, S, T) or (B, S, N·H) tensor; the fused op keeps them in its own
buffers.

- ``--target onnxruntime``: com.microsoft ``Attention(x, [Wq Wk Wv], [bq bk bv], attention_bias=M)``
  when q, k and v are projections of one x by constant weights (``x·W + b``): the three GEMMs
  become one. Otherwise com.microsoft ``MultiHeadAttention(q, k, v, attention_bias=M)``. Their
  attention_bias must carry the query length as its third dim: a padding mask of shape
  (B, 1, 1, T) is expanded to (B, 1, S, T) once per mask tensor (Shape/Gather/Concat/Expand, shared by
  every layer that reads that mask).
- portable, at opset 23 or later: ``Attention(q, k, v, M; q_num_heads=N, kv_num_heads=N, scale)``
  (a (B, 1, 1, T) mask expanded over the queries as well: the spec lets it broadcast, onnxruntime
  does not).

The split into heads may be a constant ``[·, ·, N, H]`` or, as the dynamo exporter writes it, a
Concat of the run-time batch and sequence lengths with constants N and H; N may be -1
(``view(b, s, -1, h)``, as ``transformers`` writes it) where the width of q is known (N = width/H).
A Shape that reads only N and H of the split becomes that constant. The forms the exporters write
for the architectures of ``models/hf_corpus.py`` are taken as well: the scale applied to q and k
apart (√scale each, PyTorch's scaled_dot_product_attention), the dynamo exporter's NaN guard
``Where(IsNaN(P), 0, P)`` after the Softmax (it acts only on a row whose every key is masked) and
its batched key transpose (Reshape to (B·N, L, H), Transpose, Reshape back), an additive mask of
shape (S, T) or (B, S, T) (unsqueezed to 4-D once), T5's ``view(b, -1, s, h)`` before the heads are
merged, a merge to (B·S, N·H) for a Gemm, nn.MultiheadAttention's sequence-first merge
(``Transpose(P·V, [2, 0, 1, 3])`` to (S·B, N·H): the fused (B, S, N·H) transposed by [1, 0, 2]),
and a Shape reading the batch (axis 0) of an intermediate, as GPT-2's output projection does (it
reads the fused op's output instead: same batch). The fused op reads q as the (B, S, N·H) it is;
verification at two sizes of the dynamic axes stands behind every one of these.

Causal masks. ``Where(keep, scores, fill)`` (or ``Where(hide, fill, scores)``) with a fill at or
below -1e4 is a causal mask when ``keep`` is computed from the run-time lengths only and equals
``j ≤ i + (T − S)`` at two assignments of the lengths (``_causal``: evaluated with onnx's reference
evaluator). Then the op masks by itself: com.microsoft ``unidirectional=1``, standard
``is_causal=1``; the Where and the mask's graph go.

4-D form (LLaMA-style decoders): when q, k, v reach the products as (B, N, S, H) tensors that are
not a projection split into heads (rotary embeddings applied after the split; keys and values a
cache ``Concat(past, new)`` on the length axis), they become standard ``Attention(q, k, v, mask,
past_key, past_value)`` → (P·V, present_key, present_value): the op concatenates the cache, the
mask goes in as it is (a causal Where as its boolean keep-mask), the merge of the heads after it
stays. Standard Attention at opset 23 for both targets. Below opset 23, for ``--target
onnxruntime``: com.microsoft ``MultiHeadAttention`` with the query put back to (B, S, N·H) (a
Transpose and a Reshape: the op reads a 3-D query only), keys and values as the (B, N, L, H) they
are or, with a cache, the new ones put back to 3-D beside ``past_key``/``past_value``, the
concatenations its present outputs; a causal Where as ``unidirectional=1`` (aligned to the last
key, as onnxruntime's kernel does with a past); writing the (B, S, N·H) the heads were merged
into. Grouped-query heads stay repeated there (the op takes equal heads). com.microsoft
GroupQueryAttention is not written: it measured ×1.11–1.47 slower than the standard op on
onnxruntime's CPU kernels (benchmarks/bench_gqa.py).

Grouped-query attention (``transformers``' repeat_kv between the cache and the products:
Unsqueeze, Expand, Reshape to N heads) goes into Attention-23 unrepeated for ``--target
onnxruntime`` (the op reads KV heads for N query heads itself); the portable form keeps the
repeat, because OpenVINO's Attention takes equal heads only. An additive mask whose head axis shape inference
cannot tell (an Expand to a computed shape) is taken when the scores have N > 1 heads: the Add
would fail on anything but 1 or N. A Shape that reads an intermediate only to compute a Reshape
target of the pattern itself goes with the pattern.

No silent non-match: a Softmax that reads a product of two activations (through scales and masks)
is fused or refused with the first condition that failed.

Refuses, with the reason on the Softmax: below opset 23 where the standard op is needed (names
``--opset 23``); a Where mask not proved causal (reads values, e.g. a padding mask; not causal at
a sample; a fill above -1e4); a Where and an additive mask on the same scores in the 4-D form;
keys that are neither one projection split into heads nor (B, N, L, H) tensors; only one of keys
and values from a cache; heads not given as constants in the Reshape; an intermediate read by
another node or a graph output; a mask of unknown or unsupported shape.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._causal import causal_mask
from rooftop.passes._graph import Namer, const_value
from rooftop.passes._match import matches, only_consumer, other_input, producer, replace, scalar
from rooftop.passes.base import Pass, PassContext, PassResult, Refused

ATTENTION_OPSET = 23
WHERE_FILL_MAX = -1e4  # a Where's fill at or below this hides a position (exp underflows to 0 in float32)


class AttentionFusion(Pass):
    name = "attention-fusion"
    summary = (
        "decomposed scaled dot-product attention → Attention (opset 23; "
        "com.microsoft Attention/MultiHeadAttention for onnxruntime)"
    )
    needs_shapes = True
    needs_ops = frozenset({"Softmax"})

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        opset = int(graph.opset or 0)
        names = Namer(graph)
        done: dict[str, gs.Tensor] = {}  # masks expanded or negated once, shared by the layers
        # keys and values unrepeated for onnxruntime's Attention-23 (OpenVINO's, and com.microsoft
        # MultiHeadAttention below opset 23, take equal heads only)
        grouped = ctx.target == "onnxruntime" and opset >= ATTENTION_OPSET

        def match(g: gs.Graph, sm: gs.Node) -> _Match | None:
            return _match(g, sm, grouped)

        for sm, m in matches(graph, res, ("Softmax",), match):
            with res.refusing(sm):
                _fuse(graph, m, ctx.target, opset, names, done, res)
        return res


class _Match:
    """One attention found around a Softmax.

    3-D form: q, k, v are the (B, S, N·H) tensors split into ``heads`` of ``head_size`` and ``out``
    the (B, S, N·H) result. 4-D form (``past`` set or not): q, k, v are (B, N, S, H) tensors as
    they are (after rotary embeddings, say), ``out`` the (B, N, S, H) product P·V, and ``past``
    (past key, past value, present key, present value) when keys and values are a cache
    concatenated with the new ones. ``mask`` is an additive mask; ``causal`` a Where-mask proved
    causal, ``keep`` its keep-condition (and whether it is negated)."""

    def __init__(
        self, q, k, v, heads, head_size, scale, mask, out, nodes, four_d=False, past=None, causal=False, keep=None
    ):
        self.q, self.k, self.v = q, k, v
        self.heads, self.head_size, self.scale = heads, head_size, scale
        self.mask, self.out, self.nodes = mask, out, nodes
        self.four_d, self.past, self.causal, self.keep = four_d, past, causal, keep


def _match(graph: gs.Graph, sm: gs.Node, grouped: bool = False) -> _Match | None:
    """A _Match, or None (not attention); ``Refused`` with the first condition that failed. A
    Softmax that sits in an attention (it reads, through scales and masks, a product of two
    activations) is never None: it is fused or refused, so no candidate is left in silence.
    ``grouped``: keys and values repeated over the query heads are taken before the repeat."""
    m = _match_at(graph, sm, grouped)
    if m is None and _in_attention(sm):
        raise Refused(_why_not(graph, sm))
    return m


def _attempt(matcher, *args):
    """``matcher(*args)``, or the ``Refused`` it raised (to be raised once the other forms are tried)."""
    try:
        return matcher(*args)
    except Refused as r:
        return r


def _in_attention(sm: gs.Node) -> bool:
    """The Softmax reads a product of two activations (through Add, Where, Div, Mul, Cast)."""
    t = sm.inputs[0]
    for _ in range(6):
        n = producer(t)
        if n is None:
            return False
        if n.op == "MatMul":
            return all(not isinstance(i, gs.Constant) for i in n.inputs[:2])
        if n.op not in ("Add", "Where", "Div", "Mul", "Cast"):
            return False
        t = next((i for i in n.inputs if not isinstance(i, gs.Constant) and _reaches_matmul(i)), None)
        if t is None:
            return False
    return False


def _reaches_matmul(t: gs.Tensor, depth: int = 0) -> bool:
    n = producer(t)
    if n is None or depth > 5:
        return False
    return n.op == "MatMul" or (
        n.op in ("Add", "Where", "Div", "Mul", "Cast")
        and any(not isinstance(i, gs.Constant) and _reaches_matmul(i, depth + 1) for i in n.inputs)
    )


def _why_not(graph: gs.Graph, sm: gs.Node) -> str:
    """The first condition an attention's Softmax failed, when the matcher found no reason of its own."""
    if int(sm.attrs.get("axis", -1)) not in (-1, 3):
        return f"Softmax over axis {sm.attrs.get('axis')}, not the keys' axis (-1)"
    mm2, _ = _probabilities(graph, sm)
    if mm2 is None:
        readers = [c.op for c in sm.outputs[0].outputs]
        return (
            f"the probabilities are not read by one MatMul with the values (read by {', '.join(readers) or 'nothing'})"
        )
    peeled = _peel(sm.inputs[0])
    if peeled is None:
        return "the scores are masked by a Where whose two branches are both computed"
    scores = _unscaled(peeled[0])[0]
    if producer(scores, "MatMul") is None:
        what = producer(scores).op if producer(scores) is not None else "a graph input"
        return f"the scores are not Q·Kᵀ scaled by a constant (they come from {what})"
    mm1 = producer(scores, "MatMul")
    q, _ = _unscaled(mm1.inputs[0])
    k, _ = _unscaled(mm1.inputs[1])
    for what, t in (("query", q), ("keys", k), ("values", mm2.inputs[1])):
        tr = producer(t, "Transpose")
        if tr is None:
            src = producer(t)
            return (
                f"the {what} are not split into heads by Reshape and Transpose "
                f"(they come from {src.op if src is not None else 'a graph input'})"
            )
    return "the query, keys and values are split into heads in a form this pass does not know"


def _probabilities(graph: gs.Graph, sm: gs.Node) -> tuple[gs.Node | None, list[gs.Node]]:
    """(P·V's MatMul, nodes between): the Softmax read by the MatMul directly, or through the NaN
    guard of torch's scaled_dot_product_attention decomposition (the dynamo exporter's
    ``Where(IsNaN(P), 0, P)``: it acts only on a row whose every key is masked)."""
    p = sm.outputs[0]
    mm2 = only_consumer(p, graph, "MatMul")
    if mm2 is not None and mm2.inputs[0] is p:
        return mm2, []
    readers = p.outputs
    if len(readers) != 2 or {r.op for r in readers} != {"IsNaN", "Where"}:
        return None, []
    isnan = next(r for r in readers if r.op == "IsNaN")
    where = next(r for r in readers if r.op == "Where")
    zero = scalar(where.inputs[1])
    if where.inputs[0] is not isnan.outputs[0] or zero != 0.0 or where.inputs[2] is not p:
        return None, []
    if only_consumer(isnan.outputs[0], graph) is not where:
        return None, []
    mm2 = only_consumer(where.outputs[0], graph, "MatMul")
    if mm2 is None or mm2.inputs[0] is not where.outputs[0]:
        return None, []
    return mm2, [isnan, where]


def _unscaled(t: gs.Tensor) -> tuple[gs.Tensor, float]:
    """(x, c) when ``t = x · c`` or ``x / c`` with a scalar constant c (c = 1 otherwise): the scale
    PyTorch's scaled_dot_product_attention applies to q and k apart (√scale each)."""
    n = producer(t, "Mul", "Div")
    if n is None:
        return t, 1.0
    const = next((i for i in n.inputs if scalar(i) is not None), None)
    if const is None or (n.op == "Div" and n.inputs[1] is not const):
        return t, 1.0
    x = other_input(n, const)
    return x, (1.0 / scalar(const) if n.op == "Div" else scalar(const))


def _match_at(graph: gs.Graph, sm: gs.Node, grouped: bool = False):
    """A _Match, or None (not found); ``Refused``."""
    if int(sm.attrs.get("axis", -1)) not in (-1, 3):
        return None
    mm2, guard = _probabilities(graph, sm)
    if mm2 is None:
        return None
    peeled = _peel(sm.inputs[0])
    if peeled is None:
        return None
    scores, mask, where, masked = peeled
    scale_node = producer(scores, "Div", "Mul")
    c = 1.0
    if scale_node is not None:
        const = next((t for t in scale_node.inputs if scalar(t) is not None), None)
        if const is None or (scale_node.op == "Div" and scale_node.inputs[1] is not const):
            return None
        c = 1.0 / scalar(const) if scale_node.op == "Div" else scalar(const)
        scores = other_input(scale_node, const)
    mm1 = producer(scores, "MatMul")
    if mm1 is None:
        return None
    core = [mm1, *([scale_node] if scale_node is not None else []), *masked, sm, *guard, mm2]
    q_in, k_in = mm1.inputs[0], mm1.inputs[1]
    for side in (0, 1):  # a scale on q and on k apart (PyTorch's SDPA: √scale each)
        t, f = _unscaled(mm1.inputs[side])
        if f != 1.0 and only_consumer(mm1.inputs[side], graph) is not None:
            c *= f
            core.append(producer(mm1.inputs[side]))
            q_in, k_in = (t, k_in) if side == 0 else (q_in, t)
    # each split into heads, or the reason it is not one: the 4-D form is tried when any is
    # not split at all, before a reason is given
    q, k, v = _attempt(_heads, q_in, (0, 2, 1, 3)), _attempt(_keys, k_in), _attempt(_heads, mm2.inputs[1], (0, 2, 1, 3))
    if q is None or k is None or v is None:
        return _match_4d(graph, (q_in, k_in), mm2, c, mask, where, core, three_d=(q, k, v), grouped=grouped)
    for x in (q, k, v):
        if isinstance(x, Refused):
            raise x
    if q[1:3] != k[1:3] or q[1:3] != v[1:3]:
        raise Refused("query, key and value are split into different heads")
    tail = _output(graph, mm2, q[2])
    if tail is None:
        raise Refused("the result is not put back together as (batch, sequence, heads · head size)")
    out, tail_nodes, _ = tail
    nodes = [*q[3], *k[3], *v[3], *core, *tail_nodes]
    if _read_elsewhere(graph, [n for n in nodes if n is not tail_nodes[-1] and not (guard and n is sm)]):
        raise Refused("an intermediate of the attention is read by another node or is a graph output")
    _proved_causal(graph, where, square=True)
    return _Match(q[0], k[0], v[0], q[1], q[2], c, mask, out, nodes, causal=where is not None)


def _match_4d(graph: gs.Graph, qk, mm2: gs.Node, c: float, mask, where, core, three_d, grouped: bool = False):
    """The 4-D form: q, k, v of shape (B, N, S, H) as they are, keys transposed by [0, 1, 3, 2],
    keys and values optionally a cache concatenated with the new ones on the sequence axis."""
    keys = _transposed(qk[1])
    q, v = qk[0], mm2.inputs[1]
    if keys is None:
        if three_d[0] is None or three_d[2] is None:
            return None
        raise Refused("keys are not one projection split into heads, nor (batch, heads, length, head size) tensors")
    k, k_nodes = keys
    k, v, repeat = _grouped(k, v) if grouped else (k, v, [])
    ranks = [_rank(t) for t in (q, k, v)]
    if any(r is None for r in ranks):
        raise Refused("the rank of the query, keys or values is unknown")
    if ranks != [4, 4, 4]:
        raise Refused("query, keys and values are not all (batch, heads, length, head size)")
    kc, vc = _cache(k), _cache(v)
    if (kc is None) != (vc is None):
        raise Refused("only one of keys and values is concatenated with a past")
    nodes, past = [*k_nodes, *repeat, *core], None
    # P·V is the op's output (read anywhere); a guarded Softmax is read by its NaN guard twice
    inner = [n for n in nodes if n is not mm2 and not (n.op == "Softmax" and len(n.outputs[0].outputs) == 2)]
    if _read_elsewhere(graph, inner):
        raise Refused("an intermediate of the attention is read by another node or is a graph output")
    if kc is not None:  # the concatenations become the op's present outputs: they may be read anywhere
        past = (kc[0], vc[0], k, v)
        k, v = kc[1], vc[1]
        nodes += [kc[2], vc[2]]
    if mask is not None and where is not None:
        raise Refused("scores masked twice (a Where and an additive mask): Attention takes one mask")
    _proved_causal(graph, where, square=past is None)
    keep = None if where is None else (where.inputs[0], scalar(where.inputs[1]) is not None)
    return _Match(
        q, k, v, None, None, c, mask, mm2.outputs[0], nodes, four_d=True, past=past, causal=where is not None, keep=keep
    )


def _grouped(k: gs.Tensor, v: gs.Tensor) -> tuple[gs.Tensor, gs.Tensor, list[gs.Node]]:
    """Grouped-query attention: keys and values each repeated over the query heads by
    ``transformers``' repeat_kv (Unsqueeze at 2, Expand to (B, KV, R, L, H), Reshape to
    (B, KV·R, L, H)) are taken before the repeat, with the repeat's nodes: Attention reads KV
    key/value heads for N = KV·R query heads itself (query head i reads key head i // R, the order
    repeat_kv writes). Returns (k, v, []) as they are when not both repeated alike."""
    rk, rv = _unrepeated(k), _unrepeated(v)
    if rk is None or rv is None or rk[2] != rv[2]:
        return k, v, []
    return rk[0], rv[0], [*rk[1], *rv[1]]


def _unrepeated(t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node], int] | None:
    """(base, nodes, R) when ``t`` is repeat_kv(base, R) (see ``_grouped``), by the inferred shapes."""
    rs = producer(t, "Reshape")
    ex = producer(rs.inputs[0], "Expand") if rs is not None else None
    un = producer(ex.inputs[0], "Unsqueeze") if ex is not None else None
    if un is None:
        return None
    axes = un.attrs.get("axes")
    axes = list(axes) if axes is not None else (const_value(un.inputs[1]) if len(un.inputs) > 1 else None)
    base = un.inputs[0]
    shapes = base.shape, ex.outputs[0].shape, t.shape
    if axes is None or [int(a) for a in np.ravel(axes)] != [2] or [len(x or ()) for x in shapes] != [4, 5, 4]:
        return None
    (b, kv, n, h), (eb, ekv, r, en, eh), (tb, heads, tn, th) = (list(x) for x in shapes)
    if not all(isinstance(d, int) for d in (kv, h, r, heads)) or r < 1 or heads != kv * r or h != eh or h != th:
        return None
    if ekv != kv or any(not _same_dim(x, y) for x, y in ((b, eb), (b, tb), (n, en), (n, tn))):
        return None
    return base, [un, ex, rs], r


def _same_dim(a, b) -> bool:
    """Equal, or two run-time lengths (shape inference may name one length twice)."""
    return a == b or (isinstance(a, str) and isinstance(b, str))


def _peel(scores: gs.Tensor):
    """(scores, additive mask, Where node, nodes) with up to one additive mask and one Where
    around the scores, in either order; None; ``Refused``."""
    mask, where, nodes = None, None, []
    for _ in range(2):
        n = producer(scores, "Add", "Where")
        if n is not None and n.op == "Where" and where is None:
            branch = [t for t in n.inputs[1:] if scalar(t) is None]
            if len(branch) != 1:
                return None
            fill = scalar(n.inputs[1] if n.inputs[2] is branch[0] else n.inputs[2])
            if fill > WHERE_FILL_MAX:
                raise Refused(f"scores masked by a Where whose fill {fill:g} is not -inf or a large negative constant")
            where, scores = n, branch[0]
        elif n is not None and n.op == "Add" and mask is None:
            side = next((t for t in n.inputs if _scores_side(t)), None)
            if side is None:
                break
            mask, scores = other_input(n, side), side
        else:
            break
        nodes.append(n)
    return scores, mask, where, nodes


def _scores_side(t: gs.Tensor) -> bool:
    """``t`` is the scores (Q·Kᵀ, scaled or not, maybe behind a Where)."""
    w = producer(t, "Where")
    if w is not None:
        return any(scalar(b) is None and _scores_matmul(b) is not None for b in w.inputs[1:])
    return producer(t, "Div", "Mul", "MatMul") is not None and _scores_matmul(t) is not None


def _proved_causal(graph: gs.Graph, where: gs.Node | None, square: bool) -> None:
    """Returns when there is no Where or its mask is proved causal; else ``Refused`` says why not."""
    if where is None:
        return
    negate = scalar(where.inputs[1]) is not None  # Where(c, fill, scores): scores are kept where c is false
    try:
        causal_mask(where.inputs[0], negate, int(graph.opset or 0), square)
    except Refused as r:
        raise Refused(f"scores masked by a Where: {r.reason}") from None


def _read_elsewhere(graph: gs.Graph, nodes: list[gs.Node]) -> bool:
    """Whether an output of ``nodes`` is read outside them: besides its one reader, only a Shape
    whose value goes (through shape arithmetic) into the matched nodes themselves may read it, as
    a Reshape's target computed from the tensor it reshapes (it goes with them)."""
    inside = {id(n) for n in nodes}
    return any(
        only_consumer(o, graph) is None and not _read_for_own_shape(graph, o, inside) for n in nodes for o in n.outputs
    )


SHAPE_MATH = {"Gather", "Slice", "Concat", "Unsqueeze", "Squeeze", "Mul", "Add", "Sub", "Div", "Cast", "Reshape"}


def _read_for_own_shape(graph: gs.Graph, t: gs.Tensor, inside: set[int], batch: bool = False) -> bool:
    """Whether ``t`` has one reader besides Shapes, each Shape going into ``inside`` or, with
    ``batch`` (``t`` is P·V or its heads moved: (B, ·, ·, ·)), reading its batch (that read is
    moved to the fused op's output)."""
    readers = [r for r in t.outputs if r.op != "Shape"]
    if len(readers) != 1 or any(o is t for o in graph.outputs):
        return False
    return all(
        batch and _reads_batch(r) and _rank(t) == 4 or _flows_into(graph, r.outputs[0], inside, 0)
        for r in t.outputs
        if r.op == "Shape"
    )


def _reads_batch(n: gs.Node) -> bool:
    """A ``Shape(t, start=0, end=1)``: the batch, which every activation of an attention shares."""
    return n.op == "Shape" and int(n.attrs.get("start", 0)) == 0 and int(n.attrs.get("end", -1)) == 1


def _batch_reads(nodes: list[gs.Node]) -> list[gs.Node]:
    """The batch reads of the 4-D tensors ``nodes`` write, found before they go (the fused op's
    output has the same batch on axis 0: they read it instead)."""
    reads = [r for n in nodes for o in n.outputs if _rank(o) == 4 for r in o.outputs if _reads_batch(r)]
    return [r for r in reads if r not in nodes]


def _flows_into(graph: gs.Graph, t: gs.Tensor, inside: set[int], depth: int) -> bool:
    if depth > 8 or any(o is t for o in graph.outputs) or not t.outputs:
        return False
    return all(
        id(r) in inside or (r.op in SHAPE_MATH and _flows_into(graph, r.outputs[0], inside, depth + 1))
        for r in t.outputs
    )


RANK_KEEPING = {
    "Trilu",
    "Concat",
    "Slice",
    "Mul",
    "Add",
    "Sub",
    "Div",
    "Neg",
    "Cast",
    "Identity",
    "Softmax",
    "Sigmoid",
    "Tanh",
}


def _rank(t: gs.Tensor, depth: int = 0) -> int | None:
    """The rank of ``t``: from its shape, else from its producer (a Transpose's perm, a constant
    Reshape target, or an op whose output has its first input's rank; a com.microsoft op upstream
    leaves onnx's shape inference without shapes)."""
    if t.shape is not None:
        return len(t.shape)
    n = producer(t)
    if n is None or depth > 12:
        return None
    if n.op == "Transpose" and "perm" in n.attrs:
        return len(n.attrs["perm"])
    if n.op == "Reshape":  # the target's length (a constant's, or a Concat's of known pieces)
        return int(n.inputs[1].values.size) if isinstance(n.inputs[1], gs.Constant) else _length(n.inputs[1])
    if n.op in ("Where", "Equal", "Less", "Greater", "And", "Or", "Expand"):  # broadcasting: the widest input
        ranks = [len(i.shape) if i.shape is not None else _rank(i, depth + 1) for i in n.inputs if i.name]
        if n.op == "Expand":  # the widest of the input's rank and the target's length
            ranks = [ranks[0], _length(n.inputs[1])]
        return max(ranks) if ranks and all(r is not None for r in ranks) else None
    if n.op in RANK_KEEPING and n.inputs:
        ranks = [_rank(i, depth + 1) for i in n.inputs if i.name and not isinstance(i, gs.Constant)]
        return ranks[0] if ranks and all(r == ranks[0] for r in ranks) else None
    return None


def _dim(t: gs.Tensor, axis: int, depth: int = 0) -> int | None:
    """Dim ``axis`` of a 4-D ``t`` when it is a fixed number: from its shape, else from its producer
    (a Transpose's perm, a constant entry of a Reshape's target, the widest input of a broadcasting
    op, a Slice or Concat along another axis): after a com.microsoft op onnx infers no shapes."""
    if t.shape is not None and len(t.shape) == 4 and isinstance(t.shape[axis], int):
        return int(t.shape[axis])
    n = producer(t)
    if n is None or depth > 12:
        return None
    if n.op == "Transpose" and "perm" in n.attrs:
        return _dim(n.inputs[0], int(n.attrs["perm"][axis]), depth + 1)
    if n.op == "Reshape":
        target = const_value(n.inputs[1])
        if target is not None and target.size == 4 and target[axis] > 0:
            return int(target[axis])
        if target is not None:  # view(b, s, -1, h) of a (B, S, W): N = W / H
            w = _width(n.inputs[0]) if axis == 2 and list(target[:2]) == [0, 0] and target[3] > 0 else None
            return w // int(target[3]) if w else None
        split = _split_dims(n.inputs[1], _width(n.inputs[0])) if axis >= 2 else None  # [·, ·, N, H], run-time B, S
        return split[axis - 2] if split is not None else None
    along = {"Concat": n.attrs.get("axis")}.get(n.op)
    if n.op == "Slice":
        along = const_value(n.inputs[3]) if len(n.inputs) > 3 else None
    if n.op in ("Concat", "Slice") and (along is None or axis in [int(a) % 4 for a in np.ravel(along)]):
        return _dim_along(n, axis, depth)
    if n.op in ("Add", "Sub", "Mul", "Div", "Neg", "Cast", "Identity", "Concat", "Slice"):
        ins = n.inputs[:1] if n.op == "Slice" else n.inputs
        dims = [_dim(i, axis, depth + 1) for i in ins if _rank(i) == 4]
        known = [d for d in dims if d is not None]  # broadcasting: each is 1 or the result's dim
        return max(known) if known and (len(known) == len(dims) or max(known) > 1) else None
    return None


def _dim_along(n: gs.Node, axis: int, depth: int) -> int | None:
    """Dim ``axis`` of a Concat or a Slice along that axis (rotary halves put back together): the
    sum of the pieces, or a constant slice of a known dim."""
    if n.op == "Concat" and n.attrs.get("axis") is not None:
        parts = [_dim(i, axis, depth + 1) for i in n.inputs]
        return sum(parts) if all(p is not None for p in parts) else None
    if n.op != "Slice" or len(n.inputs) < 4:  # (its axes named: starts, ends, axes)
        return None
    ends = [const_value(i) for i in n.inputs[1:4]]
    steps = const_value(n.inputs[4]) if len(n.inputs) > 4 else np.ones(1, np.int64)
    whole = _dim(n.inputs[0], axis, depth + 1)
    if whole is None or any(e is None or e.size != 1 for e in ends) or steps is None or steps.tolist() != [1]:
        return None
    start, end = (int(np.clip(int(e[0]) + whole if int(e[0]) < 0 else int(e[0]), 0, whole)) for e in ends[:2])
    return max(end - start, 0)


def _length(t: gs.Tensor, depth: int = 0) -> int | None:
    """The length of a 1-D integer tensor (a shape being assembled): a constant's size, a Shape
    slice's ``end - start``, a Concat's sum."""
    if isinstance(t, gs.Constant):
        return int(t.values.size)
    if t.shape is not None and len(t.shape) == 1 and isinstance(t.shape[0], int):
        return int(t.shape[0])
    n = producer(t)
    if n is None or depth > 6:
        return None
    if n.op == "Shape" and "end" in n.attrs and int(n.attrs["end"]) >= 0:
        return int(n.attrs["end"]) - int(n.attrs.get("start", 0))
    if n.op == "Concat":
        parts = [_length(i, depth + 1) for i in n.inputs]
        return sum(parts) if all(p is not None for p in parts) else None
    return None


def _cache(t: gs.Tensor):
    """(past, new, Concat) when ``t = Concat(past, new)`` on the sequence axis of (B, N, L, H)."""
    cat = producer(t, "Concat")
    if cat is None or len(cat.inputs) != 2 or int(cat.attrs.get("axis", 0)) not in (2, -2):
        return None
    past, new = cat.inputs
    return (past, new, cat) if _rank(past) == 4 and _rank(new) == 4 else None


def _scores_matmul(t: gs.Tensor) -> gs.Node | None:
    n = producer(t, "Div", "Mul")
    return producer(n.inputs[0], "MatMul") if n is not None else producer(t, "MatMul")


def _heads(t: gs.Tensor, perm: tuple[int, ...]):
    """(x, heads, head size, nodes) for ``Transpose(Reshape(x, [·, ·, N, H]), perm)``; None; ``Refused``."""
    tr = producer(t, "Transpose")
    if tr is None or tuple(tr.attrs.get("perm", ())) != perm:
        return None
    rs = producer(tr.inputs[0], "Reshape")
    if rs is None:
        return None
    x = rs.inputs[0]
    heads = _split_dims(rs.inputs[1], _width(x))
    if heads is None:
        raise Refused("the split into heads is not a constant [·, ·, heads, head size]")
    n, h = heads
    _fold_head_shapes(rs.outputs[0], n, h)
    if x.shape is not None and len(x.shape) != 3:
        return None
    if x.shape is not None and isinstance(x.shape[-1], int) and x.shape[-1] != n * h:
        return None
    return x, n, h, [rs, tr]


def _width(x: gs.Tensor, depth: int = 0) -> int | None:
    """The last dim of ``x``: from its shape, else from what writes it (a com.microsoft op upstream
    leaves onnx's shape inference without shapes): a projection's weight, a Split's sizes, a
    Reshape's constant last dim, through a scale by a scalar (Whisper's ``q_proj(x) * scaling``)."""
    if x.shape is not None and x.shape and isinstance(x.shape[-1], int) and x.shape[-1] > 0:
        return x.shape[-1]
    if depth > 4:
        return None
    proj = _projection(x)
    if proj is not None and proj[1].shape is not None:
        return int(proj[1].shape[-1])
    n = producer(x)
    if n is None:
        return None
    if n.op == "Gemm" and isinstance(n.inputs[1], gs.Constant):
        return int(n.inputs[1].shape[0 if n.attrs.get("transB", 0) else 1])
    if n.op in ("Mul", "Div", "Add") and any(scalar(i) is not None for i in n.inputs):
        return _width(next(i for i in n.inputs if scalar(i) is None), depth + 1)
    if n.op == "Reshape" and isinstance(n.inputs[1], gs.Constant) and int(n.inputs[1].values.reshape(-1)[-1]) > 0:
        return int(n.inputs[1].values.reshape(-1)[-1])
    if n.op == "Reshape":
        return _width(n.inputs[0], depth + 1) if _length(n.inputs[1]) == 3 else None
    if n.op == "Split" and int(n.attrs.get("axis", 0)) in (-1, 2):
        sizes = n.inputs[1].values if len(n.inputs) > 1 and isinstance(n.inputs[1], gs.Constant) else None
        if sizes is None and "split" in n.attrs:
            sizes = np.array(n.attrs["split"])
        if sizes is not None:
            return int(sizes.reshape(-1)[n.outputs.index(x)])
    return None


def _fold_head_shapes(split: gs.Tensor, heads: int, head_size: int) -> None:
    """A Shape that reads only the heads and head-size dims of the (B, S, N, H) split (the dynamo
    exporter's ``Shape(view, start=2, end=3)``) becomes the constant it is: the split is then read
    by the attention alone, and the rest of the graph no longer depends on it."""
    known = {2: heads, 3: head_size}
    for reader in list(split.outputs):
        if reader.op != "Shape" or reader.inputs[0] is not split:
            continue
        start, end = int(reader.attrs.get("start", 0)), int(reader.attrs.get("end", 4))
        start, end = start + 4 if start < 0 else start, end + 4 if end < 0 else min(end, 4)
        if start < 2 or end <= start:
            continue
        value = np.array([known[i] for i in range(start, end)], np.int64)
        reader.op, reader.attrs = "Constant", {"value": gs.Constant(f"{reader.outputs[0].name}_value", value)}
        reader.inputs.clear()


def _split_dims(shape: gs.Tensor, width: int | None = None) -> tuple[int, int] | None:
    """(heads, head size) from a 4-element Reshape target whose last two entries are constants:
    a constant [·, ·, N, H], or (the dynamo exporter) a Concat of the run-time batch and sequence
    lengths with constants N and H. N may be -1 (``view(b, s, -1, head_size)``, as transformers
    writes it) when the input's last dim ``width`` is known: N = width / H."""
    if isinstance(shape, gs.Constant):
        if shape.values.size != 4:
            return None
        tail = [int(d) for d in shape.values.reshape(-1)[2:]]
    else:
        cat = producer(shape, "Concat")
        if cat is None:
            return None
        parts = [p.values.reshape(-1) if isinstance(p, gs.Constant) else None for p in cat.inputs]
        if parts and parts[-1] is not None and parts[-1].size == 2:
            tail = [int(d) for d in parts[-1]]
        elif len(parts) >= 2 and all(p is not None and p.size == 1 for p in parts[-2:]):
            tail = [int(parts[-2][0]), int(parts[-1][0])]
        else:
            return None
        if shape.shape is not None and list(shape.shape) != [4]:
            return None
    if tail[0] == -1 and tail[1] > 0 and width and width % tail[1] == 0:
        return width // tail[1], tail[1]
    return (tail[0], tail[1]) if tail[0] > 0 and tail[1] > 0 else None


def _keys(t: gs.Tensor):
    """The keys transposed for Q·Kᵀ: in one Transpose [0, 2, 3, 1], or [0, 2, 1, 3] then [0, 1, 3, 2],
    or (the dynamo exporter's batched form of ``k.transpose(-2, -1)``) [0, 2, 1, 3], Reshape to
    (B·N, L, H), Transpose [0, 2, 1], Reshape back to (B, N, H, L)."""
    direct = _heads(t, (0, 2, 3, 1))
    if direct is not None:
        return direct
    batched = _batched_keys(t)
    if batched is not None:
        return batched
    tr = producer(t, "Transpose")
    if tr is None or tuple(tr.attrs.get("perm", ())) != (0, 1, 3, 2):
        return None
    inner = _heads(tr.inputs[0], (0, 2, 1, 3))
    if inner is None:
        return None
    return inner[0], inner[1], inner[2], [*inner[3], tr]


def _transposed(t: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(k, nodes) when ``t`` is k (B, N, L, H) transposed to (B, N, H, L): one Transpose [0, 1, 3, 2],
    or the dynamo exporter's batched form (Reshape to (B·N, L, H), Transpose [0, 2, 1], Reshape back)."""
    tr = producer(t, "Transpose")
    if tr is not None and tuple(tr.attrs.get("perm", ())) == (0, 1, 3, 2):
        return tr.inputs[0], [tr]
    back = producer(t, "Reshape")
    if back is None or _length(back.inputs[1]) != 4:
        return None
    tr = producer(back.inputs[0], "Transpose")
    if tr is None or tuple(tr.attrs.get("perm", ())) != (0, 2, 1):
        return None
    flat = producer(tr.inputs[0], "Reshape")
    if flat is None or _length(flat.inputs[1]) != 3:
        return None
    return flat.inputs[0], [flat, tr, back]


def _batched_keys(t: gs.Tensor):
    """``_keys``' third form: the batched transpose of keys split into heads by [0, 2, 1, 3]."""
    keys = _transposed(t)
    if keys is None or len(keys[1]) != 3:
        return None
    inner = _heads(keys[0], (0, 2, 1, 3))
    if inner is None:
        return None
    return inner[0], inner[1], inner[2], [*inner[3], *keys[1]]


def _output(graph: gs.Graph, mm2: gs.Node, head_size: int | None = None, seq_first: bool = False):
    """(y, nodes, sequence first) of ``Reshape(Transpose(P·V, [0, 2, 1, 3]), [·, ·, N·H])``, or None.
    A 4-D Reshape of P·V to ``[·, -1, ·, H]`` before the Transpose (T5's ``view(b, -1, s, h)``)
    keeps its layout and goes with the rest (verified at two sizes of the sequence). With
    ``seq_first``, nn.MultiheadAttention's ``Transpose(P·V, [2, 0, 1, 3])`` into a (S·B, N·H) Gemm
    input as well: then y is (S, B, N·H), the fused (B, S, N·H) transposed by [1, 0, 2]."""
    pv, lead = mm2.outputs[0], []
    rs0 = only_consumer(pv, graph, "Reshape")
    if rs0 is None:  # (TorchScript's SDPA: that Reshape's target reads P·V's batch by a Shape)
        rs0 = next((r for r in pv.outputs if r.op == "Reshape"), None)
        rs0 = rs0 if rs0 is not None and _read_for_own_shape(graph, pv, {id(rs0)}, batch=True) else None
    if rs0 is not None and head_size is not None and _keeps_heads(rs0.inputs[1], head_size):
        pv, lead = rs0.outputs[0], [rs0]
    tr = only_consumer(pv, graph, "Transpose")
    perm = tuple(tr.attrs.get("perm", ())) if tr is not None else None
    if perm not in ((0, 2, 1, 3), *([(2, 0, 1, 3)] if seq_first else [])):
        return None
    rs = only_consumer(tr.outputs[0], graph, "Reshape")
    if rs is None:  # (its target computed from the transposed tensor's own Shape)
        rs = next((r for r in tr.outputs[0].outputs if r.op == "Reshape"), None)
        by_batch = perm == (0, 2, 1, 3)  # (sequence first, axis 0 is not the batch)
        rs = rs if rs is not None and _read_for_own_shape(graph, tr.outputs[0], {id(rs)}, by_batch) else None
    if rs is None or rs.inputs[0] is not tr.outputs[0]:
        return None
    shape = rs.inputs[1]
    if _length(shape) == 2:  # (B·S, N·H) for a Gemm: the fused op's (B, S, N·H) flattens the same way
        if any(r.op == "Shape" and not (perm == (0, 2, 1, 3) and _reads_batch(r)) for r in tr.outputs[0].outputs):
            return None  # (that Reshape stays: a Shape of its input would read the fused op's 3-D output)
        tr.outputs[0].shape = None
        return tr.outputs[0], [*lead, tr], perm != (0, 2, 1, 3)
    if perm != (0, 2, 1, 3):
        return None
    if isinstance(shape, gs.Constant) and shape.values.size != 3:
        return None
    if not isinstance(shape, gs.Constant) and (shape.shape is None or list(shape.shape) != [3]):
        return None
    return rs.outputs[0], [*lead, tr, rs], False


def _keeps_heads(target: gs.Tensor, head_size: int) -> bool:
    """A 4-element Reshape target ``[·, -1, ·, H]``: (B, N, S, H) stays (B, N, S, H)."""
    if isinstance(target, gs.Constant):
        v = target.values.reshape(-1)
        return v.size == 4 and int(v[1]) == -1 and int(v[3]) == head_size
    cat = producer(target, "Concat")
    if cat is None:
        return False
    parts = [p.values.reshape(-1) if isinstance(p, gs.Constant) else None for p in cat.inputs]
    flat = []
    for p, t in zip(parts, cat.inputs):
        if p is not None:
            flat += [int(x) for x in p]
        elif _length(t) == 1:
            flat.append(None)
        else:
            return False
    return len(flat) == 4 and flat[1] == -1 and flat[3] == head_size


def _projection(t: gs.Tensor):
    """(x, W, b) when ``t = x·W + b`` (or ``x·W``) with W a constant matrix and b a constant vector."""
    add = producer(t, "Add")
    bias = None
    if add is not None:
        bias = next((u for u in add.inputs if isinstance(u, gs.Constant) and len(u.shape) == 1), None)
        if bias is None:
            return None
        t = other_input(add, bias)
    mm = producer(t, "MatMul")
    if mm is None or not isinstance(mm.inputs[1], gs.Constant) or len(mm.inputs[1].shape) != 2:
        return None
    w = mm.inputs[1]  # (shapes only: a weight left on disk is read when it is packed, not to be looked at)
    if bias is not None and bias.shape[0] != w.shape[1]:
        return None
    return mm.inputs[0], w, bias, [n for n in (mm, add) if n is not None]


def _packed(graph: gs.Graph, m: _Match):
    """(x, W, b, nodes) when q, k and v are projections of the same x (self-attention)."""
    ps = [_projection(t) for t in (m.q, m.k, m.v)]
    if any(p is None for p in ps) or not (ps[0][0] is ps[1][0] is ps[2][0]):
        return None
    if any(only_consumer(t, graph) is None for t in (m.q, m.k, m.v)):
        return None
    if len({p[1].dtype for p in ps}) != 1 or len({tuple(p[1].shape) for p in ps}) != 1:
        return None
    ws = [p[1].values for p in ps]
    w = gs.Constant(f"{m.out.name}_qkv_weight", np.concatenate(ws, axis=1))
    bs = [p[2].values if p[2] is not None else np.zeros(p[1].values.shape[1], ws[0].dtype) for p in ps]
    b = gs.Constant(f"{m.out.name}_qkv_bias", np.concatenate(bs).astype(ws[0].dtype))
    return ps[0][0], w, b, [n for p in ps for n in p[3]]


def _as_4d(graph: gs.Graph, mask: gs.Tensor, names: Namer, done: dict[str, gs.Tensor]) -> gs.Tensor:
    """A (S, T) mask as (1, 1, S, T), a (B, S, T) one as (B, 1, S, T): what an additive mask of the
    scores (B, N, S, T) broadcasts to anyway (once per mask tensor)."""
    key = f"{mask.name}#4d"
    if key in done:
        return done[key]
    rank = len(mask.shape)
    axes = gs.Constant(names.fresh(f"{mask.name}_axes"), np.array([0, 1] if rank == 2 else [1], np.int64))
    dims = [1, 1, *mask.shape] if rank == 2 else [mask.shape[0], 1, *mask.shape[1:]]
    out = gs.Variable(names.fresh(f"{mask.name}_4d"), dtype=mask.dtype, shape=dims)
    graph.nodes.append(gs.Node("Unsqueeze", names.fresh(f"{mask.name}_unsqueeze"), {}, [mask, axes], [out]))
    done[key] = out
    return out


def _bias_for(
    graph: gs.Graph, m: _Match, query: gs.Tensor, names: Namer, expanded: dict[str, gs.Tensor], seq_axis: int = 1
):
    """The mask as an attention_bias of shape (B|1, N|1, S, T): as it is, or a padding mask
    (B|1, 1, 1, T) expanded over the query length (dim ``seq_axis`` of ``query``; once per mask
    tensor). ``Refused`` when neither. (onnxruntime's standard Attention does not broadcast the
    mask's query dim either, though the spec allows it: the portable form is expanded too.)"""
    mask = m.mask
    if mask is None:
        return None
    shape = mask.shape
    if shape is None and _rank(mask) in (2, 3):  # (a com.microsoft op upstream leaves shapes unknown)
        mask.shape = shape = [None] * _rank(mask)
    if shape is not None and len(shape) in (2, 3):  # (S, T) or (B, S, T): broadcast over heads (and batch)
        mask, shape = _as_4d(graph, mask, names, expanded), [1] * (4 - len(shape)) + list(shape)
        if len(m.mask.shape) == 3:
            shape = [shape[1], 1, shape[2], shape[3]]
    if shape is None or len(shape) != 4:
        raise Refused("the mask's shape is unknown or not 4-D")
    if shape[1] not in (1, m.heads) and not _broadcasts_over_heads(m, shape[1]):
        raise Refused("the mask has a head axis that is neither 1 nor the number of heads")
    if shape[2] != 1:
        return mask
    if mask.name in expanded:  # (one query length per mask: all its readers attend over the same queries)
        return expanded[mask.name]
    dims = gs.Variable(names.fresh(f"{mask.name}_query_shape"), dtype=np.int64, shape=[seq_axis + 2])
    graph.nodes.append(gs.Node("Shape", names.fresh(f"{mask.name}_shape"), {}, [query], [dims]))
    seq = gs.Variable(names.fresh(f"{mask.name}_query_len"), dtype=np.int64, shape=[1])
    axis1 = gs.Constant(names.fresh(f"{mask.name}_axis1"), np.full(1, seq_axis, np.int64))
    graph.nodes.append(gs.Node("Gather", names.fresh(f"{mask.name}_gather"), {"axis": 0}, [dims, axis1], [seq]))
    target = gs.Variable(names.fresh(f"{mask.name}_target"), dtype=np.int64, shape=[4])
    ones = gs.Constant(names.fresh(f"{mask.name}_ones"), np.ones(2, np.int64))
    one = gs.Constant(names.fresh(f"{mask.name}_one"), np.ones(1, np.int64))
    graph.nodes.append(gs.Node("Concat", names.fresh(f"{mask.name}_concat"), {"axis": 0}, [ones, seq, one], [target]))
    out = gs.Variable(names.fresh(f"{mask.name}_over_queries"), dtype=mask.dtype, shape=[shape[0], 1, None, shape[3]])
    graph.nodes.append(gs.Node("Expand", names.fresh(f"{mask.name}_expand"), {}, [mask, target], [out]))
    expanded[mask.name] = out
    return out


def _broadcasts_over_heads(m: _Match, dim) -> bool:
    """A 4-D form's mask whose head axis shape inference could not tell (an Expand to a computed
    shape): the scores it is added to have N > 1 heads, so that axis is 1 or N (the Add would fail
    on anything else), which the op takes as it is."""
    heads = _dim(m.q, 1) if m.four_d else None
    return heads is not None and heads > 1 and not isinstance(dim, int)


def _fuse(graph: gs.Graph, m: _Match, target: str, opset: int, names: Namer, done: dict, res: PassResult) -> None:
    """Replace the matched nodes by one attention op; ``Refused`` says why it cannot."""
    if m.four_d and target == "onnxruntime" and opset < ATTENTION_OPSET:
        _fuse_4d_as_mha(graph, m, names, done, res)
        return
    if (m.four_d or target != "onnxruntime") and opset < ATTENTION_OPSET:
        what = "the portable target"
        if m.four_d:
            what = "(batch, heads, length, head size) inputs" + (" with a KV cache" if m.past is not None else "")
        raise Refused(
            f"opset {opset} < {ATTENTION_OPSET}: Attention needs "
            f"{ATTENTION_OPSET} for {what} (--opset {ATTENTION_OPSET} enables it)"
        )
    outputs, drop = [m.out], []
    if m.four_d:
        op, domain, attrs = "Attention", None, {"scale": float(m.scale)}
        mask = (
            _bias_for(graph, m, m.q, names, done, seq_axis=2)
            if m.keep is None
            else _keep_mask(graph, m.keep, names, done)
        )
        inputs = [m.q, m.k, m.v, mask if mask is not None else gs.Variable.empty()]
        if m.past is not None:
            inputs += [m.past[0], m.past[1]]
            outputs += [m.past[2], m.past[3]]
    elif target == "onnxruntime":
        packed = _packed(graph, m)
        bias = _bias_for(graph, m, packed[0] if packed is not None else m.q, names, done)
        tail = [gs.Variable.empty(), gs.Variable.empty(), bias] if bias is not None else []
        attrs = {"num_heads": m.heads, "scale": float(m.scale), **({"unidirectional": 1} if m.causal else {})}
        if packed is not None:
            x, w, b, drop = packed
            inputs, op = [x, w, b, *tail], "Attention"
        else:
            inputs, op = [m.q, m.k, m.v, *tail], "MultiHeadAttention"
        domain = "com.microsoft"
    else:
        bias = _bias_for(graph, m, m.q, names, done)
        inputs = [m.q, m.k, m.v, *([bias] if bias is not None else [])]
        op, domain = "Attention", None
        attrs = {
            "q_num_heads": m.heads,
            "kv_num_heads": m.heads,
            "scale": float(m.scale),
            **({"is_causal": 1} if m.causal else {}),
        }
    replace(
        graph,
        [*m.nodes, *drop],
        gs.Node(op, names.fresh(f"{m.out.name}_attention"), attrs, inputs, outputs, domain=domain),
    )
    res.count(f"attention-into-{op}" + ("-causal" if m.causal else "") + ("-with-cache" if m.past is not None else ""))


def _fuse_4d_as_mha(graph: gs.Graph, m: _Match, names: Namer, done: dict, res: PassResult) -> None:
    """The 4-D form below opset 23, for onnxruntime: com.microsoft ``MultiHeadAttention``, writing
    the (B, S, N·H) the heads were merged into. The op reads a 3-D query, so q is put back to
    (B, S, N·H) (a Transpose and a Reshape); keys and values go in as the (B, N, L, H) they are,
    or, with a cache, the new ones put back to 3-D beside ``past_key``/``past_value`` and the
    concatenations become its present outputs. A causal Where becomes ``unidirectional=1``
    (aligned to the last key with a past, as the Where was: verified)."""
    heads, size = _dim(m.q, 1), _dim(m.q, 3)
    if heads is None or size is None:
        raise Refused("the number of heads or the head size of the query is unknown")
    if _dim(m.k, 1) not in (heads, None) or _dim(m.v, 1) not in (heads, None):
        raise Refused("keys or values have other heads than the query (MultiHeadAttention takes equal heads)")
    tail = _output(graph, producer(m.out), size, seq_first=True)
    if tail is None:
        raise Refused("the result is not put back together as (batch, sequence, heads · head size)")
    out, tail_nodes, seq_first = tail
    q3 = _as_3d(graph, names, m.q, heads * size)
    m.heads = heads
    bias = None if m.causal else _bias_for(graph, m, q3, names, done)
    empty = gs.Variable.empty
    if m.past is None:
        inputs, outputs = [q3, m.k, m.v, empty(), empty(), bias or empty()], [out]
    else:
        k3, v3 = _as_3d(graph, names, m.k, heads * size), _as_3d(graph, names, m.v, heads * size)
        inputs = [q3, k3, v3, empty(), empty(), bias or empty(), m.past[0], m.past[1]]
        outputs = [out, m.past[2], m.past[3]]
    while inputs and not inputs[-1].name:
        inputs.pop()
    attrs = {"num_heads": heads, "scale": float(m.scale), **({"unidirectional": 1} if m.causal else {})}
    node = gs.Node("MultiHeadAttention", names.fresh(f"{out.name}_attention"), attrs, inputs, outputs)
    node.domain = "com.microsoft"
    reads = _batch_reads([*m.nodes, *([] if seq_first else tail_nodes)])
    replace(graph, [*m.nodes, *tail_nodes], node)
    if seq_first:  # the op writes (B, S, N·H); the Gemm after it reads (S, B, N·H) flattened
        node.outputs[0] = gs.Variable(names.fresh(f"{out.name}_bsd"), dtype=out.dtype)
        perm = {"perm": [1, 0, 2]}
        graph.nodes.append(gs.Node("Transpose", names.fresh(f"{out.name}_seq_first"), perm, [node.outputs[0]], [out]))
    for r in reads:
        r.inputs[0] = node.outputs[0]
    kind = ("-causal" if m.causal else "") + ("-with-cache" if m.past is not None else "")
    res.count("attention-into-MultiHeadAttention" + kind)


def _as_3d(graph: gs.Graph, names: Namer, t: gs.Tensor, width: int) -> gs.Tensor:
    """(B, N, L, H) ``t`` as (B, L, N·H): Transpose [0, 2, 1, 3], Reshape [0, 0, width]."""
    flat = gs.Variable(names.fresh(f"{t.name}_bsnh"), dtype=t.dtype)
    graph.nodes.append(gs.Node("Transpose", names.fresh(f"{t.name}_transpose"), {"perm": [0, 2, 1, 3]}, [t], [flat]))
    out = gs.Variable(names.fresh(f"{t.name}_3d"), dtype=t.dtype)
    target = gs.Constant(names.fresh(f"{t.name}_3d_shape"), np.array([0, 0, width], np.int64))
    graph.nodes.append(gs.Node("Reshape", names.fresh(f"{t.name}_reshape"), {}, [flat, target], [out]))
    return out


def _keep_mask(graph: gs.Graph, keep: tuple[gs.Tensor, bool], names: Namer, done: dict) -> gs.Tensor:
    """The boolean attn_mask (True: attend) of a Where-mask: its condition, or Not of it (once)."""
    cond, negate = keep
    if not negate:
        return cond
    key = f"not:{cond.name}"
    if key not in done:
        out = gs.Variable(names.fresh(f"{cond.name}_keep"), dtype=np.bool_, shape=cond.shape)
        graph.nodes.append(gs.Node("Not", names.fresh(f"{cond.name}_not"), {}, [cond], [out]))
        done[key] = out
    return done[key]
