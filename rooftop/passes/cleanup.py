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
from rooftop.passes.base import Pass, PassContext, PassResult


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
        nodes_before = len(graph.nodes) - removed_identity - removed_dropout
        inits_before = len([t for t in graph.tensors().values() if isinstance(t, gs.Constant)])
        graph.cleanup(remove_unused_graph_inputs=False)
        dead = nodes_before - len(graph.nodes)
        inits_after = len([t for t in graph.tensors().values() if isinstance(t, gs.Constant)])
        unused = max(0, inits_before - inits_after)
        res.rewrites = removed_identity + removed_dropout + max(dead, 0) + unused
        for n, what in ((removed_identity, "Identity"), (removed_dropout, "Dropout"), (dead, "dead node"), (unused, "unused initializer")):
            if n > 0:
                res.notes.append(f"removed {n} {what}{'s' if n != 1 else ''}")
        return res
