"""A small decoder LLM from benchmarks/gen_decoder.py (3 MB of weights in external data): weights
stay on disk through the whole run, the written model streams them, the KV-cache interface is kept
and the shape computations an LLM export writes are folded down to the two dynamic reads."""

from __future__ import annotations

import gc
import sys

import numpy as np
import onnx
import pytest
from helpers import ROOT, optimize, run
from onnx import TensorProto

from rooftop import decide, model_io
from rooftop.limits import LAZY_MIN_BYTES
from rooftop.runtime import make_session

sys.path.insert(0, str(ROOT / "benchmarks"))
from gen_decoder import build

LAYERS, D, FF, HEADS, VOCAB = 2, 128, 512, 4, 1000


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    d = tmp_path_factory.mktemp("llm")
    return build(d / "dec.onnx", LAYERS, D, FF, HEADS, VOCAB, fp16=False, opset=18, max_pos=256)


def feeds(seq: int, past: int, batch: int = 1) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seq * 100 + past)
    x = {"input_ids": r.integers(0, VOCAB, (batch, seq)).astype(np.int64)}
    for i in range(LAYERS):
        for kind in ("key", "value"):
            x[f"past_key_values.{i}.{kind}"] = r.standard_normal((batch, HEADS, past, D // HEADS)).astype(np.float32)
    return x


def run_file(path, x):
    sess = make_session(None, path=str(path), prepack=False)
    out = sess.run(None, x)
    del sess
    gc.collect()
    return out


def interface(m: onnx.ModelProto):
    def vi(v):
        return v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return [vi(v) for v in m.graph.input], [vi(v) for v in m.graph.output]


def test_weights_stay_on_disk_and_the_output_streams_them(decoder, tmp_path):
    out = tmp_path / "out.onnx"
    model, report = optimize(decoder, out, lazy_weights=True)
    big = [t for t in model.graph.initializer if model_io.tensor_nbytes(t) >= LAZY_MIN_BYTES]
    assert len(big) == 1 + LAYERS * 7 + 1  # embedding, 7 matrices a layer, LM head
    assert all(t.data_location == TensorProto.EXTERNAL and not t.HasField("raw_data") for t in big)
    assert report.final_check is not None and report.final_check.ok
    assert report.verification.count(" and ") == 1  # verified at two sizes of the dynamic axes
    written = onnx.load(out, load_external_data=False)
    assert {kv.value for t in written.graph.initializer for kv in t.external_data if kv.key == "location"} == {
        "out.onnx.data"
    }
    assert interface(written) == interface(onnx.load(decoder, load_external_data=False))
    for seq, past in ((1, 7), (5, 0), (3, 20)):
        x = feeds(seq, past)
        for got, ref in zip(run_file(out, x), run_file(decoder, x)):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_llm_shape_computations_fold_to_the_dynamic_reads(decoder, tmp_path):
    model, report = optimize(decoder, tmp_path / "out.onnx", lazy_weights=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") == 2  # the sequence length and the past length: nothing else is read at run time
    consts = {t.name for t in model.graph.initializer}
    assert all(n.input[1] in consts for n in model.graph.node if n.op_type == "Reshape")  # every target folded
    concats = [n for n in model.graph.node if n.op_type == "Concat"]
    assert len(concats) == 4 * LAYERS  # the KV cache and rotate-half, two each a layer: no shape vector is built
    assert {f"present.{i}.{k}" for i in range(LAYERS) for k in ("key", "value")} <= {n.output[0] for n in concats}
    chains = next(p for p in report.passes if p.name == "shape-chains")
    assert chains.status == "applied" and chains.verified


def test_a_pass_reads_a_weight_left_on_disk(tmp_path):
    """fold-conv-bn needs the Conv weight's values: a lazy load reads that one tensor from the file."""
    from helpers import init, make_model, vi

    r = np.random.default_rng(0)
    w = r.standard_normal((64, 64, 3, 3)).astype(np.float32)  # 147 KB: left on disk
    nodes = [
        onnx.helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        onnx.helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"]),
    ]
    bn = [init(n, (r.random(64) + 0.5).astype(np.float32)) for n in ("g", "b", "m", "v")]
    m = make_model(nodes, [vi("x", [1, 64, 8, 8])], [vi("y", [1, 64, 8, 8])], [init("w", w), *bn])
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    src = tmp_path / "cbn.onnx"
    onnx.save(m, src, save_as_external_data=True, location="cbn.data", size_threshold=0)
    out = tmp_path / "out.onnx"
    model, report = optimize(src, out, lazy_weights=True)
    fold = next(p for p in report.passes if p.name == "fold-conv-bn")
    assert fold.status == "applied" and fold.rewrites == 1 and fold.verified
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    x = {"x": r.standard_normal((1, 64, 8, 8)).astype(np.float32)}
    from helpers import run

    np.testing.assert_allclose(run_file(out, x)[0], run(ref, x)[0], rtol=1e-4, atol=1e-4)


def test_large_models_are_timed_one_session_at_a_time(decoder, tmp_path, monkeypatch):
    monkeypatch.setattr(decide, "INTERLEAVE_UP_TO", 0)
    built = []
    from rooftop.runtimes.onnxruntime import OnnxRuntime

    orig_load = OnnxRuntime.load

    def counting(self, model, **kw):
        if kw.get("timing"):
            built.append(kw.get("level"))
        return orig_load(self, model, **kw)

    monkeypatch.setattr(OnnxRuntime, "load", counting)
    _, report = optimize(
        decoder, tmp_path / "out.onnx", lazy_weights=True, time=True, time_budget=0.2, profile_nodes=False
    )
    assert any("one session at a time" in w for w in report.warnings)
    assert report.latency and all(
        lat.rounds >= 6 for lat in report.latency.values()
    )  # 2 blocks a model, 3 runs at least
    assert len(built) % 4 == 0 and built  # blocks A B B A, a fresh session each


def test_two_sessions_alive_only_within_the_memory_goal(monkeypatch):
    """From MEMORY_GOAL_FROM of weights, timing interleaves only when what the process holds plus
    two copies of the weights stays within 3x them; under it, it always interleaves."""
    w = np.zeros((256, 1024), np.float32)  # 1 MiB
    m = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
            "g",
            [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
            [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1024])],
            [onnx.numpy_helper.from_array(w, "w")],
        )
    )
    monkeypatch.setattr(decide, "MEMORY_GOAL_FROM", 1 << 20)
    monkeypatch.setattr(model_io, "resident_bytes", lambda: 1 << 20)  # 1 + 2 x 1 MiB: within 3x
    assert not decide.in_turn(m)
    monkeypatch.setattr(model_io, "resident_bytes", lambda: 2 << 20)  # 2 + 2 x 1 MiB: past 3x
    assert decide.in_turn(m)
    monkeypatch.setattr(decide, "MEMORY_GOAL_FROM", 2 << 20)  # a model under the goal's size
    assert not decide.in_turn(m)


def test_resident_bytes_reads_this_process():
    before = model_io.resident_bytes()
    block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched
    assert 10 << 20 < before and model_io.resident_bytes() >= before + (60 << 20)
    del block


def test_report_reads_the_rows_as_blocks(decoder, tmp_path):
    from rooftop.report.text import summary_lines

    _, report = optimize(decoder, tmp_path / "out.onnx", lazy_weights=True)
    groups = report.after.by_layer()
    assert [g.layer for g in groups] == [str(i) for i in range(LAYERS)] + [""]
    head = next(
        r
        for r in report.after.rows
        if r.flops and r.op_type == "MatMul" and r.flops == max(x.flops for x in report.after.rows)
    )
    assert head.layer == ""  # the LM head reads lm_head.weight: outside the blocks
    assert all(
        sum(r.op_type == "MatMul" for r in report.after.rows if r.layer == str(i)) == 9 for i in range(LAYERS)
    )  # 7 weights + 2 attention
    assert any(line.startswith(f"{LAYERS} repeated blocks:") for line in summary_lines(report))


def test_an_inline_model_is_spilled_and_written_inline_again(decoder, tmp_path):
    """Stored as one file: the weights move to a scratch file for the run (each held once, on disk)
    and the output is one file again, its weights streamed in: byte for byte the originals."""
    full = onnx.load(decoder)
    src = tmp_path / "inline.onnx"
    onnx.save(full, src)
    out = tmp_path / "out.onnx"
    model, report = optimize(src, out, lazy_weights=True)
    assert report.final_check is not None and report.final_check.ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inline.onnx", "out.onnx"]
    assert not model_io.has_external_data(model)  # the scratch file is gone: the returned model holds its weights
    written = onnx.load(out)
    onnx.checker.check_model(written)
    assert not model_io.has_external_data(written)
    before = {t.name: t.raw_data for t in full.graph.initializer if len(t.raw_data) >= LAZY_MIN_BYTES}
    after = {t.name: t.raw_data for t in written.graph.initializer if t.name in before}
    assert after == before
    x = feeds(4, 9)
    for got, ref in zip(run_file(out, x), run_file(src, x)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_a_model_of_8_mb_stored_inline_works_from_a_spilled_copy(tmp_path):
    """From SPILL_FROM_BYTES of weights an inline model is spilled by default (resnet18, 45 MB:
    half the peak memory, and faster); under it, it is not. Either way the BN is folded and the
    output is one file that computes what the original does."""
    r = np.random.default_rng(0)
    stages: dict[int, list[str]] = {}
    for c in (512, 128):  # 512: 9.4 MB of conv weight; 128: 0.6 MB
        w = r.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.01
        bn = [np.abs(r.standard_normal(c)).astype(np.float32) + 0.5 for _ in range(4)]
        m = onnx.helper.make_model(
            onnx.helper.make_graph(
                [
                    onnx.helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                    onnx.helper.make_node("BatchNormalization", ["c", "g", "b", "mu", "var"], ["y"]),
                ],
                "g",
                [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
                [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 8, 8])],
                [onnx.numpy_helper.from_array(a, n) for a, n in zip([w] + bn, ["w", "g", "b", "mu", "var"])],
            ),
            opset_imports=[onnx.helper.make_opsetid("", 17)],
        )
        m.ir_version = 8
        src, out = tmp_path / f"c{c}.onnx", tmp_path / f"o{c}.onnx"
        onnx.save(m, src)
        seen = stages.setdefault(c, [])
        model, report = optimize(src, out, on_stage=seen.append)
        assert [n.op_type for n in model.graph.node] == ["Conv"] and report.final_check.ok
        assert not model_io.has_external_data(onnx.load(out, load_external_data=False))
        x = {"x": r.standard_normal((1, c, 8, 8)).astype(np.float32)}
        np.testing.assert_allclose(run(onnx.load(out), x)[0], run(m, x)[0], rtol=1e-4, atol=1e-4)
    assert any(s.startswith("moving the weights to a scratch file") for s in stages[512])
    assert not any(s.startswith("moving the weights") for s in stages[128])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c128.onnx", "c512.onnx", "o128.onnx", "o512.onnx"]


def test_weights_on_disk_fold_as_inline_ones_do(tmp_path):
    """A weight left on disk under the fold limit is read in for onnxsim: Transpose(w) feeding a
    MatMul folds whether the model is stored inline or with external data (spilled or not), and
    a weight onnxsim returns untouched refers to its bytes on disk again."""
    r = np.random.default_rng(1)
    wt = r.standard_normal((256, 512)).astype(np.float32)  # 512 KB: under the 1 MB fold limit
    w2 = r.standard_normal((256, 256)).astype(np.float32)  # 256 KB: read as it is
    m = onnx.helper.make_model(
        onnx.helper.make_graph(
            [
                onnx.helper.make_node("Transpose", ["wt"], ["w"], perm=[1, 0]),
                onnx.helper.make_node("MatMul", ["x", "w"], ["h"]),
                onnx.helper.make_node("MatMul", ["h", "w2"], ["y"]),
            ],
            "g",
            [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 512])],
            [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 256])],
            [onnx.numpy_helper.from_array(wt, "wt"), onnx.numpy_helper.from_array(w2, "w2")],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 17)],
    )
    m.ir_version = 8
    ref = onnx.ModelProto()
    ref.CopyFrom(m)
    src = tmp_path / "ext.onnx"
    onnx.save(m, src, save_as_external_data=True, location="ext.data", size_threshold=1024)
    x = {"x": r.standard_normal((2, 512)).astype(np.float32)}
    model, report = optimize(src, tmp_path / "out.onnx", lazy_weights=True, passes=["simplify"])
    assert [n.op_type for n in model.graph.node] == ["MatMul", "MatMul"]
    on_disk = {t.name for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert on_disk == {"w2"}  # the folded weight is new; the untouched one still refers to ext.data
    np.testing.assert_allclose(run_file(tmp_path / "out.onnx", x)[0], run(ref, x)[0], rtol=1e-4, atol=1e-4)


def test_kv_cache_attention_is_fused_at_opset_23(decoder, tmp_path):
    out = tmp_path / "out.onnx"
    model, report = optimize(decoder, out, opset=23)
    fused = next(p for p in report.passes if p.name == "attention-fusion")
    assert (
        fused.status == "applied" and fused.counts == {"attention-into-Attention-with-cache": LAYERS} and fused.verified
    )
    att = [n for n in model.graph.node if n.op_type == "Attention"]
    # past in, present out: the op concatenates the cache itself, and the mask goes in as it is
    assert [(n.input[4], n.output[1]) for n in att] == [
        (f"past_key_values.{i}.key", f"present.{i}.key") for i in range(LAYERS)
    ]
    assert "Softmax" not in {n.op_type for n in model.graph.node}
    norms = next(p for p in report.passes if p.name == "norm-fusion")
    assert norms.counts == {"rmsnorm-into-RMSNormalization": 2 * LAYERS + 1}
    written = onnx.load(out, load_external_data=False)
    assert interface(written) == interface(onnx.load(decoder, load_external_data=False))
    for seq, past in ((1, 7), (5, 0), (3, 20)):
        x = feeds(seq, past)
        for got, ref in zip(run_file(out, x), run_file(decoder, x)):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_kv_cache_attention_below_opset_23_is_multiheadattention_with_past(decoder, tmp_path):
    """Below opset 23, for onnxruntime, every cached attention (the rotary halves concatenated
    before the product) becomes com.microsoft MultiHeadAttention with past in and present out;
    only the first RMSNorm (of the embeddings, no residual sum) names the opset it needs."""
    from rooftop.report.text import opset_line

    out = tmp_path / "ort.onnx"
    model, report = optimize(decoder, out, target="onnxruntime")
    fused = next(p for p in report.passes if p.name == "attention-fusion")
    assert fused.counts == {"attention-into-MultiHeadAttention-with-cache": LAYERS} and not fused.refusals
    assert fused.verified
    mha = [n for n in model.graph.node if n.op_type == "MultiHeadAttention"]
    assert [(n.input[6], n.input[7], n.output[1], n.output[2]) for n in mha] == [
        (f"past_key_values.{i}.key", f"past_key_values.{i}.value", f"present.{i}.key", f"present.{i}.value")
        for i in range(LAYERS)
    ]
    assert "Softmax" not in {n.op_type for n in model.graph.node}
    # the norms of residual sums need no opset for onnxruntime; the first (of the embeddings) does
    norms = next(p for p in report.passes if p.name == "norm-fusion")
    assert norms.counts == {"add-rmsnorm-into-SkipSimplifiedLayerNormalization": 2 * LAYERS} and norms.verified
    assert opset_line(report) == "a higher opset would enable: RMSNormalization ×1 (--opset 23 enables all of them)"
    for seq, past in ((1, 7), (5, 0), (3, 20)):
        x = feeds(seq, past)
        for got, ref in zip(run_file(out, x), run_file(decoder, x)):
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_torch_llama_export_with_kv_cache_fuses_attention_and_norms(tmp_path, exporter):
    """A LLaMA-style module with an explicit KV cache (models/archs.py), exported by torch: at
    opset 23 every attention (rotary q/k, cache concatenated, additive causal mask) becomes
    Attention with past/present and every RMSNorm RMSNormalization; equal to torch at three
    (sequence, past) lengths."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "models"))
    import archs

    torch.manual_seed(0)
    net = archs.LlamaDecoder(layers=2).eval()
    src = archs.export_llama(net, tmp_path / "m.onnx", exporter=exporter)
    out, report = optimize(src, opset=23)
    fused = next(p for p in report.passes if p.name == "attention-fusion")
    assert fused.counts == {"attention-into-Attention-with-cache": 2} and fused.verified
    norms = next(p for p in report.passes if p.name == "norm-fusion")
    assert norms.counts == {"rmsnorm-into-RMSNormalization": 5} and norms.verified  # 2 a layer + the final one
    types = {n.op_type for n in out.graph.node}
    assert not types & {"Softmax", "ReduceMean", "Sqrt", "Pow", "Reciprocal"}
    names = [i.name for i in out.graph.input]
    for seq, past in ((1, 7), (4, 2), (6, 1)):
        ids = torch.randint(0, 256, (1, seq))
        cache = [torch.randn(1, 4, past, 16) for _ in range(4)]
        with torch.no_grad():
            want = net(ids, *cache)
        got = run(out, dict(zip(names, [ids.numpy()] + [c.numpy() for c in cache], strict=True)))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
