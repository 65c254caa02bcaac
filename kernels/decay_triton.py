"""Triton: the chunk-local cumulative log decay G and each chunk's total, stage 1 of ``chunk_triton``.

For log decays g in slots ``[N, S, H]`` (S = NC * C, chunk-aligned, null slots zero)::

    G[n, c*C + t, h] = sum_{s <= t} g[n, c*C + s, h]      (inclusive, within chunk c)
    total[n, c, h]   = G[n, c*C + C - 1, h]

both in the accumulation dtype. Grid ``(N * NC, H / BH)``: one program loads its chunk's [C, BH]
tile (contiguous in memory: the chunk's C slots of H heads) and scans it along the tokens for
every head at once. torch's cumsum over the chunk dimension of a [N, NC, C, H] view took ~27 us
a call on an H200 at 2K x 16 x 48 heads (``tensor_kernel_scan_outer_dim``), twice per training
step, for ~6 MB of traffic. The totals (G's last slot per chunk, a strided slice before) are
written in the same pass, contiguous. The float64 exclusive sum of the totals across chunks (``chunk_g``) stays
in torch: it runs along a whole row. sm_90 offline (triton 3.9) at 48 heads: 72 registers, 8 KB of
shared memory (the scan across warps), no stack for fp32 g; 128 registers, 32 KB for float64.
Not yet run on a GPU (benchmarks/gpu_session12.sh).

``chunk_decay`` launches the kernel, ``chunk_decay_torch`` is the torch reference (same signature,
same outputs; the kernel's tree-ordered ``tl.cumsum`` rounds fp32 differently from its sequential
sum: ``tests/kernels/test_decay_triton.py`` says by how much).
"""
from __future__ import annotations

import torch

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from .scan_triton import block_size

# Heads per program: a [C, 64] fp32 tile is 32 registers a thread at 4 warps; more heads take
# more programs rather than larger tiles.
_MAX_BH = 64


@triton.jit
def chunk_decay_kernel(g, g_cum, totals, H: tl.constexpr, C: tl.constexpr, BH: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64)  # row * NC + chunk: the chunk's slots start at blk * C
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    i = tl.arange(0, C)
    hm = (h < H)[None, :]
    off = (blk * C + i[:, None]) * H + h[None, :]
    gc = tl.cumsum(tl.load(g + off, mask=hm, other=0.0).to(g_cum.dtype.element_ty), 0)
    tl.store(g_cum + off, gc, mask=hm)
    # The last token's row is the chunk's total: a masked store, no reduction, so it equals G exactly.
    tl.store(totals + blk * H + h[None, :] + 0 * i[:, None], gc, mask=hm & (i[:, None] == C - 1))


def chunk_decay(g: torch.Tensor, chunk: int, acc_dtype: torch.dtype):
    """(G [N, S, H], totals [N, NC, H]), both ``acc_dtype``, of contiguous log decays g [N, S, H]."""
    n, slots, num_heads = g.shape
    g_cum = torch.empty(n, slots, num_heads, dtype=acc_dtype, device=g.device)
    totals = torch.empty(n, slots // chunk, num_heads, dtype=acc_dtype, device=g.device)
    bh = min(block_size(num_heads), _MAX_BH)
    chunk_decay_kernel[(n * (slots // chunk), triton.cdiv(num_heads, bh))](
        g, g_cum, totals, H=num_heads, C=chunk, BH=bh, num_warps=4,
    )
    return g_cum, totals


def chunk_decay_torch(g: torch.Tensor, chunk: int, acc_dtype: torch.dtype):
    """The torch reference of ``chunk_decay``: a sequential cumsum in ``acc_dtype``."""
    n, slots, num_heads = g.shape
    g_cum = g.to(acc_dtype).view(n, slots // chunk, chunk, num_heads).cumsum(2)
    return g_cum.view(n, slots, num_heads), g_cum[:, :, -1].contiguous()
