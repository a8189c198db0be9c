"""Every way the input or output can be wrong: one line, a documented exit code, no traceback,
and the input file byte-identical afterwards."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import MODELS, cli, init, make_model, vi
from onnx import helper

SAMPLE = MODELS / "resnet_bn.onnx"


def digest(p: Path) -> str | None:
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def assert_one_line_error(res, code: int, *needles: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


def run_bad(path: Path, out: Path, code: int, *needles: str) -> None:
    before = digest(path)
    res = cli(str(path), "-o", str(out))
    assert_one_line_error(res, code, *needles)
    assert digest(path) == before
    assert not out.exists()


def test_missing_path(tmp_path):
    run_bad(tmp_path / "nope.onnx", tmp_path / "o.onnx", 2, "nope.onnx", "no such file")


def test_directory(tmp_path):
    d = tmp_path / "dir.onnx"
    d.mkdir()
    run_bad(d, tmp_path / "o.onnx", 2, "dir.onnx", "directory")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    run_bad(p, tmp_path / "o.onnx", 2, "empty.onnx", "empty")


def test_random_bytes(tmp_path):
    p = tmp_path / "random.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    run_bad(p, tmp_path / "o.onnx", 2, "random.onnx", "not")


def test_truncated_model(tmp_path):
    p = tmp_path / "trunc.onnx"
    data = SAMPLE.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    run_bad(p, tmp_path / "o.onnx", 2, "trunc.onnx")


def test_text_file_named_onnx(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\nbut a text file\n")
    run_bad(p, tmp_path / "o.onnx", 2, "notes.onnx")


def test_dangling_input(tmp_path):
    m = make_model([helper.make_node("Relu", ["ghost"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])])
    p = tmp_path / "dangling.onnx"
    onnx.save(m, p)
    run_bad(p, tmp_path / "o.onnx", 2, "dangling.onnx", "invalid")


def test_opset_too_new(tmp_path):
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4])], [vi("y", [1, 4])])
    m.opset_import[0].version = onnx.defs.onnx_opset_version() + 5
    p = tmp_path / "future.onnx"
    onnx.save(m, p)
    run_bad(p, tmp_path / "o.onnx", 2, "future.onnx", "opset")


def test_missing_external_data(tmp_path):
    w = np.ones((64, 64), np.float32)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w)]
    )
    p = tmp_path / "ext.onnx"
    onnx.save(m, p, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    run_bad(p, tmp_path / "o.onnx", 2, "ext.onnx", "external data", "missing")


def _external_model(folder: Path) -> Path:
    w = np.ones((64, 64), np.float32)
    m = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w)]
    )
    p = folder / "ext.onnx"
    onnx.save(m, p, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    return p


def _point_at(model_path: Path, location: str) -> None:
    m = onnx.load(model_path, load_external_data=False)
    for kv in m.graph.initializer[0].external_data:
        if kv.key == "location":
            kv.value = location
    model_path.write_bytes(m.SerializeToString())


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_model_folder(tmp_path, where):
    """A model must not make the tool read a file outside its folder: one line, exit 2."""
    d = tmp_path / "model"
    d.mkdir()
    p = _external_model(d)
    secret = tmp_path / "secret.bin"
    shutil.move(d / "ext.onnx.data", secret)
    if where == "parent":
        _point_at(p, "../secret.bin")
    elif where == "absolute":
        _point_at(p, str(secret))
    else:
        os.symlink(secret, d / "ext.onnx.data")
    run_bad(
        p,
        tmp_path / "o.onnx",
        2,
        "ext.onnx",
        "external data",
        "symlink" if where == "symlink" else "outside the model's folder",
    )


def test_missing_output_folder(tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "o.onnx"
    res = cli(str(SAMPLE), "-o", str(out))
    assert_one_line_error(res, 2, "does not exist")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder(tmp_path):  # pragma: no cover - CI runs as root
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    res = cli(str(SAMPLE), "-o", str(d / "o.onnx"))
    assert_one_line_error(res, 2, "not writable")


def test_unwritable_output_file(tmp_path):
    """Root ignores permission bits, so make the output path unwritable another way: a file as folder."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = cli(str(SAMPLE), "-o", str(blocker / "o.onnx"))
    assert_one_line_error(res, 2, "does not exist")


def test_output_equal_to_input(tmp_path):
    p = tmp_path / "model.onnx"
    shutil.copy(SAMPLE, p)
    before = digest(p)
    res = cli(str(p), "-o", str(p))
    assert_one_line_error(res, 2, "input")
    assert digest(p) == before


def test_output_equal_to_input_with_force(tmp_path):
    p = tmp_path / "model.onnx"
    shutil.copy(SAMPLE, p)
    res = cli(str(p), "-o", str(p), "--force")
    assert res.returncode == 0, res.stderr
    m = onnx.load(p)
    assert "BatchNormalization" not in [n.op_type for n in m.graph.node]


def test_unknown_pass(tmp_path):
    res = cli(str(SAMPLE), "-o", str(tmp_path / "o.onnx"), "--passes", "cleanup,warp-drive")
    assert_one_line_error(res, 2, "warp-drive")


def test_bad_input_shape(tmp_path):
    res = cli(str(SAMPLE), "-o", str(tmp_path / "o.onnx"), "--input-shape", "input=1xAx3")
    assert_one_line_error(res, 2, "--input-shape")


def test_input_shape_unknown_name(tmp_path):
    res = cli(str(SAMPLE), "-o", str(tmp_path / "o.onnx"), "--input-shape", "images=1x3x32x32")
    assert_one_line_error(res, 2, "images")


def test_bad_report_extension(tmp_path):
    res = cli(str(SAMPLE), "-o", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "r.txt"))
    assert_one_line_error(res, 2, "r.txt")
    assert not (tmp_path / "o.onnx").exists()


def test_debug_shows_traceback(tmp_path):
    res = cli(str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "o.onnx"), "--debug")
    assert res.returncode == 2
    assert "Traceback" in res.stderr
