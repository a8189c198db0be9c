"""cleanup: remove what computes nothing.

- Identity nodes: consumers read the Identity's input instead. When the
  Identity's output is a graph output, its producer writes the output name
  directly, so graph inputs and outputs keep their names, order and types.
- Dropout in inference form (no mask output used, ``training_mode`` absent or a
  constant false): an identity, removed the same way.
- Dead nodes (outputs reach no graph output) and unused initializers.
- Topological order.

Refuses: an Identity between a graph input and a graph output (the output name
could not survive), a Dropout whose mask is used or whose training_mode is not a
constant false. Subgraphs of If/Loop/Scan are left as they are.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from rooftop.passes._graph import bypass, const_value
from onnx import ModelProto

from rooftop.passes.base import Pass, PassContext, PassResult, export_like, import_graph, untouched


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
            elif node.op == "Dropout" and node.inputs and node.outputs:
                if len(node.outputs) > 1 and node.outputs[1].outputs:
                    continue
                if len(node.outputs) > 1 and any(o is node.outputs[1] for o in graph.outputs):
                    continue
                if len(node.inputs) >= 3 and node.inputs[2].name:
                    tm = const_value(node.inputs[2])
                    if tm is None or bool(np.asarray(tm).reshape(-1)[0]):
                        continue
                data_in, data_out = node.inputs[0], node.outputs[0]
                if bypass(graph, node, data_in, data_out):
                    removed_dropout += 1
        res.rewrites = removed_identity + removed_dropout
        for n, what in ((removed_identity, "Identity"), (removed_dropout, "Dropout")):
            if n > 0:
                res.notes.append(f"removed {n} {what}")
                res.counts[f"{what.lower()}-removed"] = n
        return res

    def apply(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:
        with untouched(model):
            graph = import_graph(model)
            res = self.run(graph, ctx)
            nodes_before = len(model.graph.node)
            graph.cleanup(remove_unused_graph_inputs=False)
            nodes = nodes_before - len(graph.nodes) - res.rewrites
            inits = len(model.graph.initializer) - _initializers(graph)
            for n, what in ((nodes, "dead node"), (inits, "unused initializer")):
                if n > 0:
                    res.notes.append(f"removed {n} {what}{'s' if n != 1 else ''}")
                    res.counts[f"{what.replace(' ', '-')}-removed"] = n
            res.rewrites += max(nodes, 0) + max(inits, 0)
            # nothing removed and already in order: no export (it would copy every weight)
            if res.rewrites == 0 and _toposorted(model) and not _has_subgraphs(model):
                return model, res
            out = export_like(graph.toposort(), model)
        if res.rewrites == 0:
            res.rewrites = 1
            res.notes.append("restored topological order")
        return out, res


def _initializers(graph: gs.Graph) -> int:
    """How many initializers the graph exports: constants read by its nodes or given as outputs."""
    names = {t.name for n in graph.nodes for t in n.inputs if isinstance(t, gs.Constant)}
    names |= {t.name for t in graph.outputs if isinstance(t, gs.Constant)}
    return len(names)


def _has_subgraphs(model: ModelProto) -> bool:
    return any(a.type in (a.GRAPH, a.GRAPHS) for n in model.graph.node for a in n.attribute)


def _toposorted(model: ModelProto) -> bool:
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    for node in model.graph.node:
        if any(i not in known for i in node.input):
            return False
        known.update(node.output)
    return True
