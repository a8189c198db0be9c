"""Small helpers over onnx-graphsurgeon graphs shared by the passes."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def const_value(t: gs.Tensor | None) -> np.ndarray | None:
    """The value of a tensor known at export time: an initializer or a Constant node's output."""
    if t is None:
        return None
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if len(t.inputs) == 1:
        prod = t.inputs[0]
        if prod.op == "Constant" and "value" in prod.attrs:
            v = prod.attrs["value"]
            if isinstance(v, gs.Constant):
                return np.asarray(v.values)
            return np.asarray(v)
    return None


def is_graph_output(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(o is t for o in graph.outputs)


def is_graph_input(graph: gs.Graph, t: gs.Tensor) -> bool:
    return any(i is t for i in graph.inputs)


def replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor) -> None:
    """Make every consumer of ``old`` read ``new`` (graph outputs are handled by the caller)."""
    for consumer in list(old.outputs):
        for i, inp in enumerate(consumer.inputs):
            if inp is old:
                consumer.inputs[i] = new


def bypass(graph: gs.Graph, node: gs.Node, keep: gs.Tensor, drop: gs.Tensor) -> bool:
    """Remove ``node`` whose output ``drop`` equals its input ``keep``.

    If ``drop`` is a graph output its name must survive: then the producer of
    ``keep`` is made to write ``drop`` directly, which is only possible when
    ``keep`` is produced by a node, is not itself a graph output, and (after the
    rewiring) nothing else is lost. Returns False when the node cannot go.
    """
    if is_graph_output(graph, drop):
        if not keep.inputs or is_graph_output(graph, keep) or is_graph_input(graph, keep):
            return False
        if isinstance(keep, gs.Constant):
            return False
        producer = keep.inputs[0]
        replace_uses(graph, keep, drop)  # other consumers of keep now read drop (same value)
        node.outputs.clear()
        node.inputs.clear()
        for i, o in enumerate(producer.outputs):
            if o is keep:
                producer.outputs[i] = drop
        return True
    replace_uses(graph, drop, keep)
    node.outputs.clear()
    node.inputs.clear()
    return True


def single_consumer(t: gs.Tensor) -> gs.Node | None:
    return t.outputs[0] if len(t.outputs) == 1 else None


def tensor_users(graph: gs.Graph, t: gs.Tensor) -> int:
    """Number of uses of ``t`` as node input plus as graph output."""
    return len(t.outputs) + (1 if is_graph_output(graph, t) else 0)
