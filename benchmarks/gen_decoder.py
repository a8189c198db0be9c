"""Generate a decoder-only transformer as an exported LLM looks (for the LLM-scale work).

    python benchmarks/gen_decoder.py OUT.onnx [--layers 12] [--d 2048] [--ff 5504] [--heads 16]
                                              [--vocab 32000] [--fp16] [--opset 18]

What an `optimum` / `torch.onnx` export of a LLaMA-style decoder has, written with onnx.helper:
dynamic batch, sequence and past length; `past_key_values.{i}.key/value` inputs and
`present.{i}.key/value` outputs (KV cache concatenated on the sequence axis); position ids from the
past length (Shape → Range); a causal mask built from Shape/Range/Less/Where over past + current
positions; rotary embeddings (cos/sin tables gathered by position, rotate-half written out); RMSNorm
written out (Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul); SwiGLU MLP (SiLU as x·Sigmoid(x)); an LM head.
Weights are random (N(0, 0.02²)), written straight to external data one tensor at a time, so a
model of any size is generated in a few hundred MB of memory. Nothing here is committed: the model
is made on the machine that measures it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper


class Writer:
    """Initializers whose bytes go straight to ``<model>.data``: the ModelProto holds references only."""

    def __init__(self, model_path: Path, dtype: np.dtype, seed: int = 0) -> None:
        self.data_name = model_path.name + ".data"
        self.f = open(model_path.parent / self.data_name, "wb")
        self.offset = 0
        self.inits: list[TensorProto] = []
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02, value: float | None = None) -> str:
        a = (
            np.full(shape, value, np.float32)
            if value is not None
            else (self.rng.standard_normal(shape, np.float32) * scale)
        )
        return self.external(name, a.astype(self.dtype))

    def external(self, name: str, a: np.ndarray) -> str:
        t = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(a.dtype), dims=list(a.shape))
        b = np.ascontiguousarray(a).tobytes()
        self.f.write(b)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_name), ("offset", str(self.offset)), ("length", str(len(b)))):
            t.external_data.add(key=k, value=v)
        self.offset += len(b)
        self.inits.append(t)
        return name

    def const(self, name: str, a: np.ndarray) -> str:
        self.inits.append(onnx.numpy_helper.from_array(np.asarray(a), name))
        return name

    def close(self) -> None:
        self.f.close()


class Builder:
    def __init__(self, w: Writer, heads: int, hd: int) -> None:
        self.w, self.heads, self.hd = w, heads, hd
        self.nodes: list[onnx.NodeProto] = []
        self.n = 0

    def op(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.n += 1
        out = name or f"{op.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"/{op}_{self.n}", **attrs))
        return out

    def rmsnorm(self, x: str, g: str, eps: str) -> str:
        p = self.op("Pow", [x, "two"])
        m = self.op("ReduceMean", [p, "axis_last"], keepdims=1)
        r = self.op("Reciprocal", [self.op("Sqrt", [self.op("Add", [m, eps])])])
        return self.op("Mul", [g, self.op("Mul", [x, r])])

    def heads_of(self, t: str, shape_bs: str) -> str:
        """[B, S, D] → [B, H, S, hd] with the target built from the input's run-time shape."""
        r = self.op("Reshape", [t, self.op("Concat", [shape_bs, "heads_hd"], axis=0)])
        return self.op("Transpose", [r], perm=[0, 2, 1, 3])

    def rotary(self, t: str, cos: str, sin: str) -> str:
        x1 = self.op("Slice", [t, "zero1", "half1", "axis_last"])
        x2 = self.op("Slice", [t, "half1", "big1", "axis_last"])
        a = self.op("Sub", [self.op("Mul", [x1, cos]), self.op("Mul", [x2, sin])])
        b = self.op("Add", [self.op("Mul", [x2, cos]), self.op("Mul", [x1, sin])])
        return self.op("Concat", [a, b], axis=-1)


def build(
    path: Path, layers: int, d: int, ff: int, heads: int, vocab: int, fp16: bool, opset: int, max_pos: int = 4096
) -> Path:
    dtype = np.dtype(np.float16 if fp16 else np.float32)
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    hd = d // heads
    w = Writer(path, dtype)
    b = Builder(w, heads, hd)
    for name, v in (
        ("two", np.array(2.0, dtype)),
        ("eps", np.array(1e-6, dtype)),
        ("axis_last", np.array([-1], np.int64)),
        ("heads_hd", np.array([heads, hd], np.int64)),
        ("bsd_tail", np.array([d], np.int64)),
        ("zero1", np.array([0], np.int64)),
        ("half1", np.array([hd // 2], np.int64)),
        ("big1", np.array([2**62], np.int64)),
        ("one_i", np.array(1, np.int64)),
        ("zero_i", np.array(0, np.int64)),
        ("idx2", np.array([2], np.int64)),
        ("ax01", np.array([0, 1], np.int64)),
        ("ax1", np.array([1], np.int64)),
        ("ax0", np.array([0], np.int64)),
        ("scale", np.array(1 / np.sqrt(hd), dtype)),
        ("neg", np.array(-1e4 if fp16 else -1e9, dtype)),
        ("zero_f", np.array(0, dtype)),
    ):
        w.const(name, v)
    inv = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(np.arange(max_pos), inv)
    w.const("cos_table", np.cos(ang).astype(dtype))
    w.const("sin_table", np.sin(ang).astype(dtype))
    emb = w.weight("model.embed_tokens.weight", (vocab, d))

    # shapes, positions and the causal mask, from the run-time shapes (as exporters write them)
    ids_shape = b.op("Shape", ["input_ids"])
    seq = b.op("Gather", [ids_shape, "one_i"], axis=0)
    past = b.op("Gather", [b.op("Shape", ["past_key_values.0.key"]), "idx2"], axis=0)
    past_s = b.op("Squeeze", [past, "ax0"])
    total = b.op("Add", [past_s, seq])
    pos = b.op("Range", [past_s, total, "one_i"])
    cos = b.op("Unsqueeze", [b.op("Gather", ["cos_table", pos], axis=0), "ax01"])
    sin = b.op("Unsqueeze", [b.op("Gather", ["sin_table", pos], axis=0), "ax01"])
    rows = b.op("Unsqueeze", [pos, "ax1"])
    cols = b.op("Unsqueeze", [b.op("Range", ["zero_i", total, "one_i"]), "ax0"])
    mask = b.op("Unsqueeze", [b.op("Where", [b.op("Less", [rows, cols]), "neg", "zero_f"]), "ax01"])
    bs = b.op("Slice", [ids_shape, "zero1", "idx2", "ax0"])  # [B, S]

    x = b.op("Gather", [emb, "input_ids"], axis=0)
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    outputs = []
    for i in range(layers):
        pre = f"model.layers.{i}"
        h = b.rmsnorm(x, w.weight(f"{pre}.input_layernorm.weight", (d,), value=1.0), "eps")
        q = b.rotary(b.heads_of(b.op("MatMul", [h, w.weight(f"{pre}.self_attn.q_proj.weight", (d, d))]), bs), cos, sin)
        k = b.rotary(b.heads_of(b.op("MatMul", [h, w.weight(f"{pre}.self_attn.k_proj.weight", (d, d))]), bs), cos, sin)
        v = b.heads_of(b.op("MatMul", [h, w.weight(f"{pre}.self_attn.v_proj.weight", (d, d))]), bs)
        k_all = b.op("Concat", [f"past_key_values.{i}.key", k], name=f"present.{i}.key", axis=2)
        v_all = b.op("Concat", [f"past_key_values.{i}.value", v], name=f"present.{i}.value", axis=2)
        for kind in ("key", "value"):
            inputs.append(
                helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", elem, ["batch", heads, "past", hd])
            )
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", elem, ["batch", heads, "total", hd]))
        s = b.op(
            "Add", [b.op("Mul", [b.op("MatMul", [q, b.op("Transpose", [k_all], perm=[0, 1, 3, 2])]), "scale"]), mask]
        )
        att = b.op("MatMul", [b.op("Softmax", [s], axis=-1), v_all])
        att = b.op("Reshape", [b.op("Transpose", [att], perm=[0, 2, 1, 3]), b.op("Concat", [bs, "bsd_tail"], axis=0)])
        x = b.op("Add", [x, b.op("MatMul", [att, w.weight(f"{pre}.self_attn.o_proj.weight", (d, d))])])
        h = b.rmsnorm(x, w.weight(f"{pre}.post_attention_layernorm.weight", (d,), value=1.0), "eps")
        gate = b.op("MatMul", [h, w.weight(f"{pre}.mlp.gate_proj.weight", (d, ff))])
        up = b.op("MatMul", [h, w.weight(f"{pre}.mlp.up_proj.weight", (d, ff))])
        act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        x = b.op("Add", [x, b.op("MatMul", [act, w.weight(f"{pre}.mlp.down_proj.weight", (ff, d))])])
    h = b.rmsnorm(x, w.weight("model.norm.weight", (d,), value=1.0), "eps")
    b.op("MatMul", [h, w.weight("lm_head.weight", (d, vocab))], name="logits")
    outputs.insert(0, helper.make_tensor_value_info("logits", elem, ["batch", "seq", vocab]))
    w.close()
    g = helper.make_graph(b.nodes, "decoder", inputs, outputs, w.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="rooftop-gen-decoder")
    m.ir_version = 8 if opset <= 18 else 10
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=5504)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--opset", type=int, default=18)
    a = ap.parse_args()
    path = build(Path(a.out), a.layers, a.d, a.ff, a.heads, a.vocab, a.fp16, a.opset)
    size = os.path.getsize(str(path) + ".data")
    print(f"wrote {path} and {path.name}.data ({size / 1e9:.2f} GB of weights)")


if __name__ == "__main__":
    main()
