"""What a run is asked to do: ``Options``, and the ``Comparator`` a caller may time with."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from onnx import ModelProto

from rooftop.limits import FOLD_LIMIT
from rooftop.records import NOISE_BAND, Latency


class Comparator(Protocol):
    """Times ``after`` against ``before`` at an onnxruntime level; ``stop`` is ``gate`` (settle
    keep/reject), ``pay`` (settle whether a pass that adds work measures below ×0.94) or ``verdict``
    (settle faster/noise/slower). One that also takes ``shapes=`` is told the label of the shape
    set it times. Returns None when it cannot time the pair."""

    def __call__(self, before: ModelProto, after: ModelProto, level: str, stop: str) -> Latency | None: ...


@dataclass
class Options:
    passes: Sequence[str] | None = None
    skip: Sequence[str] = ()
    target: str = "portable"
    fold_limit: int = FOLD_LIMIT
    channel_multiple: int | None = None
    hardware: str = "host"  # a built-in profile name, "host" (measured), or a JSON file
    # the shapes decisions are taken at: one mapping (one shape set) or a list of them (every decision
    # must hold at each; the cost figures are for the first); dims not bound get realistic defaults
    input_shapes: dict[str, list[int]] | list[dict[str, list[int]]] = field(default_factory=dict)
    inputs_npz: str | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    verify: bool = True
    fixed_point: bool = False
    external_data: bool | None = None
    force: bool = False
    strict: bool = False
    debug: bool = False
    analyze: bool = True  # roofline cost of the model before, after, and after every pass
    time: bool = True  # measure: decide per pass and for the final model, report the latency
    time_budget: float = 1.0  # seconds of interleaved timing per comparison (at most; stops early once decided)
    threads: int = 0  # onnxruntime intra-op threads for timing (0: physical cores)
    profile_nodes: bool = True  # per-operator times from onnxruntime's profiler, joined to the roofline rows
    deploy_level: str = "all"  # the onnxruntime optimization level the model will run at: decisions are taken there
    keep_slower: bool = False  # keep passes (and a final model) that measure slower
    time_all_levels: bool = True  # also time the final model at ORT_DISABLE_ALL (our rewrites alone; for reports)
    noise_band: float = NOISE_BAND
    comparator: Comparator | None = None  # replaces onnxruntime timing on this machine (tests, remote devices)
    opset: int | None = None  # convert the model to this default-domain opset before the passes
    # weights stay on disk (memory-mapped by onnxruntime, read by a pass only when it rewrites them,
    # streamed to the output); None: from 8 MB of weights on. External data is referred to where it
    # is (the model optimize() returns then refers to the input's data file, relative to its folder);
    # a model stored inline is moved to a scratch file for the run and returned with its weights.
    lazy_weights: bool | None = None
    # replay a plan (a saved plan or a JSON report's): exactly the passes it kept, with its options and
    # shapes, no timing, verification on; the output is byte-identical to the run that made it
    plan: str | os.PathLike[str] | None = None
    # where verification and every decision are taken: onnxruntime[:PROVIDER] or openvino[:DEVICE]
    runtime: str = "onnxruntime"
    # portable target: every candidate onnxruntime verifies is also loaded, run and compared in
    # OpenVINO (None: where OpenVINO is installed and decisions are taken in onnxruntime)
    cross_check: bool | None = None


__all__ = ["Comparator", "Options"]
