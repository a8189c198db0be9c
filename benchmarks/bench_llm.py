"""A generated decoder LLM through Rooftop, onnxsim and onnxslim: time, peak memory, what is left.

    python benchmarks/bench_llm.py                      # 28 layers, d=2048: 6.2 GB of fp32 weights
    python benchmarks/bench_llm.py --layers 4           # 1.33 GB
    python benchmarks/bench_llm.py --tools rooftop --mem-cap 20

The model comes from benchmarks/gen_decoder.py (cached in benchmarks/cache/llm). Each tool runs in
its own process, watched: peak RSS of the process tree sampled every 50 ms and taken from the
kernel's count at the end; a tool that passes ``--mem-cap`` GB is killed (and that is the result).
For every output: nodes, shape-computation nodes left (Shape/Size and every node computed from
them and constants only), whether the interface (input and output names, dtypes, dims) is the
original's, and the largest output difference against the original on one input (original and
output run one after the other, never both sessions alive). Writes benchmarks/out/llm.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache" / "llm"
OUT = ROOT / "benchmarks" / "out"


def generate(layers: int, d: int, ff: int) -> Path:
    path = CACHE / f"dec-L{layers}-d{d}.onnx"
    if not (path.exists() and Path(str(path) + ".data").exists()):
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "gen_decoder.py"),
                str(path),
                "--layers",
                str(layers),
                "--d",
                str(d),
                "--ff",
                str(ff),
            ],
            check=True,
        )
    return path


def tools() -> dict[str, list[str]]:
    py = sys.executable
    return {
        "rooftop": [py, "-m", "rooftop", "{src}", "-o", "{dst}", "-q", "--report", "{dst}.json"],
        "rooftop --no-time": [py, "-m", "rooftop", "{src}", "-o", "{dst}", "-q", "--no-time", "--report", "{dst}.json"],
        "onnxsim": [py, "-m", "onnxsim", "{src}", "{dst}", "--save-as-external-data"],
        "onnxslim": [py, "-m", "onnxslim", "{src}", "{dst}"],
    }


def _tree_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS")), 0)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run_tool(cmd: list[str], src: Path, dst: Path, cap_gb: float, timeout: float = 3600) -> dict:
    argv = [a.replace("{src}", str(src)).replace("{dst}", str(dst)) for a in cmd]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True)
        peak, killed = 0, ""
        while p.poll() is None:
            rss = _tree_rss_kb(p.pid)
            peak = max(peak, rss)
            if rss > cap_gb * 1e6:
                killed = f"killed at {rss / 1e6:.1f} GB of RSS (--mem-cap {cap_gb:g})"
            elif time.perf_counter() - t0 > timeout:
                killed = f"killed after {timeout:.0f} s"
            if killed:
                p.kill()
                break
            time.sleep(0.05)
        code = p.wait()
        wall = time.perf_counter() - t0
        try:
            ru = os.wait4(p.pid, 0)[2].ru_maxrss  # already reaped by wait(): fall back to the samples
        except ChildProcessError:
            ru = 0
        err.seek(0)
        text = err.read()
    res = {
        "ok": code == 0 and not killed and dst.exists(),
        "seconds": round(wall, 1),
        "peak_rss_gb": round(max(peak, ru) / 1e6, 2),
    }
    if not res["ok"]:
        res["error"] = killed or (text.strip().splitlines() or [f"exit {code}"])[-1][:300]
    return res


def shape_nodes(m: onnx.ModelProto) -> int:
    """Shape/Size and every node whose inputs are all shape-derived or constant."""
    const = {t.name for t in m.graph.initializer} | {
        o for n in m.graph.node if n.op_type == "Constant" for o in n.output
    }
    derived: set[str] = set()
    count = 0
    for n in m.graph.node:
        ins = [i for i in n.input if i]
        if n.op_type in ("Shape", "Size") or (
            ins and any(i in derived for i in ins) and all(i in derived or i in const for i in ins)
        ):
            derived.update(n.output)
            count += 1
    return count


def interface(m: onnx.ModelProto) -> list:
    def vi(v):
        tt = v.type.tensor_type
        return v.name, tt.elem_type, [d.dim_param or d.dim_value for d in tt.shape.dim]

    inits = {t.name for t in m.graph.initializer}
    return [[vi(v) for v in m.graph.input if v.name not in inits], [vi(v) for v in m.graph.output]]


def feeds(m: onnx.ModelProto, seq: int = 8, past: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, elem, dims in interface(m)[0]:
        if elem == onnx.TensorProto.INT64:
            out[name] = rng.integers(0, 1000, (1, seq)).astype(np.int64)
        else:
            shape = [1 if i == 0 else (past if isinstance(d, str) else d) for i, d in enumerate(dims)]
            out[name] = rng.standard_normal(shape).astype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    return out


def run_once(path: Path, x: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.add_session_config_entry("session.disable_prepacking", "1")
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = s.run(None, x)
    del s
    gc.collect()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5504)
    ap.add_argument("--tools", default=",".join(tools()))
    ap.add_argument("--mem-cap", type=float, default=20.0, help="GB of RSS at which a tool is killed")
    args = ap.parse_args()
    src = generate(args.layers, args.d, args.ff)
    orig = onnx.load(src, load_external_data=False)
    gb = sum(int(kv.value) for t in orig.graph.initializer for kv in t.external_data if kv.key == "length") / 1e9
    x = feeds(orig)
    ref = run_once(src, x)
    results = {
        "model": src.name,
        "weights_gb": round(gb, 2),
        "nodes": len(orig.graph.node),
        "shape_nodes": shape_nodes(orig),
        "tools": {},
    }
    print(
        f"{src.name}: {gb:.2f} GB of weights, {len(orig.graph.node)} "
        f"nodes, {results['shape_nodes']} shape-computation nodes"
    )
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        for name in args.tools.split(","):
            dst = Path(d) / (name.replace(" ", "").replace("-", "") + ".onnx")
            r = run_tool(tools()[name], src, dst, args.mem_cap)
            if r["ok"]:
                m = onnx.load(dst, load_external_data=False)
                r.update(
                    nodes=len(m.graph.node), shape_nodes=shape_nodes(m), interface_kept=interface(m) == interface(orig)
                )
                got = run_once(dst, x)
                r["max_abs_diff"] = float(max(np.max(np.abs(a.astype(np.float64) - b)) for a, b in zip(got, ref)))
                del got
            r["rss_over_weights"] = round(r["peak_rss_gb"] / gb, 2)
            results["tools"][name] = r
            print(f"  {name}: {json.dumps(r)}", flush=True)
            for f in Path(d).glob("*"):
                f.unlink()
    OUT.mkdir(exist_ok=True)
    (OUT / "llm.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
