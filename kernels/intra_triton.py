"""Triton: per-chunk UT/WY factors of the delta rule (the chunk-local part of ``block.block_terms``).

For every chunk and head (grid ``(N * NC, H)``) with chunk-local cumulative log decay G::

    A      = I + strict_lower(beta_t (k_t . k_s) exp(G_t - G_s))
    Ab     = A^-1 diag(beta)                      [C, C]
    W      = Ab (k * exp(G))                      [C, K]
    U      = Ab v                                 [C, V]

A^-1 is built by block doubling: with X the inverse of the diagonal blocks of size s, the inverse
for blocks of size 2s is X - X E X, E the strictly-lower off-diagonal s x s blocks of A. Six
doublings give the 64 x 64 inverse with twelve matrix products (tensor cores) and no row loop;
every step is an exact block inverse, so it is as stable as blocked forward substitution.
Scalar decay (Mamba-2) needs none of this: Ab = I, W = 0.
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from .scan_triton import chunk_program


@triton.jit
def ut_factors_kernel(
    k, v, g_cum, beta, a_inv, w, u,
    S, NC,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr,
):
    row64, c, h, grp, i, tok, dk, km = chunk_program(S, NC, H, G, K, C, BK)
    kt = tl.load(k + (tok[:, None] * G + grp) * K + dk[None, :], mask=km[None, :], other=0.0).to(ACC)
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    bt = tl.load(beta + tok * H + h).to(ACC)

    lower = i[:, None] > i[None, :]
    decay = tl.exp(tl.where(lower, gc[:, None] - gc[None, :], 0.0))
    kk = tl.dot(kt, tl.trans(kt), input_precision=PREC, out_dtype=ACC)
    strict = tl.where(lower, kk * decay * bt[:, None], 0.0)

    x = tl.where(i[:, None] == i[None, :], 1.0, 0.0).to(ACC)
    for s in tl.static_range(LOG_C):
        size = 1 << s
        same = (i[:, None] // (2 * size)) == (i[None, :] // (2 * size))
        off = same & (((i[:, None] // size) % 2) == 1) & (((i[None, :] // size) % 2) == 0)
        e = tl.where(off, strict, 0.0)
        xe = tl.dot(x, e, input_precision=PREC, out_dtype=ACC)
        x = x - tl.dot(xe, x, input_precision=PREC, out_dtype=ACC)
    ab = x * bt[None, :]

    blk = (row64 * NC + c) * H + h
    tl.store(a_inv + blk * C * C + i[:, None] * C + i[None, :], ab)
    wt = tl.dot(ab, kt * tl.exp(gc)[:, None], input_precision=PREC, out_dtype=ACC)
    tl.store(w + (tok[:, None] * H + h) * K + dk[None, :], wt, mask=km[None, :])
    for v0 in range(0, V, BV):
        dv = v0 + tl.arange(0, BV)
        vm = dv[None, :] < V
        vt = tl.load(v + (tok[:, None] * H + h) * V + dv[None, :], mask=vm, other=0.0).to(ACC)
        ut = tl.dot(ab, vt, input_precision=PREC, out_dtype=ACC)
        tl.store(u + (tok[:, None] * H + h) * V + dv[None, :], ut, mask=vm)
