"""Hardware profiles: peak FLOP/s per dtype, memory bandwidth, channel alignment, per-op overhead.

Built-in profiles carry paper figures (vendor datasheets; never reached in practice)
and say so in ``source``. ``host`` is measured on this machine by micro-benchmarks
and cached per machine (``~/.cache/rooftop``; ``optimize --measure-hardware``
measures again):

- peak FLOP/s: a large fp32 MatMul in onnxruntime (all physical cores), best of
  several runs; int8 the same with MatMulInteger;
- bandwidth: a STREAM-like copy and add over arrays of 256 MiB each, far beyond any
  cache, in onnxruntime (multi-threaded) and numpy; the best rate counts, with
  bytes = reads + writes;
- per-op overhead: a chain of tiny Adds in onnxruntime, time per node;
- channel alignment: 16 with AVX-512, 8 with AVX2, else 4 (the block onnxruntime's
  NCHWc layout uses).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rooftop.errors import UsageError


@dataclass
class HardwareProfile:
    name: str
    peak_flops: dict[str, float]  # dtype -> FLOP/s (fp32, fp16, int8)
    bandwidth: float  # bytes/s
    channel_multiple: int = 8
    overhead_s: float = 0.0  # per operator launch
    source: str = ""
    kind: str = "paper"  # paper | measured | user
    details: dict = field(default_factory=dict)
    pad_pays: bool = False  # does padding channels to channel_multiple pay on this hardware (default pipeline)

    def peak(self, dtype: str) -> float:
        if dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype == "fp64":
            return self.peak_flops.get("fp32", 1.0) / 2
        return self.peak_flops.get("fp32", 1.0)

    def ridge(self, dtype: str = "fp32") -> float:
        """FLOPs per byte at which compute and memory take equally long."""
        return self.peak(dtype) / self.bandwidth

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bandwidth_bytes_per_s"] = d.pop("bandwidth")
        d["ridge_flops_per_byte"] = round(self.ridge(), 3)
        return d


T, G = 1e12, 1e9
BUILTIN: dict[str, HardwareProfile] = {
    "xeon-avx512": HardwareProfile(
        "xeon-avx512",
        {"fp32": 4.608 * T, "fp16": 4.608 * T, "int8": 18.43 * T},
        96 * G,
        16,
        2e-6,
        "paper: 16-core AVX-512 Xeon, 2 FMA units x 16 fp32 lanes x 2 FLOP x 16 cores x 4.5 GHz; int8 VNNI 4x; "
        "6-channel DDR4-2000 96 GB/s",
        "paper",
        pad_pays=True,
    ),
    "v100": HardwareProfile(
        "v100",
        {"fp32": 15.7 * T, "fp16": 125 * T, "int8": 62.8 * T},
        900 * G,
        8,
        5e-6,
        "paper: NVIDIA V100 SXM2 datasheet (fp16 tensor cores, int8 DP4A), HBM2 900 GB/s",
        "paper",
        pad_pays=True,
    ),
    "a100": HardwareProfile(
        "a100",
        {"fp32": 19.5 * T, "tf32": 156 * T, "fp16": 312 * T, "int8": 624 * T},
        2039 * G,
        8,
        5e-6,
        "paper: NVIDIA A100 80GB SXM datasheet (dense tensor core figures), HBM2e 2039 GB/s",
        "paper",
        pad_pays=True,
    ),
    "h100": HardwareProfile(
        "h100",
        {"fp32": 67 * T, "tf32": 495 * T, "fp16": 989 * T, "int8": 1979 * T},
        3350 * G,
        8,
        4e-6,
        "paper: NVIDIA H100 SXM datasheet (dense tensor core figures), HBM3 3.35 TB/s",
        "paper",
        pad_pays=True,
    ),
    "cortex-a76": HardwareProfile(
        "cortex-a76",
        {"fp32": 166 * G, "fp16": 333 * G, "int8": 666 * G},
        34 * G,
        4,
        10e-6,
        "paper: 4x Cortex-A76 at 2.6 GHz, 2x128-bit NEON FMA (16 fp32 FLOP/cycle/core), fp16 2x, int8 SDOT 4x; "
        "LPDDR4X-4266 64-bit 34 GB/s",
        "paper",
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("ROOFTOP_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rooftop"
    )
    return Path(base)


def _cpu_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def host_key() -> str:
    import onnxruntime

    model, flags = _cpu_flags()
    from rooftop.runtime import physical_cores

    raw = (
        f"v2|{model}|{physical_cores()}|{os.cpu_count()}|{onnxruntime.__version__}|{'avx512f' in flags}"  # v2: pad_pays
    )
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def _alignment(flags: set[str]) -> int:
    if "avx512f" in flags:
        return 16
    if "avx2" in flags:
        return 8
    return 4


def _session(nodes, inputs, outputs, inits=(), *, threads: int):
    """A session for a one-purpose benchmark graph, made like every other session (rooftop.runtime)."""
    from onnx import helper

    from rooftop.runtime import make_session

    g = helper.make_graph(nodes, "bench", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return make_session(None, data=m.SerializeToString(), optimization="all", threads=threads)


def _vi(name: str, elem: int, shape: list[int]):
    from onnx import helper

    return helper.make_tensor_value_info(name, elem, shape)


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak_ops(op: str, a: np.ndarray, b: np.ndarray, out_elem: int, threads: int) -> float:
    """Operations per second of an n×n×n product (MatMul or MatMulInteger), best of 5."""
    from onnx import helper

    n = a.shape[0]
    elem = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3}
    s = _session(
        [helper.make_node(op, ["a", "b"], ["c"])],
        [_vi("a", elem[a.dtype], [n, n]), _vi("b", elem[b.dtype], [n, n])],
        [_vi("c", out_elem, [n, n])],
        threads=threads,
    )
    return 2.0 * n**3 / _best(lambda: s.run(None, {"a": a, "b": b}), 5)


def _bandwidth(rng, threads: int) -> tuple[float, float]:
    """Bytes per second of streaming 256 MiB arrays: (numpy copy/add, onnxruntime Add), best of 5."""
    from onnx import TensorProto, helper

    size = 64 * 2**20  # float32 elements: 256 MiB per array
    x = rng.standard_normal(size, dtype=np.float32)
    y = rng.standard_normal(size, dtype=np.float32)
    out = np.empty_like(x)
    t_copy = _best(lambda: np.copyto(out, x), 5)
    t_add = _best(lambda: np.add(x, y, out=out), 5)
    bw_numpy = max(2 * x.nbytes / t_copy, 3 * x.nbytes / t_add)
    f = TensorProto.FLOAT
    add = _session(
        [helper.make_node("Add", ["x", "y"], ["z"])],
        [_vi("x", f, [size]), _vi("y", f, [size])],
        [_vi("z", f, [size])],
        threads=threads,
    )
    bw_ort = 3 * x.nbytes / _best(lambda: add.run(None, {"x": x, "y": y}), 5)
    return bw_numpy, bw_ort


def _overhead(threads: int, k: int = 200) -> float:
    """Seconds per operator of a chain of ``k`` tiny Adds, best of 20."""
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [helper.make_node("Add", [f"t{i}", "one"], [f"t{i + 1}"]) for i in range(k)]
    chain = _session(
        nodes, [_vi("t0", f, [4])], [_vi(f"t{k}", f, [4])], [helper.make_tensor("one", f, [1], [1.0])], threads=threads
    )
    v = np.zeros(4, np.float32)
    return _best(lambda: chain.run(None, {"t0": v}), 20) / k


def measure_host(progress=None) -> HardwareProfile:
    """Micro-benchmarks of this machine (takes ~10-20 s); every figure is the best of several repeats."""
    from onnx import TensorProto

    from rooftop.runtime import physical_cores

    threads = physical_cores()
    model, flags = _cpu_flags()
    say = progress or (lambda s: None)
    rng = np.random.default_rng(0)
    n = 2048
    say("peak fp32 FLOP/s (onnxruntime MatMul 2048^3)")
    fp32 = _peak_ops(
        "MatMul",
        rng.standard_normal((n, n), dtype=np.float32),
        rng.standard_normal((n, n), dtype=np.float32),
        TensorProto.FLOAT,
        threads,
    )
    say("peak int8 ops/s (onnxruntime MatMulInteger 2048^3)")
    int8 = _peak_ops(
        "MatMulInteger",
        rng.integers(0, 255, (n, n), dtype=np.uint8),
        rng.integers(-127, 127, (n, n), dtype=np.int8),
        TensorProto.INT32,
        threads,
    )
    say("memory bandwidth (copy and add over 256 MiB arrays)")
    bw_numpy, bw_ort = _bandwidth(rng, threads)
    say("per-operator overhead (chain of 200 tiny Adds)")
    overhead = _overhead(threads)
    return HardwareProfile(
        name="host",
        peak_flops={"fp32": fp32, "fp16": fp32, "int8": int8},
        bandwidth=max(bw_numpy, bw_ort),
        channel_multiple=_alignment(flags),
        overhead_s=overhead,
        source=(
            f"measured on this machine ({model}, {threads} physical cores): onnxruntime MatMul 2048^3 "
            f"fp32, MatMulInteger int8, copy/add of 256 MiB arrays (numpy {bw_numpy / G:.1f} GB/s, "
            f"onnxruntime {bw_ort / G:.1f} GB/s), 200-Add chain for per-op overhead"
        ),
        kind="measured",
        pad_pays="avx512f" in flags or "avx2" in flags,
        details={
            "cpu": model,
            "threads": threads,
            "avx512": "avx512f" in flags,
            "avx2": "avx2" in flags,
            "bandwidth_numpy": bw_numpy,
            "bandwidth_onnxruntime": bw_ort,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "measurements": 1,
        },
    )


MAX_AGE_S = 24 * 3600  # a host profile older than a day is measured again


def host_profile(remeasure: bool = False, progress=None) -> HardwareProfile:
    """This machine's profile: cached per CPU and onnxruntime version, measured again when older than
    a day or marked stale (measured operators exceeded its roof). Peaks are the best seen over the
    measurements of this machine: a busy machine measures less, never more, than it can do."""
    path = cache_dir() / f"host-{host_key()}.json"
    old = _cached(path)
    if old is not None and not remeasure and not old.details.get("stale") and profile_age_s(old) < MAX_AGE_S:
        return old
    if progress is not None and old is not None:
        why = "marked stale" if old.details.get("stale") else f"{profile_age_s(old) / 3600:.0f} h old"
        progress(f"measuring this machine again (cached profile {why})")
    prof = measure_host(progress)
    if old is not None:
        prof = _best_of(prof, old)
    _save(path, prof)
    return prof


def _cached(path: Path) -> HardwareProfile | None:
    if not path.exists():
        return None
    try:
        return from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None


def _save(path: Path, prof: HardwareProfile) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(prof.as_dict(), indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def profile_age_s(prof: HardwareProfile) -> float:
    """Seconds since the profile was measured (infinite when it does not say)."""
    at = prof.details.get("measured_at")
    try:
        return max(time.time() - time.mktime(time.strptime(at, "%Y-%m-%d %H:%M:%S")), 0.0)
    except (TypeError, ValueError):
        return float("inf")


def _best_of(new: HardwareProfile, old: HardwareProfile) -> HardwareProfile:
    """The new measurement with the best peaks seen so far (and how many measurements they rest on)."""
    new.peak_flops = {k: max(v, old.peak_flops.get(k, 0.0)) for k, v in new.peak_flops.items()}
    new.bandwidth = max(new.bandwidth, old.bandwidth)
    new.details["measurements"] = int(old.details.get("measurements", 1)) + 1
    return new


def mark_stale(why: str) -> None:
    """Have the next run measure this machine again (measured operators exceeded the roof)."""
    path = cache_dir() / f"host-{host_key()}.json"
    prof = _cached(path)
    if prof is not None:
        prof.details["stale"] = why
        _save(path, prof)


def from_dict(d: dict) -> HardwareProfile:
    bw = d.get("bandwidth_bytes_per_s", d.get("bandwidth"))
    if not isinstance(d.get("peak_flops"), dict) or bw is None:
        raise KeyError("peak_flops (a dict of dtype -> FLOP/s) and bandwidth_bytes_per_s are required")
    return HardwareProfile(
        name=str(d.get("name", "custom")),
        peak_flops={k: float(v) for k, v in d["peak_flops"].items()},
        bandwidth=float(bw),
        channel_multiple=int(d.get("channel_multiple", 8)),
        overhead_s=float(d.get("overhead_s", 0.0)),
        source=str(d.get("source", "")),
        kind=str(d.get("kind", "user")),
        details=dict(d.get("details", {})),
        pad_pays=bool(d.get("pad_pays", False)),
    )


def get_profile(name: str, progress=None) -> HardwareProfile:
    """A built-in name, ``host``, or a path to a JSON profile."""
    if name == "host":
        return host_profile(progress=progress)
    if name in BUILTIN:
        return BUILTIN[name]
    p = Path(name)
    if p.suffix.lower() == ".json" or p.exists():
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise UsageError(f"--hardware {name}: no such file") from e
        except ValueError as e:
            raise UsageError(f"--hardware {name}: not valid JSON ({e})") from e
        try:
            prof = from_dict(d)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"--hardware {name}: {e}") from e
        if prof.kind == "paper" and not prof.source:
            prof.kind = "user"
        return prof
    raise UsageError(f"--hardware {name}: unknown profile; use host, {', '.join(BUILTIN)} or a .json file")
