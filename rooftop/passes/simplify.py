"""simplify: constant folding and shape inference with onnxsim, size-capped.

onnxsim evaluates every subgraph whose inputs are all constant and replaces it
by its value; with ``tensor_size_threshold`` set to the context's fold limit
(``--fold-limit``, default 1 MiB) a folded tensor larger than that is not
materialized, so a ``ConstantOfShape``/``Tile``/``Expand`` of a large shape
stays a small op instead of bloating the file. Many tensors under that limit can still add up
(a model that builds every weight at run time): folding may add at most the run's fold budget in
all (``ctx.fold_budget``: the larger of ``--fold-limit`` and 10% of the model's weights, less what
earlier passes added); over it, onnxsim runs again with the per-tensor threshold at which the
smallest new tensors fit, and the rest stay computed at run time. onnxsim's BatchNorm fusion is
switched off: ``fold-conv-bn`` does that with more patterns and reports it; so are its
LayerNorm, GELU, attention, rotary and GroupQueryAttention fusions (Rooftop's passes do those,
verified and reported; ``OURS`` below says why each). So is onnxsim's batched MatMul+Add →
Reshape/Gemm/Reshape rewrite: with a dynamic batch or sequence its Reshape targets are computed
by new Shape/Slice/Concat chains at run time, which is the opposite of what Rooftop is for.

Low-precision weights widened at run time (int8/fp16 → Cast/DequantizeLinear) are never folded
into float32: that would store and read more bytes, the opposite of their point.

Skipped without importing onnxsim (seconds: it pulls in torch where torch is installed) when the
model gives it nothing to do (``has_work``): no node of constants only, no op it rewrites alone, no
chained pair it merges. It would still have merged duplicate scalar initializers there (36 zero
points in an int8 ResNet-18): bytes, not time.

Weights over the fold limit (and weights left on disk by a lazy load) go to onnxsim as typed graph
inputs and come back as the tensors they were: what they feed that is small enough to fold is not
worth serializing every weight to onnxsim and back (a 6 GB decoder would need it in memory twice
over), and what is large would not fold anyway.

Refuses: models whose small weights alone do not fit a 2 GB protobuf. If onnxsim raises (an op
it cannot evaluate, a custom domain), the pass manager rolls back and the model is unchanged.
"""

from __future__ import annotations

import onnx
from onnx import ModelProto

from rooftop._compat import NativeCrash, isolated, onnxsim_simplify, quiet_fds
from rooftop.errors import first_line
from rooftop.limits import SMALL_CONSTANT_BYTES
from rooftop.model_io import external_dir, is_large, tensor_nbytes, without_initializers
from rooftop.passes.base import (
    ModelPass,
    PassContext,
    PassResult,
    constant_names,
    graph_signature,
    growth_budget,
    toposort,
    toposorted,
    weight_bytes,
)


class Simplify(ModelPass):
    name = "simplify"
    summary = "onnxsim constant folding and shape inference (folded tensors capped by --fold-limit)"

    def idle(self, model: ModelProto, ctx: PassContext) -> PassResult | None:
        if not has_work(model):
            return PassResult(
                ["nothing for onnxsim: no constant subgraph, shape read or pair it simplifies (not imported)"]
            )
        return None

    def run_model(self, model: ModelProto, ctx: PassContext) -> tuple[ModelProto, PassResult]:
        before = graph_signature(model)
        work, kept, read = _hide_weights(model, int(ctx.fold_limit))
        if is_large(work):
            return model, PassResult(
                ["skipped: weights under the fold limit add up to over 1.8 GB (onnxsim works on an in-memory protobuf)"]
            )
        work, generators = _hide_large_generators(work, int(ctx.fold_limit))
        if not toposorted(work):  # onnxsim refuses an If whose subgraph reads a value produced after it
            work = _copy(work) if work is model else work
            toposort(work)
        budget = ctx.fold_budget if ctx.fold_budget is not None else growth_budget(weight_bytes(model), ctx.fold_limit)
        out, capped, grown, fallback = _within_budget(work, int(ctx.fold_limit), budget)
        _restore_generators(out, generators, model)
        _restore_weights(out, kept)
        _back_on_disk(out, read)
        resorted = toposort(out)  # onnxsim's output is now and then out of order; the checker refuses that
        del out.graph.value_info[:]
        if graph_signature(out) == before:
            return model, PassResult()
        n0, n1 = len(model.graph.node), len(out.graph.node)
        i0, i1 = len(model.graph.initializer), len(out.graph.initializer)
        res = PassResult([f"nodes {n0} -> {n1}, initializers {i0} -> {i1}"])
        notes = res.notes
        # onnxsim says what changed, not how: its rewrites are the nodes it removed, or one
        # rewrite of the graph when it changed it without removing any
        if n1 < n0:
            res.count("node-removed", n0 - n1)
        else:
            res.count("graph-rewritten-in-place")
        # keep the original model-level metadata
        out.producer_name, out.producer_version = model.producer_name, model.producer_version
        if model.ir_version:
            out.ir_version = model.ir_version
        if capped is not None:
            notes.append(
                f"folding would have added {grown / 1e6:.1f} MB of "
                f"weights (budget {budget / 1e6:.1f} MB: the larger of "
                "--fold-limit and 10% of the model's weights, less what earlier passes "
                f"added); tensors over {capped:,} bytes stay computed at run time"
            )
        if fallback:
            notes.append(f"onnxsim's optimizer failed ({fallback[:120]}): constant folding and shape inference only")
        if resorted:
            notes.append("put onnxsim's output back in topological order")
        narrow = sum(t.data_type not in WIDE for t in kept)
        if narrow:
            notes.append(
                f"kept {narrow} low-precision weights as stored (folding their Cast/DequantizeLinear would widen them)"
            )
        return out, res


# onnxsim's own fusions, all off: norm-fusion, gelu-fusion, attention-fusion and rotary-fusion do LayerNorm,
# RMSNorm, GELU, attention and rotary embeddings, verified at two sizes of each dynamic axis and reported.
# onnxsim's fuse_rope wrote a RotaryEmbedding whose caches kept the batch of 1 (LLaMA's dynamo export at
# opset 23: onnxruntime refused it at batch 2); its fuse_gqa writes com.microsoft GroupQueryAttention, which
# measured slower than the standard Attention on the CPU provider (benchmarks/bench_gqa.py).
OURS = [
    "fuse_gelu",
    "fuse_layer_norm",
    "fuse_rms_norm",
    "fuse_lp_normalization",
    "fuse_attention",
    "fuse_qkv",
    "fuse_rope",
    "fuse_gqa",
]


def _onnxsim(model: ModelProto, threshold: int, optimize: bool = True) -> ModelProto:
    """onnxsim on ``model``, in a forked child (``_compat.isolated``): a native crash or a hang in
    its C++ ends the child, and the pass is rolled back with the reason, never the run."""
    simplify = onnxsim_simplify()  # loaded here: the child inherits it
    skipped = ["fuse_matmul_add_bias_into_gemm_batched", *OURS]

    def run() -> bytes:
        with quiet_fds():
            out, ok = simplify(
                model,
                check_n=0,
                perform_optimization=optimize,
                skip_fuse_bn=True,
                # the batched MatMul+Add -> Reshape/Gemm/Reshape rewrite builds Reshape targets from
                # Shape/Slice/Concat of the input: under dynamic axes it *adds* run-time shape ops
                skipped_optimizers=skipped,
                tensor_size_threshold=f"{max(threshold, 1)}B",
                skip_shape_inference=False,
            )
        if not ok:  # pragma: no cover - check_n=0 never fails the check
            raise RuntimeError("onnxsim reported failure")
        return out.SerializeToString()

    try:
        data = isolated(run)
    except NativeCrash as e:
        raise NativeCrash(f"onnxsim {e}: the model goes on without simplify") from None
    out = ModelProto()
    out.ParseFromString(data)
    return out


def _copy(model: ModelProto) -> ModelProto:
    m = ModelProto()
    m.CopyFrom(model)
    return m


def _within_budget(work: ModelProto, limit: int, budget: int) -> tuple[ModelProto, int | None, int, str]:
    """onnxsim at the per-tensor limit; while the weights it adds exceed ``budget`` (many tensors
    under the limit), again at the threshold at which the smallest new tensors fit. A lower
    threshold can make intermediate constants new tensors of their own, so this is checked again,
    at most four times, down to shape-sized tensors. Returns (model, the threshold used when
    capped, bytes the first attempt would have added, why onnxsim's optimizer was left out or '').
    onnxsim's optimizer fails on some models its folding handles (nested If subgraphs: "Nodes in a
    graph must be topologically sorted" on a sorted graph); then folding alone is done."""
    base = weight_bytes(work)
    fallback = ""
    try:
        out = _onnxsim(work, limit)
    except RuntimeError as e:
        fallback = first_line(e)
        out = _onnxsim(work, limit, optimize=False)
    first = weight_bytes(out) - base
    threshold, capped = limit, None
    for _ in range(4):
        if weight_bytes(out) - base <= budget or threshold <= MIN_THRESHOLD:
            break
        threshold = max(min(_threshold_within(work, out, budget), threshold // 2), MIN_THRESHOLD)
        capped = threshold
        out = _onnxsim(work, threshold, optimize=not fallback)
    return out, capped, first, fallback


MIN_THRESHOLD = SMALL_CONSTANT_BYTES  # shape vectors and scalars always fold


def _threshold_within(model: ModelProto, folded: ModelProto, budget: int) -> int:
    """The largest per-tensor threshold at which the new tensors of ``folded`` fit ``budget``:
    the smallest are kept first, and tensors of a size that does not fit in full are all left."""
    old = {t.name for t in model.graph.initializer}
    sizes = sorted(tensor_nbytes(t) for t in folded.graph.initializer if t.name not in old)
    total, fits = 0, 0
    for n in sizes:
        if total + n > budget:
            break
        total += n
        fits += 1
    if fits == len(sizes):
        return sizes[-1] if sizes else 0
    cut = sizes[fits]  # the first size that does not fit: nothing of this size may fold
    smaller = [n for n in sizes[:fits] if n < cut]
    return smaller[-1] if smaller else 0


GENERATORS = ("ConstantOfShape", "Expand", "Tile")


def _generated_bytes(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> tuple[int, list[int]] | None:
    """(bytes, shape) of what a ConstantOfShape/Expand/Tile of constants makes, or None."""
    from onnx import numpy_helper

    try:
        vals = [numpy_helper.to_array(consts[i]) for i in node.input]
    except KeyError:
        return None
    if node.op_type == "ConstantOfShape":
        shape = [int(d) for d in vals[0].reshape(-1)]
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        item = onnx.helper.tensor_dtype_to_np_dtype(value.data_type).itemsize if value is not None else 4
    elif node.op_type == "Expand":
        import numpy as np

        shape = list(np.broadcast_shapes(vals[0].shape, tuple(int(d) for d in vals[1].reshape(-1))))
        item = vals[0].dtype.itemsize
    else:  # Tile
        shape = [int(a) * int(r) for a, r in zip(vals[0].shape, vals[1].reshape(-1))]
        item = vals[0].dtype.itemsize
    n = 1
    for d in shape:
        n *= d
    return n * item, shape


def _hide_large_generators(model: ModelProto, limit: int) -> tuple[ModelProto, list[onnx.NodeProto]]:
    """ConstantOfShape/Expand/Tile of constants whose output is over the per-tensor limit: onnxsim
    folds what follows them (a Reshape of a generated 4 MB weight) whatever its threshold, so they go
    to onnxsim as typed graph inputs and come back as the nodes they were afterwards."""
    small = {t.name: t for t in model.graph.initializer if tensor_nbytes(t) <= SMALL_CONSTANT_BYTES}
    hidden = []
    for n in model.graph.node:
        if n.op_type in GENERATORS and n.input and all(i in small for i in n.input):
            got = _generated_bytes(n, small)
            if got is not None and got[0] > limit:
                hidden.append((n, got[1]))
    if not hidden:
        return model, []
    work = ModelProto()
    work.CopyFrom(model)
    names = {id(n) for n, _ in hidden}
    keep = [n for n in model.graph.node if id(n) not in names]
    del work.graph.node[:]
    work.graph.node.extend(keep)
    for n, shape in hidden:
        elem = _generated_type(n, small)
        work.graph.input.append(onnx.helper.make_tensor_value_info(n.output[0], elem, shape))
    return work, [n for n, _ in hidden]


def _generated_type(node: onnx.NodeProto, consts: dict[str, onnx.TensorProto]) -> int:
    if node.op_type == "ConstantOfShape":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return value.data_type if value is not None else onnx.TensorProto.FLOAT
    return consts[node.input[0]].data_type


def _restore_generators(out: ModelProto, nodes: list[onnx.NodeProto], original: ModelProto) -> None:
    if not nodes:
        return
    outs = {n.output[0] for n in nodes}
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    inputs = [i for i in out.graph.input if i.name not in outs]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    back = [n for n in nodes if n.output[0] in used]
    have = {t.name for t in out.graph.initializer}
    originals = {t.name: t for t in original.graph.initializer}
    for n in back:
        for i in n.input:
            if i not in have:
                out.graph.initializer.append(originals[i])
                have.add(i)
    rest = list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(back + rest)


# ops onnxsim's optimizer rewrites alone or in pairs (eliminate_nop_*, fuse_consecutive_*, fuse_pad_*,
# eliminate_shape_*): a model with none of them, no Shape read and no node of constants only gives
# it nothing to do, and importing it costs seconds (it pulls in torch where torch is installed)
SIMPLIFIABLE = {
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Dropout",
    "Pad",
    "Cast",
    "Expand",
    "Split",
    "Squeeze",
    "Unsqueeze",
    "Slice",
    "Concat",
    "Tile",
    "Range",
    "If",
    "Loop",
    "Einsum",
    "Where",
}
PAIRS = {"Transpose", "Reshape", "LogSoftmax", "Softmax", "ReduceMean", "ReduceSum", "Mul", "Flatten"}


def _folds(node: onnx.NodeProto, consts: set[str]) -> bool:
    """Whether onnxsim's constant folding computes ``node``: its inputs are all constants."""
    return bool(node.input) and all(not i or i in consts for i in node.input)


def has_work(model: ModelProto) -> bool:
    """Whether onnxsim could change the graph: a node whose inputs are all constants, an op it
    rewrites alone, or two chained ops of a kind it merges."""
    consts = constant_names(model)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type in SIMPLIFIABLE or _folds(n, consts):
            return True
        if n.op_type in PAIRS and n.input and producer.get(n.input[0]) == n.op_type:
            return True
        if n.op_type in ("Gemm", "MatMul", "Conv") and any(producer.get(i) in ("Transpose", "Pad") for i in n.input):
            return True
    return False


NARROW_MIN_BYTES = SMALL_CONSTANT_BYTES  # smaller low-precision constants may fold: they cannot bloat the file


def _hidden_weights(model: ModelProto, limit: int) -> list[onnx.TensorProto]:
    """The initializers onnxsim gets as typed graph inputs instead of tensors:

    - weights stored narrower than float32 (int8, uint8, int16, fp16, bf16 ...) and widened at run
      time by a Cast or DequantizeLinear: onnxsim would fold them into float32 initializers, four
      times the bytes to store and to read (an int8 MiniLM grew from 22.9 MB to 90.3 MB);
    - weights over the per-tensor fold limit: whatever they feed that is small enough to fold is
      not worth serializing every weight to onnxsim and back; what is large would not fold anyway;
    - weights left on disk that no node folds (every input of a node reading them constant): a
      MatMul's weight. Those a node folds are read in for onnxsim (``_hide_weights``): a QDQ
      encoder of 13 MB, spilled to disk for the run, otherwise kept 20 Transposes of int8 weights,
      and reading every weight under the limit took ViT (88 MB) from 218 MB to 272 MB."""
    widening = {
        i for n in model.graph.node if n.op_type in ("Cast", "CastLike", "DequantizeLinear") for i in n.input[:1]
    }
    outputs = {o.name for o in model.graph.output}
    folded = _folded_reads(model)

    def hide(t: onnx.TensorProto) -> bool:
        if t.name in outputs:
            return False
        size = tensor_nbytes(t)
        narrow = t.name in widening and t.data_type not in WIDE and size >= NARROW_MIN_BYTES
        on_disk = t.data_location == onnx.TensorProto.EXTERNAL and t.name not in folded
        return narrow or on_disk or size > max(limit, NARROW_MIN_BYTES)

    return [t for t in model.graph.initializer if hide(t)]


def _folded_reads(model: ModelProto) -> set[str]:
    """Tensors read by a node of the main graph that onnxsim folds."""
    consts = constant_names(model)
    return {i for n in model.graph.node if _folds(n, consts) for i in n.input}


OnDisk = dict  # name -> (the weight's reference to its bytes on disk, the bytes onnxsim was given)


def _hide_weights(model: ModelProto, limit: int) -> tuple[ModelProto, list[onnx.TensorProto], OnDisk]:
    """``model`` with ``_hidden_weights`` as graph inputs (the rest copied; the hidden ones are
    not), and the weights left on disk that onnxsim may fold read in."""
    kept = _hidden_weights(model, limit)
    names = {t.name for t in kept}
    if not kept and not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return model, [], {}
    work = without_initializers(model)
    g, src = work.graph, model.graph
    g.initializer.extend(t for t in src.initializer if t.name not in names)
    g.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in kept)
    read: OnDisk = {}
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            ref = onnx.TensorProto()
            ref.CopyFrom(t)
            onnx.external_data_helper.load_external_data_for_tensor(t, external_dir() or "")
            t.data_location = onnx.TensorProto.DEFAULT
            del t.external_data[:]
            read[t.name] = (ref, t.raw_data)
    return work, kept, read


def _back_on_disk(out: ModelProto, read: OnDisk) -> None:
    """Weights onnxsim returned as it got them refer to their bytes on disk again."""
    for t in out.graph.initializer:
        ref, data = read.get(t.name, (None, None))
        if ref is not None and t.raw_data == data:
            t.CopyFrom(ref)


def _restore_weights(out: ModelProto, kept: list[onnx.TensorProto]) -> None:
    if not kept:
        return
    names = {t.name for t in kept}
    still = {i.name for i in out.graph.input if i.name in names}
    inputs = [i for i in out.graph.input if i.name not in names]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    out.graph.initializer.extend(t for t in kept if t.name in still)


WIDE = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.INT64,
    onnx.TensorProto.STRING,
    onnx.TensorProto.BOOL,
}
