"""cleanup: remove what computes nothing.

- Identity nodes: consumers read the Identity's input instead. When the
  Identity's output is a graph output, its producer writes the output name
  directly, so graph inputs and outputs keep their names, order and types.
- Dropout in inference form (no mask output used, ``training_mode`` absent or a
  constant false): an identity, removed the same way.
- Constant nodes: their value becomes an initializer of the same name (a node that computes
  nothing; as an initializer every pass and onnxruntime sees a weight, and onnxsim is not needed
  just to move it).
- Dead nodes (outputs reach no graph output) and unused initializers.
- Topological order.

Refuses: an Identity between a graph input and a graph output (the output name
could not survive), a Constant that is a graph output, is read inside an If/Loop/Scan body or holds
a sparse or string value, a Dropout whose mask is used or whose training_mode is not a
constant false. Subgraphs of If/Loop/Scan are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from onnx import ModelProto

from rooftop.passes._graph import bypass, const_value
from rooftop.passes.base import Pass, PassContext, PassResult, toposorted


class Cleanup(Pass):
    name = "cleanup"
    summary = "remove Identity, inference Dropout, dead nodes and unused initializers; toposort"

    def run(self, graph: gs.Graph, ctx: PassContext) -> PassResult:
        res = PassResult()
        removed_identity = removed_dropout = 0
        for node in list(graph.nodes):
            if node.op == "Identity" and len(node.inputs) == 1 and len(node.outputs) == 1:
                if bypass(graph, node, node.inputs[0], node.outputs[0]):
                    removed_identity += 1
                else:
                    res.refuse(
                        "writes a graph output from a graph input, another "
                        "graph output or a constant (both names must stay)",
                        node,
                    )
            elif node.op == "Dropout" and node.inputs and node.outputs:
                why = _dropout_refusal(graph, node)
                if why:
                    res.refuse(why, node)
                elif bypass(graph, node, node.inputs[0], node.outputs[0]):
                    removed_dropout += 1
                else:
                    res.refuse(
                        "writes a graph output from a graph input, another "
                        "graph output or a constant (both names must stay)",
                        node,
                    )
        constants = _constants_to_initializers(graph, res)
        for n, what in ((removed_identity, "Identity"), (removed_dropout, "Dropout"), (constants, "Constant")):
            if n > 0:
                res.notes.append(f"removed {n} {what}")
                res.count(f"{what.lower()}-removed", n)
        return res

    def tidied(self, graph: gs.Graph, model: ModelProto, res: PassResult) -> None:
        """Count what graphsurgeon's cleanup removed (dead nodes, unused initializers) and whether
        the model's node order had to change."""
        nodes = len(model.graph.node) - len(graph.nodes) - res.rewrites
        inits = len(model.graph.initializer) - _initializers(graph)
        for n, what in ((nodes, "dead node"), (inits, "unused initializer")):
            if n > 0:
                res.notes.append(f"removed {n} {what}{'s' if n != 1 else ''}")
                res.count(f"{what.replace(' ', '-')}-removed", n)
        if res.rewrites == 0 and not toposorted(model):
            res.count("order-restored")
            res.notes.append("restored topological order")


def _constants_to_initializers(graph: gs.Graph, res: PassResult) -> int:
    n = 0
    outputs = {id(t) for t in graph.outputs}
    in_bodies = _read_in_subgraphs(graph)
    for node in list(graph.nodes):
        if node.op != "Constant" or len(node.outputs) != 1:
            continue
        out = node.outputs[0]
        value = (
            const_value(out)
            if set(node.attrs) <= {"value", "value_float", "value_floats", "value_int", "value_ints"}
            else None
        )
        if id(out) in outputs:
            res.refuse("a Constant written as a graph output stays a node", node)
            continue
        if out.name in in_bodies:  # onnxsim 0.8.1 crashes (SIGSEGV) on an outer-scope initializer read in an If body
            res.refuse("read inside an If/Loop/Scan body: stays a node", node)
            continue
        if value is None or value.dtype.kind not in "biuf":
            res.refuse("sparse or string value", node)
            continue
        const = gs.Constant(out.name, np.asarray(value))
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = const
        node.outputs.clear()
        n += 1
    return n


def _read_in_subgraphs(graph: gs.Graph) -> set[str]:
    """Names read by nodes of the If/Loop/Scan bodies under ``graph``, at any depth."""
    names: set[str] = set()
    todo = [sg for node in graph.nodes for sg in node.subgraphs()]
    while todo:
        sg = todo.pop()
        for node in sg.nodes:
            names.update(t.name for t in node.inputs)
            todo.extend(node.subgraphs())
    return names


def _dropout_refusal(graph: gs.Graph, node: gs.Node) -> str:
    """Why a Dropout is not an identity here ('' when it is one)."""
    if len(node.outputs) > 1 and (node.outputs[1].outputs or any(o is node.outputs[1] for o in graph.outputs)):
        return "its mask output is used"
    if len(node.inputs) >= 3 and node.inputs[2].name:
        tm = const_value(node.inputs[2])
        if tm is None:
            return "training_mode is not a constant"
        if bool(np.asarray(tm).reshape(-1)[0]):
            return "training_mode is true"
    return ""


def _initializers(graph: gs.Graph) -> int:
    """How many initializers the graph exports: constants read by its nodes or given as outputs."""
    names = {t.name for n in graph.nodes for t in n.inputs if isinstance(t, gs.Constant)}
    names |= {t.name for t in graph.outputs if isinstance(t, gs.Constant)}
    return len(names)
