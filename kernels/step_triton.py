"""Triton decode step: one launch for every row, head and level (SPEC §3), in place.

Grid ``(N, H, V / BV)``; each program walks the L levels of one (row, head, value tile), reading
the row's position from the device, so the step never synchronises with the host and can be
captured in a CUDA graph. For token t = position[n] (t >= 1 merges levels below
m = min(bit_length(t XOR (t-1)), L-1) into m), every level is transitioned (scalar decay, or
the delta rule as a rank-1 update alpha (S - beta k (k^T S))), level 0 receives the token, and
the output is q^T (sum_l lambda_l S_l): the weighted states are summed in registers and reduced
over the keys once, not once per level (each reduction over K crosses warps).

Under scalar decay a level that does not merge only decays, so its decay goes into the state's
``log_scale`` (``LevelState``) instead of memory: the step reads every live level once (the
readout needs them) and writes two, level 0 and the merge level, where a step that rewrote the
decayed levels would move twice the state. Emptied levels get scale -inf instead of a write of
zeros. The delta rule changes every level, so it writes them all (scale 0).

Levels that the Fenwick structure proves empty at t (level l >= 1 with bit l-1 of t clear, the
top with nothing above it) are not read: they hold zeros, or any finite values under scale -inf.
"""
from __future__ import annotations

import torch

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import tl_capped_level
from .scan_triton import block_size


@triton.jit
def _live(lvl, t, merge, L):
    """Whether level ``lvl`` can hold anything for token t (bit lvl - 1 of t, written on 2t so that
    level 0 needs no special case; the top when anything lies above the cap)."""
    return (lvl <= merge) | ((((2 * t) >> lvl) & 1) == 1) | ((lvl == L - 1) & (((2 * t) >> lvl) > 0))


@triton.jit
def decode_step_kernel(
    levels, log_scale, position, q, k, v, g, lam, beta, o,
    L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr, LP: tl.constexpr, DELTA: tl.constexpr,
):
    row, h, pid_v = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    row64 = row.to(tl.int64)
    grp = h // (H // G)
    dk = tl.arange(0, BK)
    dv = pid_v * BV + tl.arange(0, BV)
    km, vm = dk < K, dv < V
    hv = dk[:, None] * V + dv[None, :]
    hvm = km[:, None] & vm[None, :]
    cols = tl.arange(0, LP)

    t = tl.load(position + row).to(tl.int64)
    merge = tl.where(t > 0, tl_capped_level(t, t - 1, L), 0)
    qt = tl.load(q + (row64 * G + grp) * K + dk, mask=km, other=0.0).to(tl.float32)
    kt = tl.load(k + (row64 * G + grp) * K + dk, mask=km, other=0.0).to(tl.float32)
    vt = tl.load(v + (row64 * H + h) * V + dv, mask=vm, other=0.0).to(tl.float32)
    log_alpha = tl.load(g + row64 * H + h).to(tl.float32)
    alpha = tl.exp(log_alpha)
    if DELTA:
        b = tl.load(beta + row64 * H + h).to(tl.float32)
        vt = b * vt
    scales = log_scale + (row64 * H + h) * 2 * L
    scale = tl.load(scales + (t % 2) * L + cols, mask=cols < L, other=0.0)

    mixed = tl.zeros([BK, BV], dtype=tl.float32)  # sum_l lambda_l S_l: one reduction over K at the end
    below = tl.zeros([BK, BV], dtype=tl.float32)
    base = levels + (row64 * H + h) * L * K * V
    for lvl in range(L):
        live = hvm & ((tl.zeros([BK, BV], dtype=tl.int32) + _live(lvl, t, merge, L).to(tl.int32)) > 0)
        factor = tl.exp(tl.sum(tl.where(cols == lvl, scale, 0.0)))
        s = tl.load(base + lvl * K * V + hv, mask=live, other=0.0) * factor
        if lvl < merge:
            below += s
            s = tl.zeros([BK, BV], dtype=tl.float32)
        elif lvl == merge:
            s += below
        if DELTA:
            ks = tl.sum(kt[:, None] * s, 0)
            s = alpha * (s - b * kt[:, None] * ks[None, :])
        else:
            s = alpha * s
        if lvl == 0:
            s += kt[:, None] * vt[None, :]
        mixed += tl.load(lam + (row64 * H + h) * L + lvl).to(tl.float32) * s
        if DELTA:
            tl.store(base + lvl * K * V + hv, s, mask=live)
        elif (lvl == 0) | (lvl == merge):
            tl.store(base + lvl * K * V + hv, s, mask=live)
    out = tl.sum(qt[:, None] * mixed, 0)  # q^T sum_l lambda_l S_l: no cross-warp reduction per level
    tl.store(o + (row64 * H + h) * V + dv, out.to(o.dtype.element_ty), mask=vm)

    # the other half of the scale, for token t + 1 (every value tile writes the same numbers)
    if DELTA:
        new = tl.where(_live(cols, t, merge, L), 0.0, scale)
    else:
        emptied = (cols > 0) & (cols < merge)
        new = tl.where(cols > merge, scale + log_alpha, tl.where(emptied, float("-inf"), 0.0))
    tl.store(scales + ((t + 1) % 2) * L + cols, new, mask=cols < L)


def _step_tiles(key_dim, value_dim):
    """(value tile, warps) of the step: a [BK, BV] fp32 tile of at most 4096 values per level,
    so that each of the many small programs keeps its loads in flight."""
    return max(16, min(block_size(value_dim), 4096 // block_size(key_dim))), 4


def step_loglinear_attention_triton(state, q, k, v, g, level_weights, beta=None):
    """In-place decode step on a LevelState (fp32 levels; a ``log_scale`` is attached on the
    first step); returns (o [N, H, V], state)."""
    if state.levels.dtype != torch.float32 or not state.levels.is_contiguous():
        raise ValueError(
            f"the triton step needs contiguous float32 state.levels, got {state.levels.dtype} "
            f"(contiguous={state.levels.is_contiguous()}); use backend='torch' for float64 states"
        )
    n, num_heads, num_levels, key_dim, value_dim = state.levels.shape
    if state.log_scale is None:
        state.log_scale = torch.zeros(n, num_heads, 2, num_levels, dtype=torch.float32, device=state.levels.device)
    # Plain integer launch sizes (no triton.cdiv / next_power_of_2): this runs on every step.
    bv, num_warps = _step_tiles(key_dim, value_dim)
    o = torch.empty(n, num_heads, value_dim, dtype=v.dtype, device=v.device)
    q, k, v, g, lam = (x.contiguous() for x in (q, k, v, g, level_weights))
    beta = None if beta is None else beta.contiguous()
    decode_step_kernel[(n, num_heads, -(-value_dim // bv))](
        state.levels, state.log_scale, state.position, q, k, v, g, lam, g if beta is None else beta, o,
        num_levels, H=num_heads, G=q.shape[1], K=key_dim, V=value_dim, BK=block_size(key_dim), BV=bv,
        LP=block_size(num_levels), DELTA=beta is not None, num_warps=num_warps,
    )
    state.position.add_(1)
    return o, state
