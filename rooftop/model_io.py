"""Load and save ONNX models safely.

- ``load_model`` turns every way a file can be wrong into one ``InputError`` line
  naming the file: missing, a directory, empty, not protobuf, not a model,
  truncated, an invalid graph, an opset or IR version newer than the installed
  onnx supports, missing external data.
- ``save_model`` writes atomically (temporary file in the output's folder, then
  rename) and switches to external data when the weights would not fit in a
  2 GB protobuf, or when asked to.
- The input file is only ever opened for reading.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

from rooftop.errors import InputError, OutputError, first_line

# Protobuf refuses to serialize messages of 2 GiB or more; keep a margin for the graph.
PROTOBUF_LIMIT = 2**31 - 1
from rooftop.limits import (  # noqa: E402 - the module header above says what they are for
    EXTERNAL_DATA_THRESHOLD,
    LAZY_FROM_BYTES,
    LAZY_MIN_BYTES,
    SHAPE_ARITHMETIC_ELEMENTS,
)


def tensor_nbytes(t: TensorProto) -> int:
    """Bytes of a tensor's data, from its dims and dtype (reading ``raw_data`` would copy it)."""
    if t.data_location == TensorProto.EXTERNAL:
        for kv in t.external_data:
            if kv.key == "length":
                return int(kv.value)
    n = 1
    for d in t.dims:
        n *= d
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # noqa: BLE001 - strings and exotic dtypes: the serialized size
        return t.ByteSize()
    if t.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (n + 1) // 2
    return n * itemsize


def iter_graph_tensors(graph: onnx.GraphProto) -> Iterator[TensorProto]:
    """All tensors stored in a graph: initializers and Constant values, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_graph_tensors(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from iter_graph_tensors(g)


def weights_nbytes(model: ModelProto) -> int:
    """Bytes of all stored tensors (initializers and Constant nodes)."""
    return sum(tensor_nbytes(t) for t in iter_graph_tensors(model.graph))


def has_external_data(model: ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in iter_graph_tensors(model.graph))


def inline_nbytes(model: ModelProto) -> int:
    """Bytes of the tensors held in the ModelProto itself (external references left out)."""
    return sum(tensor_nbytes(t) for t in iter_graph_tensors(model.graph) if t.data_location != TensorProto.EXTERNAL)


# Where the external data of the model being worked on lives. A model loaded with ``lazy=True``
# keeps its large external tensors as references (relative ``location``, as the file has them):
# onnx and onnxruntime both refuse absolute locations, so the folder travels beside the model,
# set for the length of a run with ``external_base``.
_EXTERNAL_BASE: ContextVar[str | None] = ContextVar("rooftop_external_base", default=None)


@contextlib.contextmanager
def external_base(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """External data locations are relative to ``folder`` inside this block."""
    token = _EXTERNAL_BASE.set(str(folder) if folder is not None else None)
    try:
        yield
    finally:
        _EXTERNAL_BASE.reset(token)


def external_dir() -> str | None:
    """The folder external data is read from (None: not set; onnx then reads relative to the cwd)."""
    return _EXTERNAL_BASE.get()


def load_model(path: str | os.PathLike[str], *, check: bool = True) -> ModelProto:
    """Load an ONNX model with its external data, or raise ``InputError`` with one clear line.
    Models older than IR version 4 are raised to it (``upgrade_ir``)."""
    return load_model_noted(path, check=check)[0]


def load_model_noted(
    path: str | os.PathLike[str], *, check: bool = True, lazy: bool | None = False
) -> tuple[ModelProto, list[str]]:
    """``load_model``, and the notes of what loading changed (an IR upgrade). ``lazy``: external
    tensors of ``LAZY_MIN_BYTES`` or more stay on disk as references (read them with
    ``external_base(<the model's folder>)`` set); the files are checked all the same. ``None``:
    lazy when the external data is ``LAZY_FROM_BYTES`` or more."""
    p = Path(path)
    name = str(path)
    if not p.exists():
        raise InputError(f"{name}: no such file")
    if p.is_dir():
        raise InputError(f"{name}: is a directory, not an ONNX model file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from e
    if size == 0:
        raise InputError(f"{name}: empty file, not an ONNX model")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InputError(
            f"{name}: not a valid ONNX model (the protobuf does not parse; truncated or not an .onnx file)"
        ) from e
    del data
    if (
        not model.HasField("graph")
        or model.ir_version == 0
        or (len(model.graph.node) == 0 and len(model.graph.output) == 0)
    ):
        raise InputError(f"{name}: not an ONNX model (no ir_version or no graph)")
    _check_versions(model, name)
    notes = [n for n in (upgrade_ir(model),) if n]
    if has_external_data(model):
        if lazy is None:
            lazy = weights_nbytes(model) - inline_nbytes(model) >= LAZY_FROM_BYTES
        _load_external(model, p, name, lazy=lazy)
    if check:
        check_model(model, name, path_on_disk=p)
    return model, notes


def upgrade_ir(model: ModelProto) -> str | None:
    """IR version 3 and older: every initializer had to be listed as a graph input too (a
    default value the caller could override). Passes that fold weights cannot keep that
    invariant, and onnxruntime treats such weights as overridable and folds nothing. Raise
    the IR version to 4 and list initializers only as initializers: what the model computes
    for its real inputs is unchanged. Returns a note saying so, or None when nothing changed."""
    if model.ir_version >= 4:
        return None
    inits = {t.name for t in model.graph.initializer}
    listed = [i for i in model.graph.input if i.name in inits]
    keep = [i for i in model.graph.input if i.name not in inits]
    old = model.ir_version
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.ir_version = 4
    what = f"; {len(listed)} initializers are no longer listed as graph inputs" if listed else ""
    return f"IR version {old} raised to 4{what} (the model computes the same for its inputs)"


def default_opset(model: ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def convert_opset(model: ModelProto, target: int, name: str = "model") -> tuple[ModelProto, str | None]:
    """The model at default-domain opset ``target`` (onnx's version converter), and a note; the
    model itself when it is there already. Lowering an opset is refused."""
    current = default_opset(model)
    if current is None or current == target:
        return model, None
    if target < current:
        raise InputError(
            f"{name}: --opset {target} is lower than the model's opset {current}; Rooftop only raises opsets"
        )
    if target > onnx.defs.onnx_opset_version():
        raise InputError(
            f"{name}: --opset {target} is newer than the installed onnx supports ({onnx.defs.onnx_opset_version()})"
        )
    from onnx import version_converter

    try:
        converted = version_converter.convert_version(model, target)
    except Exception as e:
        raise InputError(
            f"{name}: onnx's version converter cannot take opset {current} to {target}: {first_line(e)}"
        ) from e
    return converted, f"opset {current} converted to {target} (onnx version converter)"


def _check_versions(model: ModelProto, name: str) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise InputError(
            f"{name}: IR version {model.ir_version} is newer than the installed onnx supports "
            f"({onnx.IR_VERSION}); upgrade onnx or export with an older IR version"
        )
    max_opset = onnx.defs.onnx_opset_version()
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > max_opset:
            raise InputError(
                f"{name}: opset {imp.version} is newer than the installed onnx supports "
                f"(up to {max_opset}); export with an older opset"
            )
    if not any(imp.domain in ("", "ai.onnx") for imp in model.opset_import) and any(
        n.domain in ("", "ai.onnx") for n in model.graph.node
    ):
        raise InputError(f"{name}: invalid model: it uses standard ops but imports no default-domain opset")


def _inside(loc: str, base: Path, name: str, tensor: str) -> None:
    """External data must be a file in the model's folder or below it, reached without a symlink:
    a model must not make the tool read an arbitrary file (onnx's loader refuses the same)."""
    if not loc:
        return
    where = Path(loc)
    if where.is_absolute() or ".." in where.parts:
        raise InputError(
            f"{name}: external data '{loc}' of tensor '{tensor}' points outside the model's folder; "
            "only files in the model's folder or below it are read"
        )
    probe = base
    for part in where.parts:
        probe = probe / part
        if probe.is_symlink():
            raise InputError(
                f"{name}: external data '{loc}' of tensor '{tensor}' is reached through a symlink; "
                "only regular files in the model's folder are read"
            )


def _load_external(model: ModelProto, p: Path, name: str, lazy: bool = False) -> None:
    base = p.resolve().parent
    for t in iter_graph_tensors(model.graph):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {kv.key: kv.value for kv in t.external_data}
        loc = info.get("location", "")
        _inside(loc, base, name, t.name)
        f = (base / loc).resolve()
        if not loc or not f.is_file():
            raise InputError(f"{name}: external data file '{loc}' of tensor '{t.name}' is missing (looked in {base})")
        need = int(info.get("offset", 0)) + int(info.get("length", 0))
        if f.stat().st_size < need:
            raise InputError(
                f"{name}: external data file '{loc}' is truncated "
                f"({f.stat().st_size} bytes, tensor '{t.name}' needs {need})"
            )
    try:
        if not lazy:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
            return
        for t in iter_graph_tensors(model.graph):
            if t.data_location == TensorProto.EXTERNAL and tensor_nbytes(t) < LAZY_MIN_BYTES:
                onnx.external_data_helper.load_external_data_for_tensor(t, str(base))
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
    except (OSError, ValueError) as e:
        raise InputError(f"{name}: cannot load external data: {e}") from e


def check_model(
    model: ModelProto, name: str = "model", path_on_disk: Path | None = None, data: bytes | None = None
) -> None:
    """Run onnx.checker (on ``data``, the model already serialized, if given; by path for models too
    large to serialize); raise InputError on failure."""
    try:
        if has_external_data(model):  # its files were checked at load: the graph without the weights
            onnx.checker.check_model(weightless(model))
        elif data is not None:
            onnx.checker.check_model(data)
        elif weights_nbytes(model) < EXTERNAL_DATA_THRESHOLD:
            onnx.checker.check_model(model)
        elif path_on_disk is not None and Path(path_on_disk).is_file():
            onnx.checker.check_model(str(path_on_disk))
        else:
            with materialized(model) as mpath:
                onnx.checker.check_model(mpath)
    except onnx.checker.ValidationError as e:
        first = first_line(e)
        raise InputError(f"{name}: invalid ONNX graph: {first}") from e


def check_output_path(out: str | os.PathLike[str], inp: str | os.PathLike[str] | None, *, force: bool = False) -> Path:
    """Fail early (before any work) if the output cannot be written."""
    o = Path(out)
    if o.is_dir():
        raise OutputError(f"{out}: output path is a directory")
    parent = o.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{out}: output folder {parent} is not writable")
    if inp is not None and Path(inp).exists() and o.exists():
        if os.path.samefile(o, inp) and not force:
            raise OutputError(f"{out}: output path is the input model; choose another -o or pass --force")
    return o


def save_model(model: ModelProto, path: str | os.PathLike[str], *, external_data: bool | None = None) -> list[Path]:
    """Write ``model`` atomically to ``path``; returns the files written.

    ``external_data=None`` chooses: weights over ~1.8 GB, or a model whose weights are external
    references (read lazily), go to ``<name>.data`` beside the model; the referenced bytes are
    streamed from ``external_dir()``.
    """
    out = Path(path)
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputError(f"{path}: output folder {parent} does not exist")
    if external_data is None:  # over the limit, or read from external data and still referring to it
        external_data = weights_nbytes(model) >= EXTERNAL_DATA_THRESHOLD or has_external_data(model)
    streamed = False
    if not external_data and has_external_data(model):  # weights on disk, asked for one file: stream them in
        if weights_nbytes(model) >= EXTERNAL_DATA_THRESHOLD:
            external_data = True
        else:
            streamed = True
    written: list[Path] = []
    try:
        if not external_data:
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    if streamed:
                        write_inline(model, f)
                    else:
                        f.write(model.SerializeToString())
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, out)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            written.append(out)
        else:
            data_name = out.name + ".data"
            tmpdir = tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent)
            try:
                write_with_external_data(model, os.path.join(tmpdir, out.name), data_name)
                os.replace(os.path.join(tmpdir, data_name), parent / data_name)
                os.replace(os.path.join(tmpdir, out.name), out)
                written += [out, parent / data_name]
            finally:
                for f in Path(tmpdir).glob("*"):
                    f.unlink()
                os.rmdir(tmpdir)
    except PermissionError as e:
        raise OutputError(f"{path}: cannot write: permission denied") from e
    except OSError as e:
        raise OutputError(f"{path}: cannot write: {e.strerror or e}") from e
    return written


def without_initializers(model: ModelProto) -> ModelProto:
    """A copy of ``model`` with every field but the main graph's initializers (a cheap copy:
    nodes and metadata only; weights are what a caller adds back, or references to them)."""
    skeleton = ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(skeleton, f, getattr(model, f))
    skeleton.opset_import.extend(model.opset_import)
    skeleton.metadata_props.extend(model.metadata_props)
    skeleton.functions.extend(model.functions)
    g, src = skeleton.graph, model.graph
    g.name, g.doc_string = src.name, src.doc_string
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    return skeleton


def write_with_external_data(model: ModelProto, path: str | os.PathLike[str], data_name: str) -> None:
    """Write ``model`` to ``path`` with initializers over 1 KiB in ``data_name`` beside it.

    Unlike ``onnx.save_model(save_as_external_data=True)`` this neither rewrites
    ``model`` nor copies it whole: a skeleton holds the graph and external
    references, and each large tensor's bytes are streamed to the data file.
    """
    out = Path(path)
    graph = model.graph
    skeleton = without_initializers(model)
    g = skeleton.graph
    with open(out.parent / data_name, "wb") as f:
        for t in graph.initializer:
            nt = g.initializer.add()
            external = t.data_location == TensorProto.EXTERNAL
            if not external and (tensor_nbytes(t) <= 1024 or not t.HasField("raw_data")):
                nt.CopyFrom(t)
                continue
            nt.name, nt.data_type, nt.doc_string = t.name, t.data_type, t.doc_string
            nt.dims.extend(t.dims)
            _append(f, nt, data_name, lambda dst: _copy_external(t, dst) if external else dst.write(t.raw_data))
    with open(out, "wb") as f:
        f.write(skeleton.SerializeToString())


def _append(f, t: TensorProto, location: str, write) -> None:
    """Write a tensor's bytes (``write(f)`` returns their length) at the next page-aligned offset of
    the data file ``f`` (onnxruntime memory-maps page-aligned tensors) and make ``t`` refer to them."""
    pad = (-f.tell()) % 4096
    if pad:
        f.write(b"\0" * pad)
    offset = f.tell()
    length = write(f)
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        t.external_data.add(key=k, value=v)


# a model read from a file stored inline with this much weight works from a spilled copy: it holds
# each weight once, on disk (`optimize --no-time`, resnet18, 45 MB: 1.48 s and 285 MB → 1.13 s and
# 150 MB; ddddocr common, 52 MB: 2.3 s and 397 MB → 1.3-1.6 s and 204 MB; benchmarks/RESULTS.md)
SPILL_FROM_BYTES = LAZY_FROM_BYTES
SPILL_NAME = "weights.bin"


def spill(model: ModelProto, folder: str | os.PathLike[str]) -> ModelProto:
    """``model`` with the main graph's weights of ``LAZY_MIN_BYTES`` or more moved out into
    ``<folder>/weights.bin`` (page-aligned) and external references in their place: the run then
    holds each weight once, on disk, as it does for a model stored with external data (every
    pass's output and every verification session would otherwise copy them). A new, light
    ModelProto: protobuf keeps a cleared field's bytes until the message itself is dropped."""
    with open(Path(folder) / SPILL_NAME, "wb") as f:
        for t in model.graph.initializer:
            if (
                t.data_location == TensorProto.EXTERNAL
                or not t.HasField("raw_data")
                or len(t.raw_data) < LAZY_MIN_BYTES
            ):
                continue
            _append(f, t, SPILL_NAME, lambda dst: dst.write(t.raw_data))
            t.ClearField("raw_data")
    light = ModelProto()
    light.CopyFrom(model)
    return light


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, length: int) -> bytes:
    """The key and length of a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(length)


def write_inline(model: ModelProto, f) -> None:
    """Serialize ``model`` as one protobuf with its external tensors' bytes read in, to the open
    file ``f``, a chunk at a time: the bytes are never all in memory (``SerializeToString`` of an
    inlined copy would hold them twice). A message is a sequence of fields in any order, so the
    model goes out as: the model without its graph, then the graph field (7), made of the graph
    without its initializers and then each initializer (GraphProto field 5) as its header fields
    followed by its ``raw_data`` (TensorProto field 9) streamed from disk."""
    head = _without(model, "graph", ModelProto())
    graph = _without(model.graph, "initializer", onnx.GraphProto())
    parts = []  # (header bytes, external tensor or None)
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            parts.append((t.SerializeToString(), None, 0))
            continue
        h = TensorProto()
        h.CopyFrom(t)
        del h.external_data[:]
        h.data_location = TensorProto.DEFAULT
        length = external_file(t)[2]
        parts.append((h.SerializeToString() + _field(9, length), t, length))
    inits = sum(len(_field(5, len(b) + n)) + len(b) + n for b, _, n in parts)
    g = graph.SerializeToString()
    f.write(head.SerializeToString())
    f.write(_field(7, len(g) + inits))
    f.write(g)
    for b, t, n in parts:
        f.write(_field(5, len(b) + n))
        f.write(b)
        if t is not None:
            _copy_external(t, f)


def _without(msg, skip: str, out):
    """A copy of protobuf message ``msg`` into ``out`` without field ``skip`` (for a model whose
    weights are external references: the copy is small)."""
    out.CopyFrom(msg)
    out.ClearField(skip)
    return out


def inlined(model: ModelProto) -> ModelProto:
    """A copy of ``model`` with every external tensor's bytes read back in (from ``external_dir()``)."""
    out = ModelProto()
    out.CopyFrom(model)
    onnx.external_data_helper.load_external_data_for_model(out, external_dir() or "")
    return out


def external_file(t: TensorProto) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, the file under ``external_dir()``."""
    info = {kv.key: kv.value for kv in t.external_data}
    length = int(info["length"]) if "length" in info else tensor_nbytes(t)
    return Path(external_dir() or ".") / info["location"], int(info.get("offset", 0)), length


def _copy_external(t: TensorProto, dst) -> int:
    """Stream an external tensor's bytes into ``dst`` (64 MB at a time); returns the length."""
    src, offset, length = external_file(t)
    with open(src, "rb") as f:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(left, 64 << 20))
            if not chunk:
                raise OSError(f"external data of '{t.name}' ends early in {src}")
            dst.write(chunk)
            left -= len(chunk)
    return length


@contextlib.contextmanager
def materialized(model: ModelProto) -> Iterator[str]:
    """A path to ``model`` on disk (with external data), for tools that need a file (large models)."""
    with tempfile.TemporaryDirectory(prefix="rooftop-") as d:
        p = os.path.join(d, "model.onnx")
        write_with_external_data(model, p, "model.onnx.data")
        yield p


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps freed memory of
    dropped onnxruntime sessions and protobuf copies otherwise, and the process's RSS stays at
    its peak)."""
    import gc

    from rooftop._compat import malloc_trim

    gc.collect()
    malloc_trim()


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is not there to tell)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def is_large(model: ModelProto) -> bool:
    """Too large for one protobuf: must go to disk with external data to be checked or run
    (external references do not count: they stay where they are)."""
    return inline_nbytes(model) >= EXTERNAL_DATA_THRESHOLD


def ort_source(model: ModelProto) -> bytes | None:
    """Serialized bytes for onnxruntime, or None when the model is too large (use ``materialized``)."""
    if is_large(model):
        return None
    return model.SerializeToString()


def weightless(model: ModelProto) -> ModelProto:
    """A copy of ``model`` for shape inference that copies no weight: initializers over
    ``SHAPE_ARITHMETIC_ELEMENTS`` elements (and external ones) become typed graph inputs, the small
    ones (shape vectors, axes, scalars: all that shape arithmetic reads) stay. Nodes, inputs and
    outputs are copied; value_info is left out."""
    sk = ModelProto()
    sk.ir_version = model.ir_version
    sk.opset_import.extend(model.opset_import)
    sk.functions.extend(model.functions)
    g, src = sk.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    have = {i.name for i in src.input}
    for t in src.initializer:
        numel = 1
        for d in t.dims:
            numel *= int(d)
        if numel > SHAPE_ARITHMETIC_ELEMENTS or t.data_location == TensorProto.EXTERNAL:
            if t.name not in have:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            g.initializer.append(t)
    return sk


def file_sha256(path: str | os.PathLike[str] | None) -> str | None:
    """The sha256 of a file, read 1 MB at a time (None when there is no file to read)."""
    import hashlib

    if not path:
        return None
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()
