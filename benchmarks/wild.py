"""Models we did not make, through `optimize` as a user runs it: the models shipped in the onnx and
onnxruntime wheels (onnx's backend test data "light" zoo CNNs, onnxruntime's datasets).

    python benchmarks/wild.py [--target portable] [--budget 1] [--extra a.onnx b.onnx]

Each model runs in its own process with the default options (verification, measurement deciding at
ORT_ENABLE_ALL); the table records the exit status, what was rolled back or rejected and why, the
verification, and the final model against the original at ORT_ENABLE_ALL (median per-round ratio,
95% CI) as rooftop's report measured it. Nothing is cached or committed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wheel_models() -> list[Path]:
    import onnx
    import onnxruntime

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    ds = Path(onnxruntime.__file__).parent / "datasets"
    return sorted(light.glob("*.onnx")) + sorted(ds.glob("*.onnx"))


def run(src: Path, target: str, budget: float, out_dir: Path) -> dict:
    dst, rep = out_dir / f"{src.stem}.onnx", out_dir / f"{src.stem}.json"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "rooftop", str(src), "-o", str(dst), "--report", str(rep), "-q",
                        "--target", target, "--time-budget", str(budget), "--hardware", "xeon-avx512"],
                       capture_output=True, text=True, timeout=1800)
    row = {"model": src.stem, "exit": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
           "stderr": p.stderr.strip().splitlines()[-1][:160] if p.stderr.strip() else ""}
    if rep.exists():
        r = json.loads(rep.read_text())
        row["nodes"] = f"{r['model']['nodes']}→{r['output']['nodes']}"
        row["verified"] = r["verification"]["description"][:90]
        row["not kept"] = "; ".join(f"{p['name']} {p['status']}: {p['reason'][:70]}" for p in r["passes"]
                                    if p["status"] in ("rolled back", "rejected", "skipped"))
        lat = (r.get("latency") or {}).get("all") or {}
        row["ENABLE_ALL"] = (f"{lat['latency_ratio']:.2f} [{lat['latency_ci'][0]:.2f}–{lat['latency_ci'][1]:.2f}] {lat['latency_verdict']}"
                             if lat else "-")
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="portable")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--extra", nargs="*", default=[])
    args = ap.parse_args()
    cols = ["model", "exit", "seconds", "nodes", "verified", "not kept", "ENABLE_ALL", "stderr"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory() as d:
        for src in wheel_models() + [Path(p) for p in args.extra]:
            row = run(src, args.target, args.budget, Path(d))
            print("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
