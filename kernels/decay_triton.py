"""Triton: chunk-local cumulative sums along the tokens of ``[N, S, H]`` slots (S = NC * C,
chunk-aligned), one kernel for three jobs of ``chunk_triton``, and the float64 running sums of
chunk totals across a row (``chunk_offsets``):

1. stage 1 (``chunk_decay``): the cumulative log decay G of log decays g, null slots zero::

       G[n, c*C + t, h] = sum_{s <= t} g[n, c*C + s, h]      (inclusive, within chunk c)
       total[n, c, h]   = G[n, c*C + C - 1, h]

2. the delta rule's backward (``chunk_reverse_cumsum``): dg from dG, the reverse sum within each
   chunk, sum_{s >= t} over chunk c's slots;
3. the scalar-decay backward (``row_reverse_cumsum``): dg[n, t, h] = sum_{s >= t} dacc[n, h, s]
   along a whole row, from dacc in the heads-major layout ``chunk_bwd_triton`` stores, written
   tokens-major [N, S, H] (what ``_Backward.tokens`` gathers: no transpose copy). Two launches:
   the first stores only each chunk's total, ``chunk_offsets`` takes their inclusive float64 sum
   across the chunks (small: [N, NC, H]), the second re-reads dacc, scans it again and adds the
   float64 sum of the chunks after its own before its single rounding. A torch broadcast add after one launch
   would instead write the within-chunk sums, then read and write them again (24 MB of traffic at
   2K x 16 x 48 heads in fp32 against 18 MB, one more launch) and round twice.

Grid ``(N * NC, H / BH)``: one program loads its chunk's [C, BH] tile (input strides along the
tokens and heads are arguments: [N, S, H] or [N, H, S]) and scans it along the tokens for every
head at once (``REVERSE``: from the chunk's last slot), in the accumulation dtype. Totals are
stored in the scan's order of chunks ([N, NC, H]; reverse: a row's last chunk first), so the
inclusive sum of them is each chunk's offset for the next in that order.
torch's cumsum over the chunk dimension of a [N, NC, C, H] view took ~27 us a call on an H200 at
2K x 16 x 48 heads (``tensor_kernel_scan_outer_dim``), twice per training step, for ~6 MB of
traffic; the scalar backward's row-long flip / cumsum / flip of dacc ~34 + 2 x 6 us. This kernel
takes ~6 us a launch there (profile, benchmarks/RESULTS.md). sm_90 offline (triton 3.9) at 16 x
2048 x 48 heads, no stack anywhere: G and the within-chunk reverse sum 56 registers, 8 KB of
shared memory (the scan across warps) in fp32, 124 / 126 and 32 KB in float64; the row sum's two
launches (heads-major loads, tokens-major stores) 40 and 55 registers, 16 KB in fp32, 72 and 96,
32 KB in float64.

``chunk_offsets`` (its own small kernel, one program per row and block of heads walking the
chunks) takes the float64 running sums of chunk totals across a row: the scalar forward's
cumulative log decay at chunk starts (``chunk_g``, exclusive) and the row sum's offsets
(inclusive). In torch these were a cast, a float64 cumsum and a subtraction (three launches, ~8
us for the cumsum alone, twice per training step) and one cumsum; the kernel takes ~2 us a
launch on the H200 (40 registers, no stack, sm_90 offline).

Measured on an H200 beside the torch sums they replace (Mamba-2 fwd+bwd, 48 heads, 2K x 16):
6.157 -> 6.093 ms for the three chunk-local sums, 6.102 -> 6.081 for ``chunk_offsets``.

Each public function has a torch reference of the same signature (``*_torch``: a sequential
cumsum; the kernel's tree-ordered ``tl.cumsum`` rounds fp32 differently:
``tests/kernels/test_decay_triton.py`` says by how much).
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
def chunk_decay_kernel(
    x, sums, totals, offsets, NC, stride_t, stride_h, H: tl.constexpr, C: tl.constexpr, BH: tl.constexpr,
    REVERSE: tl.constexpr, SUMS: tl.constexpr, TOTALS: tl.constexpr, OFFSET: tl.constexpr,
):
    """Scan chunk ``program_id(0)`` (row * NC + chunk) of x along its C tokens in ``sums``' dtype;
    store the sums [N, S, H] (``SUMS``; plus the float64 ``offsets`` of the previous chunk in scan
    order under ``OFFSET``) and / or the chunk's total (``TOTALS``). Unused pointers: any tensor."""
    blk = tl.program_id(0).to(tl.int64)
    row = blk // NC
    c = blk - row * NC
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    i = tl.arange(0, C)
    hm = (h < H)[None, :]
    src = row * NC * C * H + (c * C + i[:, None]) * stride_t + h[None, :] * stride_h
    acc = tl.cumsum(tl.load(x + src, mask=hm, other=0.0).to(sums.dtype.element_ty), 0, reverse=REVERSE)
    if REVERSE:  # the chunk's place in the scan's order; the slot whose sum spans the chunk
        pos = NC - 1 - c
        whole = 0
    else:
        pos = c
        whole = C - 1
    if TOTALS:  # a masked store, no reduction: the total equals the sum at that slot exactly
        tl.store(totals + (row * NC + pos) * H + h[None, :] + 0 * i[:, None], acc, mask=hm & (i[:, None] == whole))
    if SUMS:
        if OFFSET:
            before = tl.load(offsets + (row * NC + pos - 1) * H + h, mask=(h < H) & (pos + 0 * h > 0), other=0.0)
            acc = (acc.to(tl.float64) + before[None, :]).to(sums.dtype.element_ty)
        tl.store(sums + (blk * C + i[:, None]) * H + h[None, :], acc, mask=hm)


@triton.jit
def chunk_offsets_kernel(totals, out, NC, H: tl.constexpr, BC: tl.constexpr, BH: tl.constexpr, EXCLUSIVE: tl.constexpr):
    """Float64 running sums along the chunks of row ``program_id(0)``'s totals [N, NC, H] for a
    block of heads: BC chunks a step, carried across steps."""
    row = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BH + tl.arange(0, BH)
    carry = tl.zeros([BH], dtype=tl.float64)
    for c0 in range(0, NC, BC):
        c = c0 + tl.arange(0, BC)
        mask = (c < NC)[:, None] & (h < H)[None, :]
        off = (row * NC + c[:, None]) * H + h[None, :]
        x = tl.load(totals + off, mask=mask, other=0.0).to(tl.float64)
        inclusive = tl.cumsum(x, 0) + carry[None, :]
        tl.store(out + off, inclusive - x if EXCLUSIVE else inclusive, mask=mask)
        carry += tl.sum(x, 0)


def _launch(x, chunk, dtype, heads_major=False, reverse=False, sums=True, totals=False, offsets=None):
    """Run ``chunk_decay_kernel`` on x ([N, S, H], or [N, H, S] if ``heads_major``; contiguous);
    returns (sums [N, S, H] or None, totals [N, NC, H] or None), both ``dtype``."""
    if heads_major:
        n, num_heads, slots = x.shape
        stride_t, stride_h = 1, slots
    else:
        n, slots, num_heads = x.shape
        stride_t, stride_h = num_heads, 1
    nc = slots // chunk
    out = torch.empty(n, slots, num_heads, dtype=dtype, device=x.device) if sums else None
    tot = torch.empty(n, nc, num_heads, dtype=dtype, device=x.device) if totals else None
    some = out if sums else tot
    bh = min(block_size(num_heads), _MAX_BH)
    chunk_decay_kernel[(n * nc, triton.cdiv(num_heads, bh))](
        x, some, tot if totals else some, some if offsets is None else offsets, nc, stride_t, stride_h,
        H=num_heads, C=chunk, BH=bh, REVERSE=reverse, SUMS=sums, TOTALS=totals, OFFSET=offsets is not None,
        num_warps=4,
    )
    return out, tot


def chunk_decay(g: torch.Tensor, chunk: int, acc_dtype: torch.dtype):
    """(G [N, S, H], totals [N, NC, H]), both ``acc_dtype``, of contiguous log decays g [N, S, H]."""
    return _launch(g, chunk, acc_dtype, totals=True)


def chunk_decay_torch(g: torch.Tensor, chunk: int, acc_dtype: torch.dtype):
    """The torch reference of ``chunk_decay``: a sequential cumsum in ``acc_dtype``."""
    n, slots, num_heads = g.shape
    g_cum = g.to(acc_dtype).view(n, slots // chunk, chunk, num_heads).cumsum(2)
    return g_cum.view(n, slots, num_heads), g_cum[:, :, -1].contiguous()


def chunk_offsets(totals: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """Float64 running sums along dim 1 of contiguous totals [N, NC, H] (``exclusive``: of the
    chunks before each one)."""
    n, nc, num_heads = totals.shape
    out = torch.empty(n, nc, num_heads, dtype=torch.float64, device=totals.device)
    bh = min(block_size(num_heads), 16)  # a [BC, BH] float64 tile per step; more programs, not wider tiles
    chunk_offsets_kernel[(n, triton.cdiv(num_heads, bh))](
        totals, out, nc, H=num_heads, BC=min(block_size(nc), 128), BH=bh, EXCLUSIVE=exclusive, num_warps=4,
    )
    return out


def chunk_offsets_torch(totals: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """The torch reference of ``chunk_offsets`` (what ran before it)."""
    inclusive = totals.double().cumsum(1)
    return inclusive - totals.double() if exclusive else inclusive


def chunk_reverse_cumsum(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """sum_{s >= t} x[n, s, h] over the slots of t's chunk, [N, S, H] in x's dtype, of contiguous x
    [N, S, H]."""
    return _launch(x, chunk, x.dtype, reverse=True)[0]


def chunk_reverse_cumsum_torch(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """The torch reference of ``chunk_reverse_cumsum``."""
    n, slots, num_heads = x.shape
    return x.view(n, slots // chunk, chunk, num_heads).flip(2).cumsum(2).flip(2).view(n, slots, num_heads)


def row_reverse_cumsum(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """sum_{s >= t} x[n, h, s] along the whole row, as a contiguous [N, S, H] in x's dtype, of
    contiguous heads-major x [N, H, S] (S a multiple of ``chunk``): the within-chunk sums plus the
    float64 sum of the chunks after, rounded once."""
    _, totals = _launch(x, chunk, x.dtype, heads_major=True, reverse=True, sums=False, totals=True)
    offsets = chunk_offsets(totals, exclusive=False)  # in scan order: the last chunk first
    return _launch(x, chunk, x.dtype, heads_major=True, reverse=True, offsets=offsets)[0]


def row_reverse_cumsum_torch(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """The torch reference of ``row_reverse_cumsum`` (what ``_backward_scalar`` ran before it): one
    cumsum along the row in x's dtype."""
    return x.flip(-1).cumsum(-1).flip(-1).transpose(1, 2).contiguous()
