"""Triton: everything chunk-local of the delta rule (the per-chunk part of ``block.block_terms``).

For every chunk and head (grid ``(N * NC, H)``) with chunk-local cumulative log decay G,
Gamma[t, s] = exp(G_t - G_s) for s <= t::

    A      = I + strict_lower(beta_t (k_t . k_s) Gamma[t, s])
    Ab     = A^-1 diag(beta)                      [C, C]
    W      = Ab (k * exp(G))                      [C, K]
    U      = Ab v                                 [C, V]
    QK     = (q k^T) * Gamma (causal)             [C, C]
    Qt     = exp(G) q - QK W                      [C, K]   the query that reads the level states
    Pw     = (QK Ab) * Lambda                     [C, C]   the intra-chunk output is Pw v

so the level scans read only k, W, U and the output kernel only Pw, Qt and v (``output_triton``).
W's rows are stored WK wide (the scans' two key tiles, ``scan_triton.key_split``: 192 at K = 192,
128 at K = 100), zero-padded past K, and when K < WK the keys too (``kp``, written by each
group's first head): the scans' key loads then need no mask, and no torch copy pads them (two
took ~0.25 ms of a 3.1 ms forward at 2K x 16, 192 / 384, on an H200).
Lambda[t, s] = lambda_t at the level of (t, s) (``output_triton.level_weights``).

A^-1 is built by block doubling: with X the inverse of the diagonal blocks of size s, the inverse
for blocks of size 2s is X - X E X, E the strictly-lower off-diagonal s x s blocks of A. Six
doublings give the 64 x 64 inverse with twelve matrix products (tensor cores) and no row loop;
every step is an exact block inverse, so it is as stable as blocked forward substitution.

Keys are walked in tiles of BKT (64): no [C, K] tile of a wide head (K = 192 pads to 256) is
ever held. q k^T and k k^T take DOT operands (the inputs' own dtype: exact products), and the
inverse ACC operands at PREC: its doublings subtract. The products that apply the factors (P,
W, Qt, U) take DOT operands too: with half inputs Ab, QK, the decayed keys and W are rounded to
the inputs' dtype, as W, U, Qt and Pw are when stored, and as fla's forward does. On the H200
at 192 / 384 in bf16 that takes the kernel from 0.56 to 0.47 ms at 2K x 16 (8 warps 0.75; the
bf16 errors of the GDN forward and gradients stay below 6e-3: gpu_session20.sh d). W, U, Qt,
Pw are stored in the dtype of their buffers (the inputs' dtype for bf16 / fp16 inputs: what the
tensor cores of the scans and the output read; fp32 otherwise); Ab in ACC, for the backward.
Scalar decay (Mamba-2) needs none of this: Ab = I, W = 0.
"""
from __future__ import annotations

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from .output_triton import level_weights
from .scan_triton import chunk_program, head_rows, key_tile, mma, to_dot


@triton.jit
def _inverse(strict, i, LOG_C: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """(I + strict)^-1 for a strictly lower triangular [C, C] tile, by block doubling."""
    x = tl.where(i[:, None] == i[None, :], 1.0, 0.0).to(ACC)
    for s in tl.static_range(LOG_C):
        size = 1 << s
        same = (i[:, None] // (2 * size)) == (i[None, :] // (2 * size))
        off = same & (((i[:, None] // size) % 2) == 1) & (((i[None, :] // size) % 2) == 0)
        xe = tl.dot(x, tl.where(off, strict, 0.0), input_precision=PREC, out_dtype=ACC)
        x = x - tl.dot(xe, x, input_precision=PREC, out_dtype=ACC)
    return x


@triton.jit
def ut_factors_kernel(
    q, k, v, g_cum, beta, lam, a_inv, w, u, qt, pw, kp,
    S, NC, L,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, WK: tl.constexpr,
    C: tl.constexpr, LOG_C: tl.constexpr, LP: tl.constexpr, BKT: tl.constexpr, BV: tl.constexpr,
    ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    row64, c, h, grp, i, tok, _, _ = chunk_program(S, NC, H, G, K, C, BKT)
    gc = tl.load(g_cum + tok * H + h).to(ACC)
    bt = tl.load(beta + tok * H + h).to(ACC)
    causal = i[:, None] >= i[None, :]
    lower = i[:, None] > i[None, :]
    gamma = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], 0.0))

    kk = tl.zeros([C, C], dtype=ACC)
    qk = tl.zeros([C, C], dtype=ACC)
    for k0 in tl.static_range(0, K, BKT):
        kc, km = key_tile(k0, K, BKT)
        kt, qq = head_rows(k, tok, G, grp, K, kc, km), head_rows(q, tok, G, grp, K, kc, km)
        kk += mma(kt, tl.trans(kt), DOT, PREC, ACC)
        qk += mma(qq, tl.trans(kt), DOT, PREC, ACC)
    # QK is finished before the inverse, and held as the DOT operand it only ever is: its
    # [C, C] ACC tile and Gamma would otherwise stay live through the doublings.
    qk = to_dot(tl.where(causal, qk * gamma, 0.0), DOT)
    ab = _inverse(tl.where(lower, kk * gamma * bt[:, None], 0.0), i, LOG_C, PREC, ACC) * bt[None, :]

    blk = (row64 * NC + c) * H + h
    cc = blk * C * C + i[:, None] * C + i[None, :]
    tl.store(a_inv + cc, ab.to(a_inv.dtype.element_ty))
    cols = tl.arange(0, LP)
    lam_t = tl.load(lam + (tok[:, None] * H + h) * L + cols[None, :], mask=cols[None, :] < L, other=0.0).to(ACC)
    p = mma(qk, ab, DOT, PREC, ACC)
    tl.store(pw + cc, (p * level_weights(lam_t, cols, i, L, C, LOG_C, ACC)).to(pw.dtype.element_ty))

    e_g = tl.exp(gc)[:, None]
    for k0 in tl.static_range(0, WK, BKT):  # past K the loaded keys are zero, and so is W
        kc, km = key_tile(k0, K, BKT)
        kt, qq = head_rows(k, tok, G, grp, K, kc, km), head_rows(q, tok, G, grp, K, kc, km)
        wt = mma(ab, kt.to(ACC) * e_g, DOT, PREC, ACC)
        tl.store(w + (tok[:, None] * H + h) * WK + kc[None, :], wt.to(w.dtype.element_ty))
        if K < WK:
            if h % (H // G) == 0:
                tl.store(kp + (tok[:, None] * G + grp) * WK + kc[None, :], kt)
        qtt = qq.to(ACC) * e_g - mma(qk, wt, DOT, PREC, ACC)
        tl.store(qt + (tok[:, None] * H + h) * K + kc[None, :], qtt.to(qt.dtype.element_ty), mask=km[None, :])
    for v0 in tl.static_range(0, V, BV):
        dv, vm = key_tile(v0, V, BV)
        vt = head_rows(v, tok, H, h, V, dv, vm)
        ut = mma(ab, vt, DOT, PREC, ACC)
        tl.store(u + (tok[:, None] * H + h) * V + dv[None, :], ut.to(u.dtype.element_ty), mask=vm[None, :])
