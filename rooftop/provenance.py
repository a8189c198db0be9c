"""Where a node came from in its author's code: the PyTorch module path, the module's class and
the source line, read from what the exporter left on the node.

- The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) writes node metadata:
  ``pkg.torch.onnx.name_scopes`` (``['', 'features', 'features.0', 'features.0.1', 'op']``: the
  module path, the op last), ``pkg.torch.onnx.class_hierarchy`` (the classes of those scopes) and
  ``pkg.torch.onnx.stack_trace`` (the Python frames of the call). The module is the scope before
  the op; the source line is the last frame outside torch itself (the author's ``forward``).
- The TorchScript exporter writes the scopes into the node name:
  ``/features/features.0/conv/Conv`` is module ``features.0.conv`` (each scope is the attribute,
  or the child's full path for a container's children). No class, no source line.

Anything else (another exporter, a renamed graph) has no source: the audit names the node alone.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass

import onnx

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
STACK = "pkg.torch.onnx.stack_trace"
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


@dataclass(frozen=True)
class Source:
    module: str  # the module path ("features.0.1"; "" for the top-level module)
    cls: str = ""  # the module's class ("BatchNorm2d"), where the exporter recorded it
    location: str = ""  # "mobilenetv2.py:174", where the exporter recorded it

    def describe(self) -> str:
        extra = ", ".join(x for x in (self.cls, self.location) if x)
        return (self.module or "(top module)") + (f" ({extra})" if extra else "")


def of(node: onnx.NodeProto) -> Source | None:
    """The node's source: from dynamo's metadata, else from a TorchScript scope name; None."""
    meta = {p.key: p.value for p in node.metadata_props}
    if SCOPES in meta:
        return _from_metadata(meta)
    return _from_name(node.name)


def index(nodes: Iterable[onnx.NodeProto]) -> dict[str, Source]:
    """The source of every node that has one, by node name (and by first output, which names an
    unnamed node)."""
    out: dict[str, Source] = {}
    for n in nodes:
        s = of(n)
        if s is None:
            continue
        for key in (n.name, n.output[0] if n.output else ""):
            if key:
                out.setdefault(key, s)
    return out


def _literal(text: str | None) -> list[str]:
    try:
        value = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _from_metadata(meta: dict[str, str]) -> Source | None:
    scopes, classes = _literal(meta.get(SCOPES)), _literal(meta.get(CLASSES))
    if len(scopes) < 2:
        return None
    i = len(scopes) - 2  # the scope before the op's own name
    cls = classes[i].rsplit(".", 1)[-1] if i < len(classes) else ""
    return Source(scopes[i], cls, _location(meta.get(STACK, "")))


def _location(stack: str) -> str:
    """The last frame of the call outside torch itself, as ``file.py:line``."""
    frames = _FRAME.findall(stack)
    mine = [f for f in frames if "/torch/" not in f[0].replace("\\", "/")]
    if not (mine or frames):
        return ""
    path, line = (mine or frames)[-1]
    return f"{path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{line}"


def _from_name(name: str) -> Source | None:
    if not name.startswith("/") or name.count("/") < 2:
        return None
    path = ""
    for part in name.strip("/").split("/")[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return Source(path)


__all__ = ["Source", "index", "of"]
