"""NodeCost + HardwareProfile -> roofline rows: intensity, predicted time, bound.

predicted time = max(ops / peak[dtype], bytes / bandwidth) + per-op overhead
bound = "compute" when intensity >= ridge point (peak / bandwidth), else "memory".
Metadata-only ops (Reshape, Squeeze, ...) cost nothing and are bound by nothing ("meta");
unknown ops are "unknown" and have no predicted time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rooftop.analysis.costs import ModelCost, NodeCost
from rooftop.analysis.hardware import HardwareProfile
from rooftop.records import Costs


@dataclass
class Row:
    name: str
    op_type: str
    flops: float
    int_ops: float
    bytes_read: float
    bytes_written: float
    intensity: float | None
    bound: str  # compute | memory | meta | unknown
    predicted_s: float | None
    dtype: str
    measured_s: float | None = None
    layer: str = ""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "layer": self.layer,
            "flops": self.flops,
            "int_ops": self.int_ops,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "intensity": None if self.intensity is None or self.intensity == float("inf") else round(self.intensity, 4),
            "bound": self.bound,
            "predicted_s": self.predicted_s,
            "measured_s": self.measured_s,
        }


@dataclass
class LayerTotals:
    layer: str  # "" : the nodes outside every block (embedding, mask, head)
    nodes: int = 0
    flops: float = 0.0
    bytes: float = 0.0
    predicted_s: float = 0.0
    measured_s: float | None = None


@dataclass
class Roofline:
    rows: list[Row]
    flops: float
    int_ops: float
    bytes: float
    predicted_s: float
    params: int
    param_bytes: int
    peak_activation_bytes: int
    unknown: list[str] = field(default_factory=list)
    by_op_type: dict[str, dict] = field(default_factory=dict)
    shape_source: str = ""

    def totals(self) -> dict:
        return {
            "flops": self.flops,
            "int_ops": self.int_ops,
            "bytes": self.bytes,
            "params": self.params,
            "param_bytes": self.param_bytes,
            "peak_activation_bytes": self.peak_activation_bytes,
            "predicted_s": self.predicted_s,
            "unknown_nodes": len(self.unknown),
        }

    def costs(self) -> Costs:
        return Costs(self.flops, self.int_ops, self.bytes, self.predicted_s, len(self.unknown))

    def by_layer(self) -> list[LayerTotals]:
        """Totals per repeated block (empty when the model has fewer than two): the rows of a
        model with thousands of nodes, read as the blocks they repeat."""
        groups: dict[str, LayerTotals] = {}
        for r in self.rows:
            g = groups.setdefault(r.layer, LayerTotals(r.layer))
            g.nodes += 1
            g.flops += r.flops + r.int_ops
            g.bytes += r.bytes_read + r.bytes_written
            g.predicted_s += r.predicted_s or 0.0
            if r.measured_s is not None:
                g.measured_s = (g.measured_s or 0.0) + r.measured_s
        if sum(1 for k in groups if k) < 2:
            return []
        return sorted(groups.values(), key=lambda g: (g.layer == "", int(g.layer) if g.layer else 0))

    def top_memory_bound(self, k: int = 10) -> list[Row]:
        rows = [r for r in self.rows if r.bound == "memory" and r.predicted_s is not None]
        return sorted(rows, key=lambda r: r.predicted_s or 0.0, reverse=True)[:k]


def row(c: NodeCost, hw: HardwareProfile) -> Row:
    if c.metadata:
        return Row(c.name, c.op_type, 0.0, 0.0, 0.0, 0.0, None, "meta", 0.0, c.dtype, layer=c.layer)
    if not c.known:
        return Row(c.name, c.op_type, 0.0, 0.0, 0.0, 0.0, None, "unknown", None, c.dtype, layer=c.layer)
    t_compute = c.ops / hw.peak(c.dtype) if c.ops else 0.0
    t_memory = c.bytes / hw.bandwidth
    intensity = c.intensity
    bound = "compute" if intensity >= hw.ridge(c.dtype) else "memory"
    return Row(
        c.name,
        c.op_type,
        c.flops,
        c.int_ops,
        c.bytes_read,
        c.bytes_written,
        intensity,
        bound,
        max(t_compute, t_memory) + hw.overhead_s,
        c.dtype,
        layer=c.layer,
    )


def roofline(cost: ModelCost, hw: HardwareProfile) -> Roofline:
    rows = [row(c, hw) for c in cost.nodes]
    t = cost.totals
    return Roofline(
        rows=rows,
        flops=t.flops,
        int_ops=t.int_ops,
        bytes=t.bytes,
        predicted_s=sum(r.predicted_s or 0.0 for r in rows),
        params=t.params,
        param_bytes=t.param_bytes,
        peak_activation_bytes=t.peak_activation_bytes,
        unknown=[f"{c.name} ({c.op_type}): {c.reason}" for c in cost.unknown],
        by_op_type=cost.by_op_type,
        shape_source=cost.shape_source,
    )


def above_compute_roof(
    rl: Roofline | None, hw: HardwareProfile, margin: float = 1.25, min_s: float = 20e-6
) -> list[Row]:
    """Operators whose measured FLOP/s exceed the profile's compute peak by more than ``margin``
    (timed for at least ``min_s``): the peak was measured low (a busy machine), so the profile
    should be measured again. Memory roofs are not checked: data that stays in cache beats the
    DRAM bandwidth honestly."""
    if rl is None:
        return []
    out = []
    for r in rl.rows:
        ops = r.flops + r.int_ops
        if r.measured_s and r.measured_s >= min_s and ops > 0 and ops / r.measured_s > margin * hw.peak(r.dtype):
            out.append(r)
    return out
