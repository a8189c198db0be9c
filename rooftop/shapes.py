"""The input shapes decisions are taken at: the user's shape sets, else realistic defaults.

A model with dynamic axes is judged (costed, timed, verified) at concrete shapes. A pass that is
faster at 32×32 can be slower at 48×320, so the shapes are the ones the model runs at:

- ``--input-shape NAME=DxD..`` given several times for the same input forms several *shape sets*
  (the k-th mention of each input goes into set k; an input mentioned fewer times keeps its last
  shape). Every decision must hold at each set; the cost figures are shown for the first.
- Without it, each dynamic dim gets a realistic default, from the dim's name where it says
  (``batch`` → 1; ``seq``/``len``/``token``/``time``/``past`` → 128; ``height``/``width``/``h``/``w``
  → 224), else from its place: the first axis of an input of rank 2 or more is the batch (1), the
  last two axes of a 4-D float input are image sides (224), anything else is a sequence (128).
  Dims that share a name share a value. Every default is recorded (``Defaulted``) so that every
  output can name it, with the ``--input-shape`` line that would change it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rooftop.errors import UsageError
from rooftop.runtime import InputSpec

BATCH = 1  # a deployment runs one request at a time unless told otherwise
IMAGE_SIDE = 224  # the side of the ImageNet-style crop most vision exports are made for
SEQUENCE = 128  # a typical sequence (tokens, frames, steps)
# image sizes tried when a model does not run at IMAGE_SIDE × IMAGE_SIDE (height, width): the text-line
# crops OCR recognizers are made for (PP-OCR 48×320, CRNN 32×100 and 32×320, 64×256), then a detector's 640
IMAGE_FALLBACKS = [(48, 320), (32, 320), (32, 100), (64, 256), (640, 640)]

ShapeSet = dict[str, tuple[int, ...]]

_BATCH_NAMES = re.compile(r"^(n|b|bs|batch|batch_?size|batches|num_?images|unk__\d+_?batch)$|batch", re.I)
_SEQ_NAMES = re.compile(r"seq|len|token|time|step|frame|past|total|sample|word|text|audio", re.I)
_SIDE_NAMES = re.compile(r"^(h|w|height|width|img_?h|img_?w|image_?height|image_?width|x_?h|x_?w)$|height|width", re.I)


@dataclass(frozen=True)
class Defaulted:
    """A dynamic dim the user did not bind: the value it was given and why."""

    input: str
    axis: int
    dim: str | None  # the dim's symbolic name, if it has one
    value: int
    why: str  # "batch", "image side", "sequence", or "named '<dim>'"

    def describe(self) -> str:
        name = f"'{self.dim}'" if self.dim else f"axis {self.axis}"
        return f"{self.input}[{self.axis}] {name} = {self.value} ({self.why})"


@dataclass
class ShapePlan:
    """The shape sets decisions are taken at, and which dims were defaulted."""

    sets: list[ShapeSet]
    defaulted: list[Defaulted] = field(default_factory=list)
    given: list[str] = field(default_factory=list)  # the inputs the user bound (--input-shape)
    fallback: str = ""  # why the realistic defaults were replaced by a size the model runs at

    @property
    def first(self) -> ShapeSet:
        return self.sets[0] if self.sets else {}

    def labels(self) -> list[str]:
        return [label(s) for s in self.sets]

    def describe(self) -> str:
        """``x=1x3x48x224 (defaulted: x[3] 'W' = 224 (image side))``."""
        text = " and ".join(self.labels()) or "no inputs"
        if self.defaulted:
            text += " (defaulted: " + "; ".join(d.describe() for d in self.defaulted) + ")"
        if self.fallback:
            text += f" ({self.fallback})"
        return text

    def hint(self) -> str:
        """The ``--input-shape`` line that binds the defaulted dims (edit it to the shapes you run)."""
        if not self.defaulted or not self.sets:
            return ""
        names = dict.fromkeys(d.input for d in self.defaulted)
        return " ".join(f"--input-shape {n}={'x'.join(map(str, self.first[n]))}" for n in names if n in self.first)

    def as_dict(self) -> dict:
        return {
            "sets": [{k: list(v) for k, v in s.items()} for s in self.sets],
            "defaulted": [vars(d) for d in self.defaulted],
            "given": self.given,
            "fallback": self.fallback,
        }


def label(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v)) or 'scalar'}" for k, v in shapes.items())


def parse_shape_sets(items: Sequence[str]) -> list[dict[str, list[int]]]:
    """``["x=1x3x48x320", "x=4x3x48x640", "n=2"]`` ->
    ``[{"x": [1,3,48,320], "n": [2]}, {"x": [4,3,48,640], "n": [2]}]``: the k-th mention of an
    input goes into set k; an input mentioned fewer times keeps its last shape."""
    per_name: dict[str, list[list[int]]] = {}
    for item in items:
        name, shape = _parse_one(item)
        per_name.setdefault(name, []).append(shape)
    if not per_name:
        return []
    n = max(len(v) for v in per_name.values())
    return [{k: v[min(i, len(v) - 1)] for k, v in per_name.items()} for i in range(n)]


def _parse_one(item: str) -> tuple[str, list[int]]:
    name, sep, dims = item.rpartition("=")
    if not sep or not name:
        raise UsageError(f"--input-shape '{item}': expected NAME=D1xD2x... e.g. input=1x3x224x224")
    try:
        shape = [int(d) for d in dims.replace(",", "x").split("x") if d != ""]
    except ValueError as e:
        raise UsageError(f"--input-shape '{item}': dimensions must be integers separated by 'x'") from e
    if any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape '{item}': dimensions must be positive")
    return name, shape


def as_sets(
    input_shapes: Mapping[str, Sequence[int]] | Sequence[Mapping[str, Sequence[int]]] | None,
) -> list[dict[str, list[int]]]:
    """``Options.input_shapes`` as a list of shape sets (one mapping is one set)."""
    if not input_shapes:
        return []
    if isinstance(input_shapes, Mapping):
        return [{k: list(v) for k, v in input_shapes.items()}]
    return [{k: list(v) for k, v in s.items()} for s in input_shapes]


def default_dim(spec: InputSpec, axis: int, dim: str | None) -> tuple[int, str]:
    """A realistic value for one unbound dynamic dim, and why."""
    if dim:
        if _BATCH_NAMES.search(dim) and not _SEQ_NAMES.search(dim):
            return BATCH, f"named '{dim}'"
        if _SEQ_NAMES.search(dim):
            return SEQUENCE, f"named '{dim}'"
        if _SIDE_NAMES.search(dim):
            return IMAGE_SIDE, f"named '{dim}'"
    rank = len(spec.shape)
    if axis == 0 and rank >= 2:
        return BATCH, "batch"
    if rank == 4 and axis >= 2 and spec.dtype.kind == "f":
        return IMAGE_SIDE, "image side"
    return SEQUENCE, "sequence"


def bind(
    specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]], default=None
) -> tuple[ShapeSet, list[Defaulted]]:
    """Concrete shapes for every input: ``given`` first (checked against the model's fixed dims),
    then ``default(spec, axis, dim name) -> (value, why)`` for the rest (realistic defaults unless
    told); dims sharing a symbolic name share a value."""
    default = default or default_dim
    named: dict[str, int] = {}
    for s in specs:
        if s.name in given:
            ov = list(given[s.name])
            if len(ov) != len(s.shape):
                raise UsageError(f"--input-shape {s.name}: rank {len(ov)} but the model input has rank {len(s.shape)}")
            for d, v in zip(s.shape, ov):
                if isinstance(d, int) and d != v:
                    raise UsageError(f"--input-shape {s.name}: dim {d} of the model is fixed, got {v}")
                if isinstance(d, str):
                    named.setdefault(d, v)
    shapes: ShapeSet = {}
    defaulted: list[Defaulted] = []
    for s in specs:
        if s.name in given:
            shapes[s.name] = tuple(int(v) for v in given[s.name])
            continue
        dims = []
        for i, d in enumerate(s.shape):
            if isinstance(d, int):
                dims.append(d)
            elif isinstance(d, str) and d in named:
                dims.append(named[d])
            else:
                v, why = default(s, i, d if isinstance(d, str) else None)
                if isinstance(d, str):
                    named[d] = v
                defaulted.append(Defaulted(s.name, i, d if isinstance(d, str) else None, v, why))
                dims.append(v)
        shapes[s.name] = tuple(dims)
    return shapes, defaulted


def image_alternatives(plan: ShapePlan) -> list[tuple[ShapeSet, list[Defaulted]]]:
    """The first shape set with its defaulted image sides set to each of IMAGE_FALLBACKS in turn."""
    sides = [d for d in plan.defaulted if d.value == IMAGE_SIDE and d.axis >= 2]
    out = []
    for h, w in IMAGE_FALLBACKS:
        shapes = {k: list(v) for k, v in plan.first.items()}
        changed = []
        for d in sides:
            v = h if d.axis == len(shapes[d.input]) - 2 else w
            shapes[d.input][d.axis] = v
            changed.append(dataclasses.replace(d, value=v, why="image size the model runs at"))
        if changed:
            rest = [d for d in plan.defaulted if d not in sides]
            out.append(({k: tuple(v) for k, v in shapes.items()}, rest + changed))
    return out


def bind_sizes(specs: Sequence[InputSpec], given: Mapping[str, Sequence[int]], batch: int, other: int) -> ShapeSet:
    """Concrete shapes with every unbound dynamic dim at ``batch`` (the first axis) or ``other``: the
    small sizes tried in turn where a model does not run at its realistic defaults."""
    return bind(specs, given, lambda s, i, d: (batch if i == 0 else other, "size tried"))[0]


def plan(specs: Sequence[InputSpec], input_shapes) -> ShapePlan:
    """The shape sets for a model's inputs: each user set completed with defaults, or one set of defaults."""
    sets = as_sets(input_shapes)
    names = {s.name for s in specs}
    unknown = sorted({k for s in sets for k in s} - names)
    if unknown:
        raise UsageError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs are "
            + ", ".join(s.name for s in specs)
        )
    if not sets:
        first, defaulted = bind(specs, {})
        return ShapePlan([first], defaulted)
    bound, defaulted = [], []
    for i, given in enumerate(sets):
        shapes, d = bind(specs, given)
        bound.append(shapes)
        if i == 0:
            defaulted = d
    return ShapePlan(bound, defaulted, given=sorted({k for s in sets for k in s}))


__all__ = [
    "BATCH",
    "IMAGE_SIDE",
    "SEQUENCE",
    "Defaulted",
    "ShapePlan",
    "ShapeSet",
    "as_sets",
    "bind",
    "default_dim",
    "label",
    "parse_shape_sets",
    "plan",
]
