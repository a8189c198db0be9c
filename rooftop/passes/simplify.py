"""simplify: constant folding and shape inference with onnxsim, size-capped.

onnxsim evaluates every subgraph whose inputs are all constant and replaces it
by its value; with ``tensor_size_threshold`` set to the context's fold limit
(``--fold-limit``, default 1 MiB) a folded tensor larger than that is not
materialized, so a ``ConstantOfShape``/``Tile``/``Expand`` of a large shape
stays a small op instead of bloating the file. onnxsim's BatchNorm fusion is
switched off: ``fold-conv-bn`` does that with more patterns and reports it. So
is onnxsim's batched MatMul+Add → Reshape/Gemm/Reshape rewrite: with a dynamic
batch or sequence its Reshape targets are computed by new Shape/Slice/Concat
chains at run time, which is the opposite of what Rooftop is for.

Refuses: models whose weights do not fit a 2 GB protobuf (onnxsim would have to
round-trip them through external data; the pass reports that and leaves the
model alone). If onnxsim raises (an op it cannot evaluate, a custom domain), the
pass manager rolls back and the model is unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from onnx import ModelProto

from rooftop.model_io import is_large
from rooftop.passes.base import ModelPass, PassContext, PassResult, graph_signature



@contextlib.contextmanager
def _quiet():
    """Silence onnxsim's own prints (Python and C++) so our progress display stays clean."""
    try:
        fds = [sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, io.UnsupportedOperation, ValueError):
        fds = []
    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (ValueError, OSError):
        pass
    try:
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull.fileno(), fd)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)


class Simplify(ModelPass):
    name = "simplify"
    summary = "onnxsim constant folding and shape inference (folded tensors capped by --fold-limit)"

    def run_model(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:
        if is_large(model):
            return model, PassResult(0, ["skipped: weights over 1.8 GB (onnxsim works on an in-memory protobuf)"])
        import onnxsim

        before = graph_signature(model)
        with _quiet():
            out, ok = onnxsim.simplify(
                model,
                check_n=0,
                skip_fuse_bn=True,
                # the batched MatMul+Add -> Reshape/Gemm/Reshape rewrite builds Reshape targets from
                # Shape/Slice/Concat of the input: under dynamic axes it *adds* run-time shape ops
                skipped_optimizers=["fuse_matmul_add_bias_into_gemm_batched"],
                tensor_size_threshold=f"{max(int(ctx.fold_limit), 1)}B",
                skip_shape_inference=False,
            )
        if not ok:  # pragma: no cover - check_n=0 never fails the check
            raise RuntimeError("onnxsim reported failure")
        del out.graph.value_info[:]
        if graph_signature(out) == before:
            return model, PassResult(0)
        n0, n1 = len(model.graph.node), len(out.graph.node)
        i0, i1 = len(model.graph.initializer), len(out.graph.initializer)
        rewrites = max(n0 - n1, 0) or 1
        notes = [f"nodes {n0} -> {n1}, initializers {i0} -> {i1}"]
        # keep the original model-level metadata
        out.producer_name, out.producer_version = model.producer_name, model.producer_version
        if model.ir_version:
            out.ir_version = model.ir_version
        return out, PassResult(rewrites, notes)
