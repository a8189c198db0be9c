"""Constant folding of one node in numpy, for the ops shape computations are made of.

onnx's ReferenceEvaluator folds any op, but its import costs ~60 ms and building one costs
~1.4 ms a node (mobilenetv2's dynamo export folds 52 Expands: 130 ms). These forms are the ONNX
semantics written in numpy, exactly: multidirectional broadcasting is numpy's; Gather's negative
indices count from the end as ``np.take``'s do; Reshape's 0 copies the input's dim unless
``allowzero``; Unsqueeze's negative axes count in the output's rank as ``np.expand_dims``'s do.

Refuses (returns None, and the caller uses the reference evaluator): an op not in ``FORMS``;
element-wise inputs of different element types (the model is invalid; the reference says how);
axes in a form this opset does not have; a Reshape 0 past the input's rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

Attrs = Mapping[str, object]


class _CannotFold(Exception):
    """A node this module does not fold: the reference evaluator says what it computes."""


def _need(ok: bool) -> None:
    if not ok:
        raise _CannotFold


def _binary(f: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    def form(ins: Sequence[np.ndarray], attrs: Attrs, opset: int) -> np.ndarray:
        _need(len(ins) == 2 and ins[0].dtype == ins[1].dtype)
        return np.asarray(f(ins[0], ins[1]), dtype=ins[0].dtype)

    return form


def _axes(ins: Sequence[np.ndarray], attrs: Attrs, opset: int) -> tuple[int, ...] | None:
    """Unsqueeze/Squeeze axes (None: not given): an attribute before opset 13, the second input from it."""
    if opset < 13:
        _need(len(ins) == 1)
        return None if attrs.get("axes") is None else tuple(int(a) for a in attrs["axes"])
    _need("axes" not in attrs)
    return tuple(int(a) for a in ins[1].reshape(-1)) if len(ins) > 1 else None


def _unsqueeze(ins, attrs, opset):
    axes = _axes(ins, attrs, opset)
    _need(bool(axes))
    return np.expand_dims(ins[0], axes)


def _squeeze(ins, attrs, opset):
    axes = _axes(ins, attrs, opset)
    return np.squeeze(ins[0]) if axes is None else np.squeeze(ins[0], axis=axes)


def _reshape(ins, attrs, opset):
    _need(len(ins) == 2)
    x, shape = ins[0], [int(d) for d in ins[1].reshape(-1)]
    if not int(attrs.get("allowzero", 0)):
        _need(all(d != 0 for d in shape[x.ndim :]))  # a 0 copies a dim: one the input has
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _expand(ins, attrs, opset):
    _need(len(ins) == 2)
    return np.broadcast_to(ins[0], np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1].reshape(-1))))


def _concat(ins, attrs, opset):
    _need(bool(ins) and all(a.dtype == ins[0].dtype for a in ins))
    return np.concatenate(ins, axis=int(attrs["axis"]))


def _gather(ins, attrs, opset):
    _need(len(ins) == 2 and ins[1].dtype in (np.int32, np.int64))
    return np.take(ins[0], ins[1], axis=int(attrs.get("axis", 0)))


FORMS: dict[str, Callable[[Sequence[np.ndarray], Attrs, int], np.ndarray]] = {
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Reshape": _reshape,
    "Expand": _expand,
    "Concat": _concat,
    "Gather": _gather,
}


def fold(op: str, ins: Sequence[np.ndarray], attrs: Attrs, opset: int) -> list[np.ndarray] | None:
    """The node's one output computed in numpy, or None when the reference evaluator must do it."""
    form = FORMS.get(op)
    if form is None:
        return None
    try:
        out = form([np.asarray(a) for a in ins], attrs, opset)
    except _CannotFold:
        return None
    return [np.array(out, order="C")]  # (a copy of its own; 0-d stays 0-d)
