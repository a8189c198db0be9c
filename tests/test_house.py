"""The house in order: what the suite itself must guarantee."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this run")
sys.meta_path.insert(0, Block())
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_fusions.py", "tests/test_attention.py"]))
"""


def test_the_fusion_pattern_tests_run_without_torch(tmp_path):
    """The norm, GELU and attention pattern tests are built with onnx.helper: without torch they
    run (only the export tests skip), so the fusions never go green with none of their tests run."""
    res = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "--basetemp", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = res.stdout.strip().splitlines()[-1]
    assert res.returncode == 0, res.stdout[-2000:]
    passed = int(last.split(" passed")[0].split()[-1])
    assert passed >= 20 and "failed" not in last, last


def test_no_class_over_300_lines_and_no_function_over_60():
    """Short functions and classes a reader can hold (the argparse declaration aside)."""
    import ast

    long = []
    for path in sorted((ROOT / "rooftop").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            size = node.end_lineno - node.lineno + 1
            if isinstance(node, ast.ClassDef) and size > 300:
                long.append(f"class {path.name}:{node.name} {size}")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > 60 and node.name != "build_parser":
                long.append(f"def {path.name}:{node.name} {size}")
    assert not long, long
