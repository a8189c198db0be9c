"""The runtime contract: load a model into a session, run it, time it, profile it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np
from onnx import ModelProto


class Session(Protocol):
    """A model loaded into a runtime."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of one run, by name, as arrays of their own."""
        ...

    def runner(self, feeds: Mapping[str, np.ndarray], repeat: int = 1) -> Callable[[], float]:
        """A callable that runs the model ``repeat`` times and returns the mean seconds per run."""
        ...


class Runtime(Protocol):
    name: str  # "onnxruntime", "openvino"
    where: str  # execution provider or device
    levels: bool  # whether ``level`` (onnxruntime's optimization levels) means anything here

    @property
    def label(self) -> str:
        """``onnxruntime (CPUExecutionProvider)``, ``OpenVINO (CPU)``: what reports print."""
        ...

    def load(
        self,
        model: ModelProto | None,
        *,
        level: str = "disable",
        threads: int = 0,
        timing: bool = False,
        path: str | None = None,
        data: bytes | None = None,
    ) -> Session:
        """Load ``model`` (or the same model already serialized as ``data``, or written at ``path``).
        ``timing``: a session for measurement (the runtime's deploy settings, idle threads not
        spinning); else one for checking outputs (exact arithmetic, least memory)."""
        ...

    def profile_nodes(
        self, model: ModelProto, feeds: Mapping[str, np.ndarray], *, threads: int = 0, runs: int = 10
    ) -> dict[str, float]:
        """Median seconds per run of every operator, by node name."""
        ...

    def versions(self) -> dict[str, str]: ...


def timed(run: Callable[[], object], repeat: int) -> Callable[[], float]:
    """``run`` ``repeat`` times; the mean seconds per run."""

    def once() -> float:
        t0 = time.perf_counter()
        for _ in range(repeat):
            run()
        return (time.perf_counter() - t0) / repeat

    return once


def level_word(runtime: Runtime, level: str) -> str:
    """How a comparison's level reads in a report: ORT_ENABLE_ALL, or the runtime's own pipeline."""
    from rooftop.records import ORT_LEVEL_NAMES

    return ORT_LEVEL_NAMES[level] if runtime.levels else f"{runtime.label}"
