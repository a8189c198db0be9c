"""onnxruntime as Rooftop uses it: sessions, the inputs a model declares, generated inputs, CPU facts.

Verification, timing, the cost model and the host profile all build their sessions here, so
every session is made the same way (CPU provider, quiet logger, the requested optimization
level and thread count) and every generated input follows the same rules.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import ModelProto

from rooftop._compat import quiet_onnxruntime
from rooftop.errors import InputError, UsageError
from rooftop.model_io import external_dir, materialized, ort_source

DimValue = int | str | None


@dataclass
class InputSpec:
    name: str
    dtype: np.dtype
    shape: list[DimValue]


def parse_shape_overrides(items: Sequence[str]) -> dict[str, list[int]]:
    """``["x=1x3x224x224", "ids=2x128"]`` -> ``{"x": [1, 3, 224, 224], ...}``."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        if not sep or not name:
            raise UsageError(f"--input-shape '{item}': expected NAME=D1xD2x... e.g. input=1x3x224x224")
        try:
            shape = [int(d) for d in dims.replace(",", "x").split("x") if d != ""]
        except ValueError as e:
            raise UsageError(f"--input-shape '{item}': dimensions must be integers separated by 'x'") from e
        if any(d <= 0 for d in shape):
            raise UsageError(f"--input-shape '{item}': dimensions must be positive")
        out[name] = shape
    return out


def graph_inputs(model: ModelProto) -> list[InputSpec]:
    """Real (non-initializer) inputs of the main graph with dtype and possibly symbolic shape."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise InputError(f"input '{vi.name}' is not a tensor; Rooftop cannot generate data for it (use --inputs)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape: list[DimValue] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                shape.append(d.dim_param)
            else:
                shape.append(None)  # no dim, or -1 as some exporters write a dynamic one
        specs.append(InputSpec(vi.name, np.dtype(dtype), shape))
    return specs


def is_dynamic(specs: Sequence[InputSpec]) -> bool:
    return any(not isinstance(d, int) for s in specs for d in s.shape)


def random_inputs(
    specs: Sequence[InputSpec],
    shapes: Mapping[str, tuple[int, ...]],
    seed: int = 0,
    highs: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded inputs: floats standard normal; integers small and non-negative (token ids, lengths),
    below ``highs[name]`` where the model indexes a table with them; int8/uint8 over their range."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for s in specs:
        shape = shapes[s.name]
        dt = s.dtype
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        elif dt.kind in "iu":
            hi = 256 if dt.itemsize == 1 and dt.kind == "u" else 4
            lo = -128 if dt.itemsize == 1 and dt.kind == "i" else 0
            hi = 128 if lo < 0 else hi
            if highs and s.name in highs:
                hi = max(lo + 1, min(hi, highs[s.name]))
            feeds[s.name] = rng.integers(lo, hi, shape).astype(dt)
        elif dt.kind in "OSU":  # string inputs (text models with their own tokenizer): short words
            words = np.array(["the", "model", "reads", "text", "ok"], dtype=object)
            feeds[s.name] = words[rng.integers(0, len(words), shape)]
        else:
            raise InputError(f"input '{s.name}' has dtype {dt}; Rooftop cannot generate data for it (use --inputs)")
    return feeds


def index_bounds(model: ModelProto) -> dict[str, int]:
    """For integer graph inputs used as Gather indices into a constant table (directly or through a
    Cast/Unsqueeze/Reshape): the number of rows, so generated ids stay in range."""
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    bounds: dict[str, int] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        frontier, seen = [vi.name], set()
        while frontier:
            name = frontier.pop()
            seen.add(name)
            for n in consumers.get(name, []):
                if n.op_type in ("Cast", "Unsqueeze", "Reshape", "Squeeze", "Flatten") and n.input[0] == name:
                    frontier += [o for o in n.output if o not in seen]
                elif n.op_type == "Gather" and len(n.input) > 1 and n.input[1] == name:
                    rows = _table_rows(n, inits, producers)
                    if rows:
                        bounds[vi.name] = min(bounds.get(vi.name, rows), rows)
    return bounds


def _table_rows(gather: onnx.NodeProto, inits, producers) -> int | None:
    axis = next((a.i for a in gather.attribute if a.name == "axis"), 0)
    table = inits.get(gather.input[0])
    if table is None:  # a weight behind a DequantizeLinear / Cast (quantized or narrow embeddings)
        p = producers.get(gather.input[0])
        table = inits.get(p.input[0]) if p is not None and p.op_type in ("DequantizeLinear", "Cast") else None
    if table is None or not len(table.dims):
        return None
    return int(table.dims[axis])


def make_session(
    model: ModelProto | None,
    *,
    optimization: str = "disable",
    threads: int = 0,
    profile_prefix: str | None = None,
    path: str | None = None,
    data: bytes | None = None,
    spinning: bool = True,
    prepack: bool = True,
    providers: Sequence[str] = ("CPUExecutionProvider",),
):
    """An onnxruntime CPU session for a ModelProto (large models go through a temp file).

    External data is read from ``model_io.external_dir()`` (onnxruntime memory-maps it).
    ``prepack=False``: weights are used as stored instead of copied into packed layouts: for
    sessions that check outputs rather than time them (half the memory on a large model)."""
    import onnxruntime as ort

    quiet_onnxruntime()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # fatal only: errors reach the user once, as our own one-line message
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if not spinning:
        # idle intra-op threads must not spin: with two sessions timed in turn, one's spinning
        # threads would steal cores from the other
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    providers = list(providers)
    if path is not None:
        return ort.InferenceSession(path, so, providers=providers)
    src = data if data is not None else ort_source(model)
    if src is not None:
        if external_dir() is not None:  # a model from memory reads its external data from here
            so.add_session_config_entry("session.model_external_initializers_file_folder_path", external_dir())
        return ort.InferenceSession(src, so, providers=providers)
    with materialized(model) as path:
        return ort.InferenceSession(path, so, providers=providers)


def run_model(model: ModelProto, feeds: Mapping[str, np.ndarray], session=None) -> dict[str, np.ndarray]:
    """The outputs of one run, as arrays of their own: onnxruntime returns views into its session's
    arena, and one kept reference output held the whole arena (~100 MB on bert-qdq) after the
    session was gone."""
    sess = session or make_session(model)
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, dict(feeds))
    return {n: np.array(o) if isinstance(o, np.ndarray) else o for n, o in zip(names, outs)}


@contextlib.contextmanager
def named_for_profiler(model: ModelProto) -> Iterator[None]:
    """Name the unnamed nodes (after their first output) for a session the profiler reports by
    node name, and unname them again when the session is built (a copy of the model would hold
    every inline weight twice)."""
    unnamed = [n for n in model.graph.node if not n.name]
    try:
        for n in unnamed:
            n.name = n.output[0] if n.output else n.op_type
        yield
    finally:
        for n in unnamed:
            n.ClearField("name")


def profile_runs(path: str) -> list[list[dict]]:
    """onnxruntime profiler node events (kernel times) of each run in a profile file."""
    import json

    with open(path) as f:
        events = json.load(f)
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    per_run: list[list[dict]] = [[] for _ in spans]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        for i, (t0, t1) in enumerate(spans):
            if t0 <= e["ts"] <= t1:
                per_run[i].append(e)
                break
    return per_run


def output_shapes(run: list[dict]) -> dict[str, list[tuple[str, list[int]]]]:
    """The (element type, shape) of each node's outputs in one profiled run (node name -> one per output)."""
    out: dict[str, list[tuple[str, list[int]]]] = {}
    for e in run:
        shapes = (e.get("args") or {}).get("output_type_shape") or []
        out[e["name"][: -len("_kernel_time")]] = [next(iter(d.items())) for d in shapes if d]
    return out


def physical_cores() -> int:
    """Physical cores (onnxruntime's own default), falling back to the logical count."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip() and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1
