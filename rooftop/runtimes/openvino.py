"""OpenVINO: the second runtime (``pip install rooftop[openvino]``).

A model is read from memory (or from a file where its weights are on disk) and compiled for a
device (``CPU`` by default). A session that checks outputs runs at f32 inference precision
with dynamic quantization off, so what is compared is the graph, not a precision the plugin
chose; a timing session keeps the plugin's own defaults but for the thread count and the
latency hint (one request at a time, as a deployment that times a model runs it). Per-operator
times come from the plugin's performance counters (``PERF_COUNT``), by node name.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto

from rooftop.errors import UsageError
from rooftop.runtimes.base import timed


def _core():
    try:
        import openvino as ov
    except ImportError as e:
        raise UsageError("--runtime openvino: OpenVINO is not installed (pip install 'rooftop[openvino]')") from e
    return ov.Core()


@dataclass(frozen=True)
class OpenVino:
    where: str = "CPU"
    name: str = "openvino"
    levels: bool = False  # onnxruntime's levels mean nothing here: the plugin's pipeline always runs

    @classmethod
    def on_device(cls, device: str) -> OpenVino:
        have = _core().available_devices
        if device not in have:
            raise UsageError(
                f"--runtime openvino:{device}: OpenVINO has no such device here (it has {', '.join(have)})"
            )
        return cls(device)

    @property
    def label(self) -> str:
        return f"OpenVINO ({self.where})"

    def config(self, threads: int, timing: bool, perf: bool = False) -> dict:
        cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        if not timing:
            cfg.update(
                {
                    "INFERENCE_PRECISION_HINT": "f32",
                    "EXECUTION_MODE_HINT": "ACCURACY",
                    "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
                }
            )
        if perf:
            cfg["PERF_COUNT"] = True
        return cfg

    def load(
        self,
        model: ModelProto | None,
        *,
        level: str = "disable",
        threads: int = 0,
        timing: bool = False,
        path: str | None = None,
        data: bytes | None = None,
        perf: bool = False,
    ) -> OvSession:
        from rooftop.runtime import physical_cores

        core = _core()
        with _source(model, path, data) as src:
            ov_model = core.read_model(src)
        cfg = self.config(threads or (physical_cores() if timing else 0), timing, perf)
        where = self.where
        try:
            compiled = core.compile_model(ov_model, where, cfg)
        except Exception as e:
            raise RuntimeError(message(e)) from e
        return OvSession(
            compiled,
            [o.name for o in model.graph.output] if model is not None else [],
            rebuild=lambda: core.compile_model(ov_model, where, cfg),
        )

    def profile_nodes(
        self, model: ModelProto, feeds: Mapping[str, np.ndarray], *, threads: int = 0, runs: int = 10
    ) -> dict[str, float]:
        s = self.load(model, threads=threads, timing=True, perf=True)
        per: dict[str, list[float]] = {}
        for _ in range(2):
            s.run(feeds)
        for _ in range(runs):
            s.request.infer(dict(feeds))
            for info in s.request.get_profiling_info():
                if str(info.status).endswith("EXECUTED"):
                    per.setdefault(info.node_name, []).append(info.real_time.total_seconds())
        return {k: float(np.median(v)) for k, v in per.items()}

    def versions(self) -> dict[str, str]:
        import openvino as ov

        return {"openvino": ov.__version__}


def message(e: BaseException) -> str:
    """OpenVINO's error without the source locations it stacks before the reason
    (``Exception from src/inference/src/cpp/core.cpp:117:`` ... ``No suitable implementations.``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    said = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '")) and not ln.endswith(".cpp:")]
    return " ".join(said)[:300] or (lines[0] if lines else type(e).__name__)


@contextmanager
def _source(model: ModelProto | None, path: str | None, data: bytes | None) -> Iterator[object]:
    """What ``read_model`` reads: a path, the serialized bytes, or the model written out where its
    weights are on disk (a model in memory cannot point OpenVINO at them)."""
    from rooftop.model_io import has_external_data, materialized, ort_source

    if path is not None:
        yield path
        return
    if model is not None and has_external_data(model):  # its weights stay where they are: linked, not copied
        with _beside_its_weights(model, data) as p:
            yield p
        return
    if data is None and model is not None:
        data = ort_source(model)
    if data is not None:
        yield io.BytesIO(data)
        return
    with materialized(model) as p:
        yield p


@contextmanager
def _beside_its_weights(model: ModelProto, data: bytes | None) -> Iterator[str]:
    """The model written to a scratch folder beside hard links to the external data files it refers
    to (``model_io.external_dir()``), so OpenVINO reads the weights in place. OpenVINO refuses a
    symlink that resolves outside the model's folder; where a hard link cannot be made (another
    file system), the model is written out with its weights."""
    import os
    import tempfile
    from pathlib import Path

    from rooftop.model_io import external_dir, iter_graph_tensors, materialized, ort_source

    base = Path(external_dir() or ".").resolve()
    with tempfile.TemporaryDirectory(prefix="rooftop-ov-") as d:
        try:
            for t in iter_graph_tensors(model.graph):
                loc = next((kv.value for kv in t.external_data if kv.key == "location"), None)
                link = Path(d) / loc if loc else None
                if link is not None and not link.exists():
                    link.parent.mkdir(parents=True, exist_ok=True)
                    os.link(base / loc, link)
        except OSError:
            with materialized(model) as p:
                yield p
            return
        p = Path(d) / "model.onnx"
        p.write_bytes(data if data is not None else ort_source(model) or model.SerializeToString())
        yield str(p)


@dataclass
class OvSession:
    compiled: object  # openvino.CompiledModel
    expected: list[str]  # the ONNX graph's output names (a port carries every name of its tensor)
    # compiles the model again: after an inference that failed on a shape the model cannot take,
    # OpenVINO's CPU plugin (2026.4) can compute wrong outputs at the next shape, in every request
    # of that compiled model (an OCR detector's references were off by 0.1), so a failure is
    # followed by a fresh compile
    rebuild: Callable[[], object] | None = None

    def __post_init__(self) -> None:
        self.request = self.compiled.create_infer_request()
        self.rebuilt = 0
        self.names = []
        for i, port in enumerate(self.compiled.outputs):
            names = port.get_names()
            mine = [n for n in self.expected if n in names]
            self.names.append(mine[0] if mine else self.expected[i] if i < len(self.expected) else port.any_name)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            res = self.request.infer(dict(feeds))
        except Exception:
            if self.rebuild is not None:
                self.compiled = self.rebuild()
                self.request = self.compiled.create_infer_request()
                self.rebuilt += 1
            raise
        out = {}
        for port, name in zip(self.compiled.outputs, self.names):
            out[name] = np.array(res[port])
        return out

    def runner(self, feeds: Mapping[str, np.ndarray], repeat: int = 1) -> Callable[[], float]:
        feeds = dict(feeds)
        infer = self.request.infer
        return timed(lambda: infer(feeds), repeat)
