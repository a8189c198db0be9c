"""Where a model is run: one small adapter per runtime, and the one place verification, timing,
per-operator profiling and the cost model's shape runs go through.

A runtime loads a model with its own settings (onnxruntime: execution provider, optimization
level, threads; OpenVINO: device, ``INFERENCE_NUM_THREADS``, performance hint) into a session
that runs it on feeds, gives a timing callable for interleaved comparisons, and profiles it per
operator. ``--runtime NAME`` picks the one decisions are taken on:

- ``onnxruntime`` (default) or ``onnxruntime:PROVIDER`` (any execution provider name the
  installed onnxruntime has, e.g. ``onnxruntime:CUDAExecutionProvider``; a configuration, not code);
- ``openvino`` or ``openvino:DEVICE`` (``CPU`` by default; the ``openvino`` extra).
"""

from __future__ import annotations

from rooftop.errors import UsageError
from rooftop.runtimes.base import Runtime, Session


def get(spec: str | None) -> Runtime:
    """The runtime named by ``spec`` (``name[:device or provider]``); UsageError when unknown or not installed."""
    spec = (spec or "onnxruntime").strip()
    name, _, where = spec.partition(":")
    name = name.lower()
    if name in ("onnxruntime", "ort"):
        from rooftop.runtimes.onnxruntime import OnnxRuntime

        return OnnxRuntime.with_provider(where or "CPUExecutionProvider")
    if name in ("openvino", "ov"):
        from rooftop.runtimes.openvino import OpenVino

        return OpenVino.on_device(where or "CPU")
    raise UsageError(f"--runtime {spec}: unknown runtime; use onnxruntime[:PROVIDER] or openvino[:DEVICE]")


def installed(spec: str) -> Runtime | None:
    """The runtime if it can be used here, else None (for optional cross-checks)."""
    try:
        return get(spec)
    except UsageError:
        return None


__all__ = ["Runtime", "Session", "get", "installed"]
