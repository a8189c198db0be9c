"""Rooftop against onnxsim, onnxslim and onnxruntime's offline optimizer on real exported models.

    pip install torch==2.13.0 onnxslim           # exporters and the peers (not Rooftop dependencies)
    python benchmarks/compare.py                 # the whole corpus (exports are cached in benchmarks/cache)
    python benchmarks/compare.py --models bert,vit --no-latency
    python benchmarks/compare.py path/to/any.onnx --input-shape input=1x3x224x224

For every model and tool: success, tool wall time and peak RSS (each tool runs in
its own process), nodes, BatchNorm / shape-op / Q-DQ counts left, file size, max
output difference against the original, total memory traffic by Rooftop's cost
model (when the analysis module is present), and latency at ORT_DISABLE_ALL and
ORT_ENABLE_ALL as interleaved ratios to the original with their interquartile
range. Writes benchmarks/out/results.json and benchmarks/out/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT))

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


# ---- corpus -------------------------------------------------------------------------------


def corpus() -> dict[str, dict]:
    """name -> how to build it (exported lazily, cached)."""
    return {
        "resnet50": {"build": "resnet50", "shape": (1, 3, 224, 224)},
        "mobilenetv2-folded": {"build": "mnv2", "exporter": "legacy", "fold": True, "shape": (1, 3, 224, 224)},
        "mobilenetv2-bn-legacy": {"build": "mnv2", "exporter": "legacy", "fold": False, "shape": (1, 3, 224, 224)},
        "mobilenetv2-bn-dynamo": {"build": "mnv2", "exporter": "dynamo", "fold": False, "shape": (1, 3, 224, 224)},
        "odd-channels": {"build": "odd", "shape": (1, 3, 64, 64)},
        "bert": {"build": "bert", "shape": (1, 128), "axes": {0: "batch", 1: "seq"}},
        "gpt2": {"build": "gpt2", "shape": (1, 128), "axes": {0: "batch", 1: "seq"}},
        "vit": {"build": "vit", "shape": (1, 3, 224, 224), "axes": {0: "batch"}},
        "yolo": {"build": "yolo", "shape": (1, 3, 320, 320), "axes": {0: "batch", 2: "height", 3: "width"}},
        "resnet18-qdq": {"build": "qdq", "base": "resnet18", "shape": (1, 3, 224, 224)},
        "mobilenetv2-qdq": {"build": "qdq", "base": "mobilenetv2-folded", "shape": (1, 3, 224, 224)},
        "bert-qdq": {"build": "qdq", "base": "bert", "shape": (1, 128)},
        "resnet18": {"build": "resnet18", "shape": (1, 3, 224, 224)},
    }


def build(name: str, spec: dict, all_specs: dict) -> Path:
    path = CACHE / f"{name}.onnx"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    import archs
    import torch

    torch.manual_seed(0)
    kind = spec["build"]
    if kind == "qdq":
        base = build(spec["base"], all_specs[spec["base"]], all_specs)
        quantize(base, path, spec["shape"], token_input=spec["base"] == "bert")
        return path
    nets = {
        "resnet50": archs.resnet50,
        "resnet18": lambda: archs.resnet18(),
        "mnv2": lambda: archs.mobilenet_v2(1.0, 1000),
        "odd": lambda: __import__("build_samples").build_odd(),
        "bert": lambda: archs.BertEncoder(vocab=30522, d=768, layers=12, heads=12).eval(),
        "gpt2": lambda: archs.GPT2Decoder(vocab=50257, d=768, layers=12, heads=12, max_len=1024).eval(),
        "vit": lambda: archs.ViT(224, 16, 384, 12, 6, 1000).eval(),
        "yolo": lambda: archs.randomize_bn(archs.YoloLike(80, 3, 32)),
    }
    net = nets[kind]().eval()
    shape = spec["shape"]
    x = torch.randint(1, 1000, shape) if kind in ("bert", "gpt2") else torch.randn(*shape)
    if "axes" in spec:
        archs.export_dynamic(net, x, path, spec["axes"], exporter=spec.get("exporter", "legacy"))
    else:
        archs.export(net, x, path, exporter=spec.get("exporter", "legacy"), fold=spec.get("fold", True))
    return path


def quantize(src: Path, dst: Path, shape, token_input: bool = False) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    m = onnx.load(src)
    name = m.graph.input[0].name
    rng = np.random.default_rng(0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            if token_input:
                self.data = iter([{name: rng.integers(1, 1000, shape).astype(np.int64)} for _ in range(4)])
            else:
                self.data = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        src_q = pre
    except Exception:  # noqa: BLE001
        src_q = src
    quantize_static(
        str(src_q),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    if pre.exists():
        pre.unlink()


# ---- tools (each in its own process) --------------------------------------------------------

ORT_OFFLINE = """
import sys, onnxruntime as ort
so = ort.SessionOptions()
so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, sys.argv[3])
so.optimized_model_filepath = sys.argv[2]
so.log_severity_level = 3
ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
"""


def tools(shape_args: list[str]) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "rooftop": [py, "-m", "rooftop", "{src}", "-o", "{dst}", "-q", "--report", "{dst}.json", *shape_args],
        "rooftop-ort": [
            py,
            "-m",
            "rooftop",
            "{src}",
            "-o",
            "{dst}",
            "-q",
            "--target",
            "onnxruntime",
            "--report",
            "{dst}.json",
            *shape_args,
        ],
        "rooftop-notime": [py, "-m", "rooftop", "{src}", "-o", "{dst}", "-q", "--no-time", *shape_args],
        "rooftop-plain": [py, "-m", "rooftop", "{src}", "-o", "{dst}", "-q", *shape_args],  # the default run, no report
        "rooftop-fast": [
            py,
            "-m",
            "rooftop",
            "{src}",
            "-o",
            "{dst}",
            "-q",
            "--no-verify",
            "--no-time",
            "--no-analysis",
            *shape_args,
        ],
        "onnxsim": [py, "-m", "onnxsim", "{src}", "{dst}"],
        "onnxslim": [py, "-m", "onnxslim", "{src}", "{dst}"],
        "ort-basic": [py, "-c", ORT_OFFLINE, "{src}", "{dst}", "ORT_ENABLE_BASIC"],
        "ort-extended": [py, "-c", ORT_OFFLINE, "{src}", "{dst}", "ORT_ENABLE_EXTENDED"],
    }


RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:])
sys.stderr.write("\\nROOFTOP_BENCH_MAXRSS_KB=%d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


# Tools run as installed packages do: with their bytecode compiled (pip compiles it at install;
# PYTHONDONTWRITEBYTECODE, set on some machines, would make an editable checkout recompile its
# modules on every run while the other tools load theirs from site-packages' .pyc).
TOOL_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def compile_rooftop() -> None:
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parent.parent / "rooftop")],
        env=TOOL_ENV,
        check=True,
    )


def run_tool(cmd: list[str], src: Path, dst: Path, timeout: float = 1800) -> dict:
    """Run one tool in its own process; wall time and that process's peak RSS.

    The tool is started by a small wrapper process, so its RSS is not inflated by
    this (large) process's memory at fork time."""
    import re
    import tempfile

    argv = [sys.executable, "-c", RSS_WRAPPER] + [a.replace("{src}", str(src)).replace("{dst}", str(dst)) for a in cmd]
    with tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True, env=TOOL_ENV)
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return {"ok": False, "error": "timeout"}
        wall = time.perf_counter() - t0
        err.seek(0)
        text = err.read()
    m = re.search(r"ROOFTOP_BENCH_MAXRSS_KB=(\d+)", text)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    text = re.sub(r"\s*ROOFTOP_BENCH_MAXRSS_KB=\d+\s*", "", text)
    ok = code == 0 and dst.exists()
    res = {"ok": ok, "seconds": round(wall, 2), "peak_rss_mb": round(rss, 1)}
    if not ok:
        res["error"] = (text.strip().splitlines() or [f"exit {code}"])[-1][:200]
    return res


# ---- measurements -----------------------------------------------------------------------------


def counts(m: onnx.ModelProto) -> dict:
    ops = [n.op_type for n in m.graph.node]
    return {
        "nodes": len(ops),
        "bn": ops.count("BatchNormalization"),
        "shape_ops": sum(o in SHAPE_OPS for o in ops),
        "qdq": sum(o in QDQ for o in ops),
    }


def feeds_for(m: onnx.ModelProto, shape_overrides: dict) -> dict:
    from rooftop.runtime import graph_inputs, random_inputs
    from rooftop.shapes import bind_sizes as bind_shapes

    specs = graph_inputs(m)
    shapes = bind_shapes(specs, shape_overrides, 1, 128)
    return random_inputs(specs, shapes, seed=0)


def max_diff(a: onnx.ModelProto, b: onnx.ModelProto, feeds: dict) -> float:
    from rooftop.runtime import make_session

    ra = make_session(a).run(None, feeds)
    rb = make_session(b).run(None, feeds)
    return float(
        max(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) if x.size else 0.0 for x, y in zip(ra, rb))
    )


def traffic(m: onnx.ModelProto, shape_overrides: dict) -> float | None:
    try:
        from rooftop.analysis import costs
    except ImportError:
        return None
    try:
        return float(costs.analyze(m, input_shapes=shape_overrides).totals.bytes)
    except Exception:  # noqa: BLE001
        return None


def not_kept(report: Path) -> list[str]:
    """Passes a rooftop run rejected (slower at the deploy level), backed off or rolled back."""
    if not report.exists():
        return []
    rep = json.loads(report.read_text())
    out = [
        f"{p['name']} {p['status']}" + (f" ({p['latency_ratio']:.2f})" if p.get("latency_ratio") else "")
        for p in rep["passes"]
        if p["status"] in ("rejected", "rolled back", "skipped")
    ]
    report.unlink()
    return out


def latency(orig: onnx.ModelProto, opt: onnx.ModelProto, feeds: dict, budget: float) -> dict:
    from rooftop.analysis import timing

    out = {}
    for level in ("disable", "all"):
        c = timing.compare(orig, opt, feeds, level=level, budget_s=budget)
        lo, hi = c.ci
        out[level] = {
            "ratio": round(c.ratio, 3),
            "q1": round(lo, 3),
            "q3": round(hi, 3),
            "verdict": c.verdict,
            "ms_original": round(c.a.median_ms, 3),
            "ms": round(c.b.median_ms, 3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="extra .onnx models to include")
    ap.add_argument("--models", help="comma-separated subset of the built-in corpus (default: all)")
    ap.add_argument("--tools", help="comma-separated subset of tools")
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--budget", type=float, default=5.0, help="seconds of interleaved timing per model/tool/level")
    ap.add_argument("--input-shape", action="append", default=[])
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every tool this many times, in turn (tool time: the median, with min-max; RSS: the max)",
    )
    args = ap.parse_args()

    from rooftop.runtime import parse_shape_overrides

    overrides = parse_shape_overrides(args.input_shape)
    specs = corpus()
    names = args.models.split(",") if args.models else ([] if args.paths else list(specs))
    models: list[tuple[str, Path, dict]] = []
    for n in names:
        spec = specs[n]
        print(f"[corpus] {n}", file=sys.stderr, flush=True)
        p = build(n, spec, specs)
        shp = {"input": list(spec["shape"])} if "axes" in spec else {}
        models.append((n, p, shp))
    for p in args.paths:
        models.append((Path(p).stem, Path(p), overrides))

    OUT.mkdir(parents=True, exist_ok=True)
    compile_rooftop()
    results_path = OUT / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name, src, shp in models:
        shape_args = [a for k, v in shp.items() for a in ("--input-shape", f"{k}={'x'.join(map(str, v))}")]
        tl = tools(shape_args)
        if args.tools:
            tl = {k: v for k, v in tl.items() if k in args.tools.split(",")}
        orig = onnx.load(src)
        feeds = feeds_for(orig, shp)
        row = {
            "original": {
                **counts(orig),
                "file_mb": round(src.stat().st_size / 2**20, 2),
                "traffic_bytes": traffic(orig, shp),
            }
        }
        for tool, cmd in tl.items():
            dst = OUT / f"{name}.{tool}.onnx"
            if dst.exists():
                dst.unlink()
            print(f"[{name}] {tool} ...", file=sys.stderr, flush=True)
            r = run_tool(cmd, src, dst)
            if r["ok"]:
                try:
                    r["not_kept"] = not_kept(Path(f"{dst}.json"))
                    opt = onnx.load(dst)
                    r.update(counts(opt))
                    r["file_mb"] = round(sum(f.stat().st_size for f in OUT.glob(f"{name}.{tool}.onnx*")) / 2**20, 2)
                    r["max_abs_diff"] = max_diff(orig, opt, feeds)
                    r["traffic_bytes"] = traffic(opt, shp)
                    if not args.no_latency and tool not in (
                        "rooftop-fast",
                        "rooftop-notime",
                        "rooftop-plain",
                    ):  # same output as "rooftop", only its tool time differs
                        r["latency"] = latency(orig, opt, feeds, args.budget)
                except Exception as e:  # noqa: BLE001
                    r["ok"] = False
                    r["error"] = f"output does not run: {str(e).strip().splitlines()[0][:200]}"
            row[tool] = r
            print(f"[{name}] {tool}: {json.dumps(r)}", file=sys.stderr, flush=True)
        for _ in range(args.repeat - 1):  # the tools again, in the same order: times and RSS only
            for tool, cmd in tl.items():
                dst = OUT / f"{name}.{tool}.again.onnx"
                again = run_tool(cmd, src, dst)
                for f in OUT.glob(f"{name}.{tool}.again.onnx*"):
                    f.unlink()
                if again["ok"] and row[tool].get("ok"):
                    row[tool].setdefault("seconds_all", [row[tool]["seconds"]]).append(again["seconds"])
                    row[tool]["peak_rss_mb"] = max(row[tool]["peak_rss_mb"], again["peak_rss_mb"])
        for r in row.values():
            if "seconds_all" in r:
                r["seconds"] = round(float(np.median(r["seconds_all"])), 2)
        results[name] = row
        results_path.write_text(json.dumps(results, indent=1))
    (OUT / "RESULTS.md").write_text(markdown(results) + "\n" + time_ratios(results))
    print(markdown(results))
    print(time_ratios(results))


def time_ratios(results: dict, base: str = "onnxslim") -> str:
    """Each tool's time over ``base``'s on every model where both succeeded, and the median."""
    tools = sorted({t for row in results.values() for t in row if t not in ("original", base)})
    lines = [f"Tool time / {base} time (median of the runs):", ""]
    for tool in tools:
        ratios = {
            n: row[tool]["seconds"] / row[base]["seconds"]
            for n, row in results.items()
            if row.get(tool, {}).get("ok") and row.get(base, {}).get("ok") and row[base]["seconds"]
        }
        if ratios:
            at_most = sum(v <= 1.0 for v in ratios.values())
            lines.append(
                f"- {tool}: median {np.median(list(ratios.values())):.2f}, at most 1.0 on {at_most} of {len(ratios)}; "
                + ", ".join(f"{n} {v:.2f}" for n, v in ratios.items())
            )
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    import onnxruntime

    try:
        import onnxsim
        import onnxslim

        versions = f"onnxsim {onnxsim.__version__}, onnxslim {onnxslim.__version__}"
    except Exception:  # noqa: BLE001
        versions = ""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} logical cores, Python {platform.python_version()}; "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, {versions}.",
        "",
        "Latency: median of per-round ratios optimized/original, interleaved, with the 95% confidence interval of "
        "the median; `=` noise (within 3% or the CI contains 1.0), `✗` slower. `not kept`: passes rooftop "
        "rejected (measured slower at ORT_ENABLE_ALL, with the ratio), rolled back or backed off.",
        "",
        "| model | tool | ok | time s | RSS MB | nodes | BN | shape ops | Q/DQ "
        "| MB | max diff | traffic MB | DISABLE_ALL | ENABLE_ALL | not kept |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def lat(r, level):
        v = (r.get("latency") or {}).get(level)
        if not v:
            return "-"
        mark = {"faster": "", "slower": " ✗", "noise": " ="}[v["verdict"]]
        return f"{v['ratio']:.2f} ({v['q1']:.2f}-{v['q3']:.2f}){mark}"

    for name, row in results.items():
        o = row["original"]
        tb = o.get("traffic_bytes")
        lines.append(
            f"| {name} | original | | | | {o['nodes']} | {o['bn']} "
            f"| {o['shape_ops']} | {o['qdq']} | {o['file_mb']} | | "
            f"{'-' if tb is None else round(tb / 2**20, 1)} | | | |"
        )
        for tool, r in row.items():
            if tool == "original":
                continue
            if not r.get("ok"):
                lines.append(
                    f"| | {tool} | ✗ {r.get('error', '')[:60]} | {r.get('seconds', '')} "
                    f"| {r.get('peak_rss_mb', '')} | | | | | | | | | | |"
                )
                continue
            tb = r.get("traffic_bytes")
            secs = (
                f"{r['seconds']} ({min(r['seconds_all'])}-{max(r['seconds_all'])})"
                if "seconds_all" in r
                else r["seconds"]
            )
            lines.append(
                f"| | {tool} | ✓ | {secs} | {r['peak_rss_mb']} | {r['nodes']} "
                f"| {r['bn']} | {r['shape_ops']} | {r['qdq']} | "
                f"{r['file_mb']} | {r['max_abs_diff']:.1e} | "
                f"{'-' if tb is None else round(tb / 2**20, 1)} | {lat(r, 'disable')} | {lat(r, 'all')} | "
                f"{'; '.join(r.get('not_kept') or []) if tool.startswith('rooftop') else ''} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
