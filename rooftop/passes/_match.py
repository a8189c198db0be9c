"""Small helpers for pattern passes on graphsurgeon graphs: who produces a tensor, its only
consumer, scalar constants, reduction axes. Every helper answers None rather than raising."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._graph import const_value
from rooftop.passes.base import Refused

STANDARD = ("", "ai.onnx", None)


def matches(graph: gs.Graph, res, ops: tuple[str, ...], match):
    """(node, match) for each standard node of ``ops`` (outputs in use) that ``match(graph, node)``
    recognizes; a ``Refused`` it raises is recorded on that node in ``res``; None: not a
    candidate. Nodes are listed first, so a rewrite may add nodes while this runs."""
    for node in list(graph.nodes):
        if node.op not in ops or node.domain not in STANDARD or not node.outputs:
            continue
        try:
            m = match(graph, node)
        except Refused as r:
            res.refuse(r.reason, node)
            continue
        if m is not None:
            yield node, m


def replace(graph: gs.Graph, nodes: list[gs.Node], fused: gs.Node) -> None:
    """Drop ``nodes`` (disconnected; the pass's cleanup removes them) and add ``fused``, which
    writes the tensors they wrote that the rest of the graph reads."""
    for n in nodes:
        n.inputs.clear()
        n.outputs.clear()
    graph.nodes.append(fused)


def producer(t: gs.Tensor, *ops: str) -> gs.Node | None:
    """The node that writes ``t`` when it is one of ``ops`` (any op when none given)."""
    if len(t.inputs) != 1:
        return None
    n = t.inputs[0]
    return n if n.domain in STANDARD and (not ops or n.op in ops) else None


def only_consumer(t: gs.Tensor, graph: gs.Graph, *ops: str) -> gs.Node | None:
    """The single node reading ``t`` (and ``t`` no graph output), when it is one of ``ops``."""
    if len(t.outputs) != 1 or any(o is t for o in graph.outputs):
        return None
    n = t.outputs[0]
    return n if n.domain in STANDARD and (not ops or n.op in ops) else None


def scalar(t: gs.Tensor) -> float | None:
    """The value of a constant with one element."""
    v = const_value(t)
    if v is None or v.size != 1 or v.dtype.kind not in "fiu":
        return None
    return float(v.reshape(-1)[0])


def other_input(node: gs.Node, t: gs.Tensor) -> gs.Tensor | None:
    """The input of a two-input node that is not ``t`` (None if ``t`` is not an input)."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is t:
        return b
    if b is t:
        return a
    return None


def near(v: float | None, target: float, rel: float = 1e-3) -> bool:
    return v is not None and abs(v - target) <= rel * abs(target)


def reduce_axes(node: gs.Node) -> list[int] | None:
    """The axes of a ReduceMean (attribute before opset 18, input from 18); None if unknown or
    keepdims is 0 (the normalizations keep the reduced dims)."""
    if int(node.attrs.get("keepdims", 1)) != 1:
        return None
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > 1 and node.inputs[1].name:
        v = const_value(node.inputs[1])
        return None if v is None else [int(a) for a in np.atleast_1d(v)]
    return None


def trailing(axes: list[int], rank: int | None) -> int | None:
    """The number k when ``axes`` are the last k axes of a tensor (the axis of LayerNormalization
    is then -k), else None."""
    if rank is None:
        if all(a < 0 for a in axes) and sorted(axes) == list(range(-len(axes), 0)):
            return len(axes)
        return None
    norm = sorted(a % rank for a in axes)
    return len(norm) if norm == list(range(rank - len(norm), rank)) else None


def same_shape(a, b) -> bool:
    """Equal ranks and every dim equal, or two run-time lengths (symbols: shape inference names a
    length afresh after a Reshape or a Range, so the same length may carry two names; a fixed
    dim, 1 in particular, against a symbol is a broadcast). Verification runs behind it."""
    if a is None or b is None or len(a) != len(b):
        return False
    return all(
        (x == y and x is not None) or (isinstance(x, str) and isinstance(y, str)) for x, y in zip(a, b, strict=True)
    )
