"""Can an ONNX Runtime engine embed a serve query in under 5 ms? Latency and agreement against the numpy embedder.

Builds the all-MiniLM-L6-v2 forward pass of `BertEmbedder` as an ONNX graph from the same weights
(with `onnx.helper`; no download, no torch), runs it with onnxruntime on the CPU in float32 and in
int8 (`onnxruntime.quantization.quantize_dynamic`), with 1 and 2 intra-op threads, and prints:

- the vectors' agreement with numpy's: cosine per query, and top-3 retrieval agreement over the
  queries and strategies of `benchmarks/retrieval_agreement.py`; beside the engines, the fp32
  graph with its weights rounded to int8 and back (per channel, and per block of 32 rows, finer
  than any int8 kernel here), activations left in float: the most any int8 engine could agree;
- per-query latency (wall, and CPU) for the queries `coachlab serve` embeds in `benchmarks/serve.py`
  (`situation_from_messages` of its chat requests: three lines, 42-56 tokens), every engine
  interleaved in one loop, repeated in rounds, so a busy machine slows them alike and the ratios
  hold; then per query in passes of 16.

Needs `onnx` and `onnxruntime`, which coachlab does not depend on: `pip install onnxruntime
"onnx<1.23"` (onnx 1.23 needs protobuf 6.31 or newer, autogen-core pins protobuf 5.29).

Run:
    .venv/bin/python benchmarks/embedder_engines.py
    .venv/bin/python benchmarks/embedder_engines.py --rounds 5 --queries 60
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from coachlab.library import situation_text
from coachlab.library.coaching import situation_from_messages
from coachlab.library.embedding import BertEmbedder, load_embedder

sys.path.insert(0, str(Path(__file__).parent))
from retrieval_agreement import agreement, scenario_dialogues  # sibling scripts, not a package
from serve import CONVERSATIONS, SITUATIONS, SYSTEM

MS = "com.microsoft"
Norm = tuple[NDArray[np.float32], NDArray[np.float32]]


def bert_graph(
    embedder: BertEmbedder,
    *,
    fused: bool = False,
    weight: Callable[[NDArray[np.float32]], NDArray[np.float32]] = lambda w: w,
) -> onnx.ModelProto:
    """The forward pass of `embedder` (up to the token states) as an ONNX model: ids, mask -> (b, t, h).

    Args:
        embedder: The numpy embedder whose weights the graph holds.
        fused: Use onnxruntime's fused BERT operators (Attention, SkipLayerNormalization, BiasGelu).
        weight: Applied to each matrix of the linear layers (e.g. rounding to int8 and back).
    """
    cfg = embedder.config
    h, heads = cfg.hidden_size, cfg.num_attention_heads
    d = h // heads
    eps = cfg.layer_norm_eps
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, array: NDArray[np.generic]) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op: str, inputs: Sequence[str], output: str, *, domain: str = "", **attrs: object) -> str:
        nodes.append(helper.make_node(op, list(inputs), [output], name=output, domain=domain, **attrs))
        return output

    def linear(x: str, w: NDArray[np.float32], b: NDArray[np.float32], name: str) -> str:
        y = node("MatMul", [x, const(f"{name}.w", weight(w))], f"{name}.mm")
        return node("Add", [y, const(f"{name}.b", b)], name)

    def norm(x: str, weights: Norm, name: str) -> str:
        scale, bias = const(f"{name}.g", weights[0]), const(f"{name}.beta", weights[1])
        return node("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=eps)

    def skip_norm(x: str, skip: str, bias: NDArray[np.float32], weights: Norm, name: str) -> str:
        gamma, beta = const(f"{name}.g", weights[0]), const(f"{name}.beta", weights[1])
        inputs = [x, skip, gamma, beta, const(f"{name}.bias", bias)]
        return node("SkipLayerNormalization", inputs, name, domain=MS, epsilon=eps)

    const("zero", np.array([0], dtype=np.int64))
    const("heads_shape", np.array([0, 0, heads, d], dtype=np.int64))
    const("hidden_shape", np.array([0, 0, h], dtype=np.int64))
    width = node("Shape", ["input_ids"], "width", start=1, end=2)
    positions = node("Slice", [const("position", embedder.position), "zero", width, "zero"], "positions")
    x = node("Gather", [const("word", np.asarray(embedder.word)), "input_ids"], "words")
    x = node("Add", [x, positions], "embed.pos")
    x = node("Add", [x, const("token_type", embedder.token_type)], "embed.type")
    x = norm(x, embedder.norm, "embed.norm")
    if fused:
        mask32 = node("Cast", ["attention_mask"], "mask32", to=TensorProto.INT32)
    else:  # (1 - mask) * -1e9 added to the attention scores, as numpy's `_forward` does
        maskf = node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT)
        inverted = node("Sub", [const("onef", np.array(1, dtype=np.float32)), maskf], "inverted")
        padding = node("Mul", [inverted, const("masked", np.array(-1e9, dtype=np.float32))], "padding2d")
        padding = node("Unsqueeze", [padding, const("axes12", np.array([1, 2], dtype=np.int64))], "padding")
    for i, layer in enumerate(embedder.layers):
        p = f"l{i}"
        if fused:  # onnxruntime's own BERT kernels: one Attention op, Add + LayerNorm as SkipLayerNormalization
            qkv_w, qkv_b = const(f"{p}.qkv.w", weight(layer.qkv_w)), const(f"{p}.qkv.b", layer.qkv_b)
            context = node(
                "Attention", [x, qkv_w, qkv_b, mask32], f"{p}.attn", domain=MS, num_heads=heads, scale=1.0
            )  # the embedder's query weights are already scaled by 1 / sqrt(head size)
            y = node("MatMul", [context, const(f"{p}.out.w", weight(layer.out_w))], f"{p}.out.mm")
            x = skip_norm(y, x, layer.out_b, layer.norm1, f"{p}.norm1")
            inner = node("MatMul", [x, const(f"{p}.up.w", weight(layer.up_w))], f"{p}.up.mm")
            inner = node("BiasGelu", [inner, const(f"{p}.up.b", layer.up_b)], f"{p}.gelu", domain=MS)
            y = node("MatMul", [inner, const(f"{p}.down.w", weight(layer.down_w))], f"{p}.down.mm")
            x = skip_norm(y, x, layer.down_b, layer.norm2, f"{p}.norm2")
            continue
        q, k, v = (
            linear(x, layer.qkv_w[:, j * h : (j + 1) * h], layer.qkv_b[j * h : (j + 1) * h], f"{p}.{n}")
            for j, n in enumerate("qkv")
        )
        q = node("Transpose", [node("Reshape", [q, "heads_shape"], f"{p}.q4")], f"{p}.qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, "heads_shape"], f"{p}.k4")], f"{p}.kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, "heads_shape"], f"{p}.v4")], f"{p}.vt", perm=[0, 2, 1, 3])
        scores = node("Add", [node("MatMul", [q, k], f"{p}.attn.scores"), padding], f"{p}.attn.masked")
        probs = node("Softmax", [scores], f"{p}.attn.probs", axis=-1)
        context = node("MatMul", [probs, v], f"{p}.attn.context")
        context = node("Transpose", [context], f"{p}.attn.ct", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, "hidden_shape"], f"{p}.attn.c3")
        y = node("Add", [linear(context, layer.out_w, layer.out_b, f"{p}.out"), x], f"{p}.res1")
        x = norm(y, layer.norm1, f"{p}.norm1")
        inner = node("Gelu", [linear(x, layer.up_w, layer.up_b, f"{p}.up")], f"{p}.gelu", domain=MS)
        y = node("Add", [linear(inner, layer.down_w, layer.down_b, f"{p}.down"), x], f"{p}.res2")
        x = norm(y, layer.norm2, f"{p}.norm2")
    nodes.append(helper.make_node("Identity", [x], ["states"], name="states"))
    graph = helper.make_graph(
        nodes,
        "bert",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"]),
        ],
        [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "tokens", h])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


class OrtEngine:
    """`BertEmbedder.embed` with the forward pass in an onnxruntime session (tokenizing and pooling as numpy's)."""

    def __init__(self, embedder: BertEmbedder, path: Path, threads: int) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.embedder = embedder

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        e = self.embedder
        ids = [x.ids for x in e.tokenizer.encode_batch(list(texts))]
        width = max(len(x) for x in ids)
        batch = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for r, row in enumerate(ids):
            batch[r, : len(row)] = row
            mask[r, : len(row)] = 1
        states = self.session.run(["states"], {"input_ids": batch, "attention_mask": mask})[0]
        m = mask.astype(np.float32)
        pooled = (m[:, None, :] @ states)[:, 0, :] / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


def serve_queries(n: int) -> list[str]:
    """The queries `coachlab serve` embeds for the serve benchmark's requests (see `request_bytes`)."""
    out: list[str] = []
    for index in range(n):
        lines = CONVERSATIONS[index % len(CONVERSATIONS)]
        messages = [{"role": "system", "content": SYSTEM}]
        messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(lines)]
        messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']} (ticket {100000 + index})"}
        out.append(situation_from_messages(messages))
    return out


def timed(fn: Callable[[], object], *, all_threads: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of `fn()`: the calling thread's CPU, or the whole process's with `all_threads`."""
    clock = time.process_time if all_threads else time.thread_time
    wall, cpu = time.perf_counter(), clock()
    fn()
    return time.perf_counter() - wall, clock() - cpu


def rounded_per_channel(w: NDArray[np.float32]) -> NDArray[np.float32]:
    """`w` rounded to symmetric int8 per output column and back: the weights of a per-channel int8 engine."""
    scale = np.abs(w).max(axis=0, keepdims=True) / 127
    return (np.round(w / scale) * scale).astype(np.float32)


def rounded_blocks(w: NDArray[np.float32], size: int = 32) -> NDArray[np.float32]:
    """`w` rounded to asymmetric 8 bits per block of `size` rows of each column and back (finer than int8 GEMMs)."""
    blocks = w.reshape(w.shape[0] // size, size, w.shape[1])
    low, high = np.minimum(blocks.min(1, keepdims=True), 0), np.maximum(blocks.max(1, keepdims=True), 0)
    scale = (high - low) / 255 + 1e-12
    zero = np.round(-low / scale)
    return ((np.clip(np.round(blocks / scale) + zero, 0, 255) - zero) * scale).reshape(w.shape).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Timing rounds (each runs every engine on every query).")
    parser.add_argument("--queries", type=int, default=40, help="Serve queries per round (distinct tickets).")
    parser.add_argument("--k", type=int, default=3, help="Strategies shown per turn, at most.")
    parser.add_argument("--floor", type=float, default=0.4, help="Lowest score shown.")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the quantizer's advice to pre-process and its shape-inference notes
    ort.set_default_logger_severity(3)

    embedder = load_embedder()
    print(
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[str, Path] = {}

        def save(name: str, model: onnx.ModelProto) -> Path:
            files[name] = Path(tmp) / f"{name}.onnx"
            onnx.save(model, files[name])
            return files[name]

        start = time.perf_counter()
        fp32 = save("fp32", bert_graph(embedder))
        built = time.perf_counter() - start
        save("fp32 fused", bert_graph(embedder, fused=True))
        save("int8 weights alone, per channel", bert_graph(embedder, weight=rounded_per_channel))
        save("int8 weights alone, blocks of 32", bert_graph(embedder, weight=rounded_blocks))
        # Only the linear layers' weights: the attention products (two activations) and the word table stay float.
        attention = [f"l{i}.attn.{n}" for i in range(len(embedder.layers)) for n in ("scores", "context")]
        extra = {"DefaultTensorType": TensorProto.FLOAT}  # shape inference stops at com.microsoft's Gelu
        start = time.perf_counter()
        for name, per_channel in (("int8 per tensor", False), ("int8 per channel", True)):
            files[name] = Path(tmp) / f"{name}.onnx"
            quantize_dynamic(
                fp32,
                files[name],
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=attention,
                extra_options=extra,
            )
        quantized = (time.perf_counter() - start) / 2
        print(
            f"graph built in {built:.1f} s ({fp32.stat().st_size / 1e6:.0f} MB), quantized in {quantized:.1f} s "
            f"({files['int8 per channel'].stat().st_size / 1e6:.0f} MB)"
        )
        sessions = {name: OrtEngine(embedder, path, 1) for name, path in files.items()}

        # Agreement: the retrieval_agreement queries (scenarios + serve conversations), one at a time.
        dialogues = scenario_dialogues()
        dialogues += [[("customer" if i % 2 == 0 else "agent", t) for i, t in enumerate(c)] for c in CONVERSATIONS]
        queries = list(dict.fromkeys(situation_text(d) for d in dialogues))
        strategies = embedder.embed([text for _, text in SITUATIONS])
        tokens = [len(x.ids) for x in embedder.tokenizer.encode_batch(queries)]
        reference = np.stack([embedder.embed([q])[0] for q in queries])
        ranked = -np.sort(-(reference @ strategies.T), axis=1)
        gap = ranked[:, 2] - ranked[:, 3]  # a score change larger than this can swap the 3rd and 4th strategy
        print(
            f"\nagreement with numpy: {len(queries)} queries ({np.mean(tokens):.0f} tokens on average), "
            f"{len(strategies)} strategies, k {args.k}, floor {args.floor}; numpy's 3rd and 4th scores are within "
            f"0.01 on {np.mean(gap < 0.01):.0%} of queries, within 0.003 on {np.mean(gap < 0.003):.0%}"
        )
        for name, engine in sessions.items():
            vectors = np.stack([engine.embed([q])[0] for q in queries])
            cosine = np.einsum("ij,ij->i", reference, vectors)
            print(
                f"  {name:<34} cosine min {cosine.min():.5f} mean {cosine.mean():.5f}  "
                f"{agreement(reference, vectors, strategies, args.k, args.floor)}"
            )

        # Latency: every engine on each query in turn, rounds repeated.
        engines: dict[str, Callable[[Sequence[str]], NDArray[np.float32]]] = {"numpy": embedder.embed}
        for name in ("fp32", "fp32 fused", "int8 per tensor", "int8 per channel"):
            engines[f"ort {name}"] = sessions[name].embed
        engines["ort fp32, 2 threads"] = OrtEngine(embedder, files["fp32"], 2).embed
        engines["ort int8 per channel, 2 threads"] = OrtEngine(embedder, files["int8 per channel"], 2).embed
        serve = serve_queries(args.queries)
        tokens = [len(x.ids) for x in embedder.tokenizer.encode_batch(serve)]
        print(
            f"\nlatency: {len(serve)} serve queries ({np.mean(tokens):.0f} tokens on average) one at a time, "
            f"engines interleaved, {args.rounds} rounds; CPU is the calling thread's (all threads' for 2 threads)"
        )
        for embed in engines.values():  # warm up
            embed(serve[:2])
        walls: dict[str, list[float]] = {name: [] for name in engines}
        cpus: dict[str, list[float]] = {name: [] for name in engines}
        for r in range(args.rounds):
            for query in serve:
                for name, embed in engines.items():
                    wall, cpu = timed(lambda embed=embed, query=query: embed([query]), all_threads="2 threads" in name)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
            print(
                f"  round {r + 1}, p50 wall ms: "
                + ", ".join(f"{name} {statistics.median(walls[name][-len(serve) :]) * 1000:.1f}" for name in engines)
            )
        base = statistics.median(walls["numpy"])
        print(f"  {'engine':<34}{'p50 wall ms':>12}{'p90 wall ms':>12}{'p50 CPU ms':>12}{'numpy / engine (p50)':>22}")
        for name in engines:
            w = sorted(walls[name])
            print(
                f"  {name:<34}{statistics.median(w) * 1000:>12.2f}{w[int(0.9 * (len(w) - 1))] * 1000:>12.2f}"
                f"{statistics.median(cpus[name]) * 1000:>12.2f}{base / statistics.median(w):>21.2f}x"
            )
        batch = serve[:16]
        per: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(max(3, args.rounds)):
            for name, embed in engines.items():
                per[name].append(timed(lambda embed=embed: embed(batch))[0] / len(batch))
        print(
            "  in passes of 16 (as the MicroBatcher joins concurrent requests), wall ms per query, median: "
            + ", ".join(f"{name} {statistics.median(v) * 1000:.1f}" for name, v in per.items())
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
