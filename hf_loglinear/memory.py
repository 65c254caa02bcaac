"""How much memory a model's recurrent state, KV cache and prefill buffers take at a context length.

    hf-loglinear memory CONFIG_OR_MODEL [--seq-len 1024 16384 131072] [--batch 1] [--dtype bfloat16]
    hf-loglinear memory --compare          # the ~800M paper-shape table (presets below)

Everything is counted from the config, exactly as the code allocates it:
- log-linear decode state: ``HierarchicalCache`` holds L fp32 level states of K x V per head and
  layer, whatever the context (plus the position and a per-level decay scale); "live" counts the levels that can be non-empty at that position
  (level 0, one per set bit of the position above the cap, the top), the traffic floor of a step;
- log-linear prefill buffer: the Triton forward records the inter-chunk level states the chunks
  of 64 read (in the input dtype), the largest working buffer of prefill: under the delta rule
  one per chunk and level (T log T; what one pass takes: a dense prefill whose buffer would
  exceed half the free device memory runs in segments bounded by it,
  ``kernels/segments.py``), under scalar decay one per run of chunks reading
  the same state (``levels.scan_slot_sizes``: about one per chunk, linear in T);
- Mamba-2 / Gated DeltaNet: one K x V state per head and layer (fp32) plus conv states;
- Transformer: keys and values of every position, layer and KV head (the input dtype);
- training: the working memory of one layer's sequence-mixing op in a forward + backward (its
  output and output gradient, the backward's buffers and input gradients), as the Triton
  kernels allocate it and as ``bench_kernels.py`` measures it ("peak extra"); for attention,
  flash SDPA's output, gradients and fp32 dq accumulator. The activations every layer keeps for
  its backward (projections, norms, the op's inputs) are alike across the models and depend on
  the checkpointing policy: not modelled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .levels import inter_chunk_scans, levels_for_length, scan_slot_sizes

CHUNK = 64
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Shape:
    """What memory depends on: per layer, H heads of K x V state (0 for attention), L levels,
    conv channels x (kernel - 1), and for attention the KV heads x head dim."""

    name: str
    kind: str  # "loglinear", "linear" or "attention"
    layers: int
    heads: int = 0
    key_dim: int = 0
    value_dim: int = 0
    num_levels: int = 1
    conv_channels: int = 0
    conv_kernel: int = 4
    kv_heads: int = 0
    head_dim: int = 0
    delta_rule: bool = False
    groups: int = 1  # q/k groups (their gradients are per group)


def shape_from_config(config: dict, name: str = "model") -> Shape:
    """A Shape from a config.json dict of ours, transformers' Mamba-2, fla's Gated DeltaNet, or a
    decoder-only Transformer (num_attention_heads / num_key_value_heads)."""
    kind = config.get("model_type", "")
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    if kind in ("loglinear_mamba2", "mamba2"):
        inner = int(config.get("expand", 2) * config["hidden_size"])
        groups, state = config.get("n_groups", 1), config["state_size"]
        return Shape(name, "loglinear" if kind.startswith("loglinear") else "linear", layers, config["num_heads"],
                     state, config["head_dim"], config.get("num_levels", 1), inner + 2 * groups * state,
                     config.get("conv_kernel", 4), groups=groups)
    if kind in ("loglinear_gated_deltanet", "gated_deltanet"):
        heads = config.get("num_heads", 6)
        v_heads = config.get("num_v_heads") or heads
        key_dim = config.get("head_dim", 256)
        value_dim = int(key_dim * config.get("expand_v", 2))
        return Shape(name, "loglinear" if kind.startswith("loglinear") else "linear", layers, v_heads, key_dim,
                     value_dim, config.get("num_levels", 1), 2 * heads * key_dim + v_heads * value_dim,
                     config.get("conv_size", 4), delta_rule=True, groups=heads)
    if "num_attention_heads" in config:
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return Shape(name, "attention", layers, heads, kv_heads=config.get("num_key_value_heads") or heads,
                     head_dim=head_dim)
    raise ValueError(
        f"cannot size model_type {kind!r}: expected loglinear_mamba2, loglinear_gated_deltanet, mamba2, "
        "gated_deltanet, or a Transformer config with num_attention_heads"
    )


def live_levels(position: int, num_levels: int) -> int:
    """Levels that can be non-empty in the state after ``position`` tokens (the decode floor)."""
    if position < 1:
        return 0
    last = position - 1
    live = {0} | {min(b + 1, num_levels - 1) for b in range(last.bit_length()) if (last >> b) & 1}
    return len(live)


def decode_state_bytes(shape: Shape, seq_len: int, batch: int = 1, dtype: str = "bfloat16", live: bool = False) -> int:
    """Bytes a decoder keeps for ``batch`` sequences that have seen ``seq_len`` tokens."""
    if shape.kind == "attention":
        return 2 * shape.layers * shape.kv_heads * shape.head_dim * seq_len * batch * DTYPE_BYTES[dtype]
    levels = 1
    if shape.kind == "loglinear":
        levels = live_levels(seq_len, shape.num_levels) if live else shape.num_levels
    state = shape.heads * levels * shape.key_dim * shape.value_dim * 4
    conv = shape.conv_channels * (shape.conv_kernel - 1) * DTYPE_BYTES[dtype]
    # int64 tokens seen, and the decode step's per-level scale (two halves of L fp32 per head)
    extra = 8 + shape.heads * 2 * shape.num_levels * 4 if shape.kind == "loglinear" else 0
    return shape.layers * batch * (state + conv + extra)


def prefill_buffer_bytes(shape: Shape, seq_len: int, batch: int = 1, dtype: str = "bfloat16") -> int:
    """The log-linear Triton forward's recorded per-chunk level states for one layer (0 otherwise)."""
    if shape.kind != "loglinear":
        return 0
    chunks = -(-seq_len // CHUNK)
    scans, top_exp = inter_chunk_scans(chunks - 1, shape.num_levels, CHUNK)
    slots = chunks * scans if shape.delta_rule else sum(scan_slot_sizes(chunks, scans, top_exp))
    return batch * slots * shape.heads * shape.key_dim * shape.value_dim * DTYPE_BYTES[dtype]


def train_op_bytes(shape: Shape, seq_len: int, batch: int = 1, dtype: str = "bfloat16") -> int:
    """Working memory of one layer's sequence-mixing op in a training step (forward + backward):
    under scalar decay the Triton backward of ``kernels/chunk_triton.py`` (``num_levels=1`` for
    Mamba-2), under the delta rule its Triton backward, for attention flash SDPA. Within 3% of what
    ``bench_kernels.py`` measured on an H200 (log-linear Mamba-2 at 2K x 16 .. 1M tokens, Gated
    DeltaNet at 2K x 16 and 8K x 4) once its 256 MiB L2-flush buffer is added
    (``tests/test_memory.py``). Under the delta rule this is one pass, T log T (70 GiB measured at
    128K, B = 1); an input whose per-chunk states would exceed half the free device memory runs
    in segments that bound them (``kernels/segments.py``: 59 GiB at 1M)."""
    d = DTYPE_BYTES[dtype]
    if shape.kind == "attention":  # o, dO, dq / dk / dv, the fp32 dq accumulator; the fp32 logsumexp
        q_elems = batch * seq_len * shape.heads * shape.head_dim
        kv_elems = batch * seq_len * shape.kv_heads * shape.head_dim
        return q_elems * (3 * d + 4) + 2 * kv_elems * d + batch * seq_len * shape.heads * 4
    chunks = -(-seq_len // CHUNK)
    tokens = batch * chunks * CHUNK  # slots: T rounded up to whole chunks
    heads, key, value, levels = shape.heads, shape.key_dim, shape.value_dim, shape.num_levels
    state = heads * key * value
    scans, top_exp = inter_chunk_scans(chunks - 1, levels, CHUNK)
    per_token = heads * value * d * 3  # o, dO, dv
    per_token += heads * (levels + 5) * 4  # dlambda; G, dg, q.dq - k.dk and its reverse cumsum
    if not shape.delta_rule:
        per_token += shape.groups * key * (2 * 4 + 2 * d)  # dq, dk summed per group in fp32, then cast
        # the recorded states and the reverse scans' gradients of the same slots (both the input dtype)
        return tokens * per_token + batch * sum(scan_slot_sizes(chunks, scans, top_exp)) * state * 2 * d
    # delta rule: W, U, Qt and the per-head fp32 dq, dk, dv; A^-1; recorded states (every chunk
    # and scan, the input dtype); state gradients (scans + 2 slots, fp32); D = [K, K] per chunk
    per_token += heads * (4 * key + 2 * value) * 4 + heads * CHUNK * 4 + shape.groups * key * 2 * d + heads * 2 * 4
    per_chunk = scans * state * d + (scans + 2) * state * 4 + heads * key * key * 4
    return tokens * per_token + batch * chunks * per_chunk


# Paper-size layers of ANCHORS.md in 21-layer ~800M models (hidden 1536).
PRESETS = {
    "loglinear-mamba2": dict(model_type="loglinear_mamba2", hidden_size=1536, expand=2, num_heads=48, head_dim=64,
                             state_size=128, n_groups=1, num_hidden_layers=21, num_levels=15),
    "mamba2": dict(model_type="mamba2", hidden_size=1536, expand=2, num_heads=48, head_dim=64, state_size=128,
                   n_groups=1, num_hidden_layers=21),
    "loglinear-gated-deltanet": dict(model_type="loglinear_gated_deltanet", num_heads=6, head_dim=192, expand_v=2,
                                     num_hidden_layers=21, num_levels=15),
    "gated-deltanet": dict(model_type="gated_deltanet", num_heads=6, head_dim=192, expand_v=2, num_hidden_layers=21),
    "transformer": dict(model_type="llama", hidden_size=1536, num_attention_heads=16, num_key_value_heads=16,
                        head_dim=96, num_hidden_layers=21),
}


def load_shape(source: str) -> Shape:
    """A preset name, a config.json path, or a model folder holding one."""
    if source in PRESETS:
        return shape_from_config(PRESETS[source], source)
    path = Path(source)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise ValueError(f"{source!r} is neither a preset ({', '.join(PRESETS)}) nor a config.json / model folder")
    return shape_from_config(json.loads(path.read_text()), path.parent.name or source)


def _fmt(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def table(shapes: list[Shape], seq_lens: list[int], batch: int, dtype: str) -> str:
    rows = [
        "| model | context | decode state (allocated) | decode state (live levels) | prefill level buffer / layer "
        "| training op fwd+bwd / layer |",
        "|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        for length in seq_lens:
            rows.append(
                f"| {shape.name} | {length} | {_fmt(decode_state_bytes(shape, length, batch, dtype))} "
                f"| {_fmt(decode_state_bytes(shape, length, batch, dtype, live=True))} "
                f"| {_fmt(prefill_buffer_bytes(shape, length, batch, dtype))} "
                f"| {_fmt(train_op_bytes(shape, length, batch, dtype))} |"
            )
    note = (f"batch {batch}, {dtype} activations/KV, fp32 recurrent states; training op = the sequence-mixing "
            "op's working memory in a forward + backward with this package's Triton kernels (Mamba-2 and Gated "
            "DeltaNet: num_levels=1), flash SDPA for attention")
    if any(s.kind == "loglinear" for s in shapes):
        note += f"; {max(levels_for_length(n) for n in seq_lens)} levels would be distinct at {max(seq_lens)} tokens"
    return "\n".join(rows) + f"\n\n{note}"
