"""onnxruntime, with any execution provider the installed build has (CPU by default)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from rooftop.errors import UsageError
from rooftop.runtimes.base import timed


@dataclass(frozen=True)
class OnnxRuntime:
    where: str = "CPUExecutionProvider"
    name: str = "onnxruntime"
    levels: bool = True

    @classmethod
    def with_provider(cls, provider: str) -> OnnxRuntime:
        import onnxruntime as ort

        have = ort.get_available_providers()
        if provider not in have:
            raise UsageError(
                f"--runtime onnxruntime:{provider}: this onnxruntime has no such execution provider "
                f"(it has {', '.join(have)})"
            )
        return cls(provider)

    @property
    def label(self) -> str:
        return "onnxruntime" if self.where == "CPUExecutionProvider" else f"onnxruntime ({self.where})"

    def load(
        self,
        model: ModelProto | None,
        *,
        level: str = "disable",
        threads: int = 0,
        timing: bool = False,
        path: str | None = None,
        data: bytes | None = None,
    ) -> OrtSession:
        from rooftop.runtime import make_session, physical_cores

        if timing:
            s = make_session(
                model,
                optimization=level,
                threads=threads or physical_cores(),
                spinning=False,
                path=path,
                data=data,
                providers=[self.where],
            )
        else:
            s = make_session(
                model, optimization=level, threads=threads, prepack=False, path=path, data=data, providers=[self.where]
            )
        return OrtSession(s)

    def profile_nodes(
        self, model: ModelProto, feeds: Mapping[str, np.ndarray], *, threads: int = 0, runs: int = 10
    ) -> dict[str, float]:
        from rooftop.analysis import timing

        return timing.profile_nodes(model, feeds, threads=threads, runs=runs)

    def versions(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnxruntime": ort.__version__}


@dataclass
class OrtSession:
    session: object  # onnxruntime.InferenceSession

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from rooftop.runtime import run_model

        return run_model(None, feeds, self.session)

    def runner(self, feeds: Mapping[str, np.ndarray], repeat: int = 1) -> Callable[[], float]:
        names = [o.name for o in self.session.get_outputs()]
        feeds = dict(feeds)
        return timed(lambda: self.session.run(names, feeds), repeat)
