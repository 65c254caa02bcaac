"""Triton: the inter-chunk level states, one independent scan per level (SPEC §4).

Scan ``js < NJ - 1`` holds inter-chunk level ``js`` (global level log2(C) + 1 + js). Its
buckets are the windows of 2^(js+1) chunks (absolute chunk index ``ca``): the first 2^js (bit
js of ca clear) are its sources, the rest its readers, which read the sources' sum. The last
scan (``js = NJ - 1``) is the capped top level: everything more than ``top_exp`` inter-chunk
levels away, i.e. all chunks before ca rounded down to a multiple of 2^top_exp. It carries the
top state h and a pending sum p of the current window; p joins h when the window closes; every
chunk reads it.

``level_scan_kernel``, scalar decay, grid ``(N * H, NJ, V / BV)`` (the top in a launch of its
own): a run of readers reads one state, decayed by a scalar (the reader applies
exp(G_c - G_first) from the chunk-start cumulative decay), so a program walks its level's
sources alone, sums each bucket's and records the sum once for its run (``state_slot``): memory
linear in T, half the chunks walked, and loads without a branch around them.

``level_scan_delta_kernel``, the delta rule: every chunk's transition is a matrix, so each
reading chunk records its own state, and a state goes through the transition of every chunk
between its sources and its readers (decay and the WY correction). A level restarts after each
bucket, so its buckets are independent programs; the top walks its row window by window.

``prefix_scan_delta_kernel``, the delta rule for rows with nothing before them: prefix states
instead of level states (the plain recurrence, and each bucket's middle or top window's start
pushed on to the chunks that read it as soon as the recurrence has passed it, in the same
launch); a level is the difference of two prefixes, which the readout and the final state take.
About 2.5 pushes a chunk at 2K instead of 4.

With an initial state the scans start from ``h0`` / ``p0`` (built by the caller from the
re-levelled initial levels) and fold ``low`` (initial levels inside the first chunk) into
the first chunk's contribution.
"""
from __future__ import annotations

import os

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import (
    tl_bit_length, tl_bucket_count, tl_chunk_reads_scan, tl_chunks_with_bit, tl_nth_chunk_with_bit, tl_scan_level,
    tl_scan_run, tl_scan_window,
)

_INTERPRETED = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1") if tl is not None else False


def block_size(n: int) -> int:
    """The tile that covers n: the smallest power of two >= n, at least 16 (tl.dot's minimum).
    Plain integers: triton's next_power_of_2 is a constexpr function, ~5 us of Python a call."""
    return max(16, 1 << (n - 1).bit_length())


@triton.jit
def scan_program(H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """What a program of the grid (sequences x heads, scans, value tiles) works on: its row, head,
    q/k group, scan index, and the key / value offsets and masks of its [BK, BV] state tile (BK
    covers the whole key head). Shared by the forward scans and their backward."""
    row, h, grp, dk, dv, km, vm, hv, hvm = state_tile(tl.program_id(0), tl.program_id(2), H, G, K, V, BK, BV)
    return row, h, grp, tl.program_id(1), dk, dv, km, vm, hv, hvm


@triton.jit
def state_tile(pid_nh, pid_v, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr,
               BV: tl.constexpr):
    """Row, head, q/k group, and the key / value offsets and masks of the [BK, BV] state tile of
    program (row x head ``pid_nh``, value tile ``pid_v``)."""
    row, h = pid_nh // H, pid_nh % H
    dv = pid_v * BV + tl.arange(0, BV)
    vm = dv < V
    dk, km, hv, hvm = _key_rows(0, K, V, dv, vm, BK)
    return row, h, h // (H // G), dk, dv, km, vm, hv, hvm


@triton.jit
def _key_rows(k0, K: tl.constexpr, V: tl.constexpr, dv, vm, BKR: tl.constexpr):
    """(key offsets, their mask, offsets in a [K, V] state, that mask) of a [BKR, BV] state tile
    from key k0 over value offsets ``dv`` (mask ``vm``)."""
    dk, km = key_tile(k0, K, BKR)
    return dk, km, dk[:, None] * V + dv[None, :], km[:, None] & vm[None, :]


@triton.jit
def reverse_scan_program(NJ, L, top_exp, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                         C: tl.constexpr, LOG_C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """``scan_program`` plus what the backward scans walking a level in reverse read: whether
    it is the top, its lambda column, its bucket window, int64 row and scan index, token offsets."""
    row, h, grp, js, dk, dv, km, vm, hv, hvm = scan_program(H, G, K, V, BK, BV)
    level = (js == NJ - 1, tl_scan_level(js, NJ, L, LOG_C), tl_scan_window(js, NJ, top_exp))
    return (row.to(tl.int64), h, grp, js, js.to(tl.int64), dk, dv, km, vm, hv, hvm, tl.arange(0, C)) + level


@triton.jit
def key_tile(k0, K: tl.constexpr, BKT: tl.constexpr):
    """Offsets and mask of the key tile starting at ``k0`` (or of a value tile: same arithmetic)."""
    kc = k0 + tl.arange(0, BKT)
    return kc, kc < K


@triton.jit
def head_rows(ptr, tok, heads, head, width, offs, mask):
    """[C, B] tile of a [slots, heads, width] tensor for one head (masked columns zero)."""
    return tl.load(ptr + (tok[:, None] * heads + head) * width + offs[None, :], mask=mask[None, :], other=0.0)


@triton.jit
def chunk_program(S, NC, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, C: tl.constexpr, BK: tl.constexpr):
    """What a program of a chunk-parallel grid (rows x chunks, heads[, value tiles]) works on:
    its row (int64), chunk, head, q/k group, the chunk's slot offsets and token indices, and the
    key offsets and mask. Shared by the UT, output and gradient kernels."""
    pid_nc, h = tl.program_id(0), tl.program_id(1)
    row, c = pid_nc // NC, pid_nc % NC
    row64 = row.to(tl.int64)
    i = tl.arange(0, C)
    dk = tl.arange(0, BK)
    return row64, c, h, h // (H // G), i, row64 * S + c * C + i, dk, dk < K


@triton.jit
def state_slot(ca, cb, js, NJ, NC, top_exp, DELTA: tl.constexpr):
    """(slot, row-local chunk it was recorded at) of the state absolute chunk ``ca`` reads from
    scan ``js`` in a row starting at absolute chunk ``cb``. The delta rule's chunk transitions
    are matrices, so each reading chunk records its own state; scalar decay shares one per run."""
    if DELTA:
        c = (ca - cb).to(tl.int64)
        return c * NJ + js, c
    else:
        return tl_scan_run(ca, cb, js, NJ, NC, top_exp)


@triton.jit
def slot_tile(base, row64, slot, NSLOT, h, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr):
    """Start of head h's [K, V] state in ``slot`` of row ``row64`` of a [N, NSLOT, H, K, V] buffer:
    the recorded states, and the reverse scans' per-sum gradients in the same layout."""
    return base + ((row64 * NSLOT + slot) * H + h) * K * V


@triton.jit
def recorded_decay(chunk_g, row64, NC, H: tl.constexpr, h, c, first, ACC: tl.constexpr):
    """exp(G_c - G_first): the scalar decay from the chunk that recorded a shared state to the
    chunk reading it (``chunk_g`` [N, NC, H] float64, cumulative log decay at chunk starts)."""
    g_c = tl.load(chunk_g + (row64 * NC + c) * H + h)
    g_first = tl.load(chunk_g + (row64 * NC + first) * H + h)
    return tl.exp((g_c - g_first).to(ACC))


@triton.jit
def mma(a, b, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """a @ b accumulated in ACC from operands rounded to DOT. Under scalar decay with half
    inputs DOT is the input dtype: the tensor cores run at twice the tf32 rate and the operand
    tiles take half the registers; products of inputs stay exact, derived factors (decayed keys,
    level-weighted scores, states) round to 2^-9 as the recorded states already do."""
    return tl.dot(to_dot(a, DOT), to_dot(b, DOT), input_precision=PREC, out_dtype=ACC)


@triton.jit
def to_dot(x, DOT: tl.constexpr):
    """x as an operand of ``mma``: rounded to DOT. The interpreter's bf16 dot returns garbage and
    its fp32 -> bf16 cast truncates (triton 3.9), so there x is rounded to the nearest bf16 (ties
    to even, as the GPU does) and kept in fp32; rounding it again is exact."""
    if _INTERPRETED and DOT == tl.bfloat16:
        return _round_bf16(x.to(tl.float32))
    else:
        return x.to(DOT)


@triton.jit
def _round_bf16(x):
    """fp32 -> the nearest bf16 value (ties to even), still stored as fp32."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _keys_times(kt, vt, e, K: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """Kd^T vt for the chunk's keys Kd = e k (e = exp(G_end - G) per token). The decay scales the
    [C, BV] value side, so the loaded key tile goes to the tensor cores as it is, except for a
    masked key tile (K not a multiple of BK): there triton 3.6 on sm_90 faulted (out-of-range
    shared address, K = 192) on the loaded, masked, transposed bf16 operand, so those keys are
    scaled in registers. (The delta scans load theirs unmasked, ``_keys_t``.)"""
    if K % BK == 0:
        return mma(tl.trans(kt), vt * e[:, None], DOT, PREC, ACC)
    else:
        return mma(tl.trans(kt.to(ACC) * e[:, None]), vt, DOT, PREC, ACC)


@triton.jit
def _push(hs, kt, vt, e, decay, K: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
          ACC: tl.constexpr):
    """State [BK, BV] through one chunk under scalar decay, plus the chunk's contribution:
    decay h + Kd^T V."""
    return decay * hs + _keys_times(kt, vt, e, K, BK, DOT, PREC, ACC)


@triton.jit
def _visit(states, hs, cb, c, js, js64, NJ, NC, NSLOT, top_exp, row64, h, H: tl.constexpr, K: tl.constexpr,
           V: tl.constexpr, hv, hvm):
    """The scalar top arriving at row-local chunk c: its absolute index ca, after recording the
    state c reads if c is the first chunk of its run (``state_slot``)."""
    ca = cb + c
    if tl_chunk_reads_scan(ca, js64, NJ):
        slot, first = state_slot(ca, cb, js, NJ, NC, top_exp, False)
        if first == c:
            _record(states, hs, slot, row64, NSLOT, h, H, K, V, hv, hvm)
    return ca


@triton.jit
def _state_in(base, hv, hvm, ACC: tl.constexpr):
    """This program's [BK, BV] tile of the [K, V] state starting at ``base``, in ACC. Read past
    L1 (``.cg``): a boundary of the prefix scan reads a state another program of its launch has
    just written, and L1 is not coherent; every other state read is a one-off."""
    return tl.load(base + hv, mask=hvm, other=0.0, cache_modifier=".cg").to(ACC)


@triton.jit
def _walk(base_chunk, row, js, NJ, top_exp, C: tl.constexpr):
    """What a forward scan walks with: token indices of a chunk, the row's first absolute chunk,
    the int64 row and scan index, and the scan's bucket window (``tl_scan_window``)."""
    return tl.arange(0, C), tl.load(base_chunk + row), row.to(tl.int64), js.to(tl.int64), tl_scan_window(js, NJ, top_exp)


@triton.jit
def _start(h0, p0, row64, js, NJ, H: tl.constexpr, h, K: tl.constexpr, V: tl.constexpr, hv, hvm,
           BK: tl.constexpr, BV: tl.constexpr, HAS_INIT: tl.constexpr, ACC: tl.constexpr, top):
    """The state a scalar scan starts from (``h0``) and, for the top (constexpr ``top``), its
    pending sum (``p0``); zero without an initial state."""
    hs = tl.zeros([BK, BV], dtype=ACC)
    ps = tl.zeros([BK, BV], dtype=ACC)
    if HAS_INIT:
        hs += _state_in(h0 + ((row64 * NJ + js) * H + h) * K * V, hv, hvm, ACC)
        if top:
            ps += _state_in(p0 + (row64 * H + h) * K * V, hv, hvm, ACC)
    return hs, ps


@triton.jit
def _close(hs, ps, top):
    """A bucket ends: the top's pending sum joins its state (constexpr ``top``), a level below the
    top restarts."""
    if top:
        hs += ps
        ps = tl.zeros_like(ps)
    else:
        hs = tl.zeros_like(hs)
    return hs, ps


@triton.jit
def _chunk_tiles(k, v, g_cum, tok, g_end, grp, h, dk, dv, km, vm, G: tl.constexpr, H: tl.constexpr,
                 K: tl.constexpr, V: tl.constexpr, ACC: tl.constexpr):
    """The [C, BK] key tile (as stored) and [C, BV] value tile (in ACC) of a chunk's tokens
    ``tok``, and their decay to the chunk's end e = exp(G_end - G)."""
    kt = head_rows(k, tok, G, grp, K, dk, km)
    vt = head_rows(v, tok, H, h, V, dv, vm).to(ACC)
    return kt, vt, _decay_to_end(g_cum, tok, g_end, H, h, ACC)


@triton.jit
def _decay_to_end(g_cum, tok, g_end, H: tl.constexpr, h, ACC: tl.constexpr):
    """e = exp(G_end - G) of a chunk's tokens ``tok``."""
    return tl.exp(g_end - tl.load(g_cum + tok * H + h).to(ACC))


@triton.jit
def _chunk_decay(g_cum, row64, S, c, H: tl.constexpr, h, C: tl.constexpr, ACC: tl.constexpr):
    """(G_end, exp(G_end)) of chunk c: its total log decay, and the factor every state takes there."""
    g_end = tl.load(g_cum + (row64 * S + c * C + C - 1) * H + h).to(ACC)
    return g_end, tl.exp(g_end)


@triton.jit
def level_scan_kernel(
    k, v, g_cum, states, h0, p0, low, base_chunk,
    S, NC, NJ, NSLOT, top_exp,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, TOP: tl.constexpr,
    HAS_INIT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    """Scalar decay. Launched twice: the inter-chunk levels (TOP false, ``_sum_sources``), then
    the capped top alone (grid (N * H, 1, V / BV), ``_walk_top``), which carries the pending sum:
    a second state tile the other programs then need no registers for."""
    row, h, grp, js, dk, dv, km, vm, hv, hvm = scan_program(H, G, K, V, BK, BV)
    if TOP:
        js = NJ - 1
    i, cb, row64, js64, win = _walk(base_chunk, row, js, NJ, top_exp, C)
    hs, ps = _start(h0, p0, row64, js, NJ, H, h, K, V, hv, hvm, BK, BV, HAS_INIT, ACC, TOP)
    lo = tl.zeros([BK, BV], dtype=ACC)
    if HAS_INIT:  # initial levels inside the first chunk: they enter with its contribution
        lo = _state_in(low + (row64 * H + h) * K * V, hv, hvm, ACC)
    if TOP:
        _walk_top(k, v, g_cum, states, hs, ps + lo, cb, row64, h, grp, i, dk, dv, km, vm, hv, hvm, js, js64, win,
                  S, NC, NJ, NSLOT, top_exp, H, G, K, V, C, BK, DOT, PREC, ACC)
    else:
        _sum_sources(k, v, g_cum, states, hs, lo, cb, row64, h, grp, i, dk, dv, km, vm, hv, hvm, js, js64,
                     S, NC, NJ, NSLOT, top_exp, H, G, K, V, C, BK, BV, DOT, PREC, ACC)


@triton.jit
def _sum_sources(k, v, g_cum, states, hs, lo, cb, row64, h, grp, i, dk, dv, km, vm, hv, hvm, js, js64,
                 S, NC, NJ, NSLOT, top_exp, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                 C: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr,
                 ACC: tl.constexpr):
    """A level below the top: each bucket's 2^js sources (bit js clear) are summed, decayed to the
    end of the last, and recorded once for the 2^js readers after them. Only the sources are
    walked (``levels.tl_nth_chunk_with_bit``): half the chunks, and no branch around the loads,
    so triton pipelines them. The state between buckets restarts from zero."""
    if tl_chunk_reads_scan(cb, js64, NJ):  # the row starts among readers: they read the initial state
        _record(states, hs, state_slot(cb, cb, js, NJ, NC, top_exp, False)[0], row64, NSLOT, h, H, K, V, hv, hvm)
        hs = tl.zeros([BK, BV], dtype=ACC)
    else:
        hs += lo
    last_of_run = (tl.full((), 1, tl.int64) << js64) - 1
    for t in range(tl_chunks_with_bit(cb, js64, 0), tl_chunks_with_bit(cb + NC, js64, 0)):
        ca = tl_nth_chunk_with_bit(t, js64, 0)
        c = ca - cb
        g_end, decay = _chunk_decay(g_cum, row64, S, c, H, h, C, ACC)
        kt, vt, e = _chunk_tiles(k, v, g_cum, row64 * S + c * C + i, g_end, grp, h, dk, dv, km, vm, G, H, K, V, ACC)
        hs = _push(hs, kt, vt, e, decay, K, BK, DOT, PREC, ACC)
        if (ca & last_of_run) == last_of_run:  # the bucket's last source: the next chunk reads the sum
            if c + 1 < NC:
                slot = state_slot(ca + 1, cb, js, NJ, NC, top_exp, False)[0]
                _record(states, hs, slot, row64, NSLOT, h, H, K, V, hv, hvm)
            hs = tl.zeros([BK, BV], dtype=ACC)


@triton.jit
def _record(states, hs, slot, row64, NSLOT, h, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, hv, hvm):
    """Store this program's tile of a recorded state into ``slot``."""
    tl.store(slot_tile(states, row64, slot, NSLOT, h, H, K, V) + hv, hs.to(states.dtype.element_ty), mask=hvm)


@triton.jit
def _walk_top(k, v, g_cum, states, hs, ps, cb, row64, h, grp, i, dk, dv, km, vm, hv, hvm, js, js64, win,
              S, NC, NJ, NSLOT, top_exp, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
              C: tl.constexpr, BK: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """The capped top: every chunk reads it and adds to its pending sum ``ps``, which joins the
    state ``hs`` when a bucket of 2^top_exp chunks closes."""
    for c in range(NC):
        ca = _visit(states, hs, cb, c, js, js64, NJ, NC, NSLOT, top_exp, row64, h, H, K, V, hv, hvm)
        g_end, decay = _chunk_decay(g_cum, row64, S, c, H, h, C, ACC)
        kt, vt, e = _chunk_tiles(k, v, g_cum, row64 * S + c * C + i, g_end, grp, h, dk, dv, km, vm, G, H, K, V, ACC)
        hs = decay * hs
        ps = _push(ps, kt, vt, e, decay, K, BK, DOT, PREC, ACC)
        if (ca & win) == win:
            hs, ps = _close(hs, ps, True)


@triton.jit
def level_scan_delta_kernel(
    k, u, w, g_cum, states, h0, p0, low, base_chunk,
    S, NC, NJ, NSLOT, top_exp, NH,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr, NVT: tl.constexpr, TOP: tl.constexpr,
    HAS_INIT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    """The delta rule: every state goes through every chunk's transition. Launched twice, side
    by side: the capped top (TOP, one program per row, head and value tile: ``_top_walk``), and
    the levels below it with one program per bucket (``_bucket_walk``), since a level restarts
    after each bucket of 2^(js+1) chunks. A program walks at most 2^(js+1) - 1 chunks, and every
    walk is a loop with no branch inside (``_walk_chunks``). Buckets are numbered from the
    highest level down: the longest programs start first. On the H200 at 192 / 384 in bf16 this
    took the forward from 5.68 to 4.61 ms at 2K and 8.05 to 6.52 at 8K (gpu_notes.md, version 11)
    against the previous form: one program per level walking every chunk of its row, behind a
    run-time branch per chunk.

    1-D grid, program = (task, row x head, value tile), task slowest: the value tiles of one
    bucket run side by side and share its W and k tiles through L2. The state is held as two
    key tiles (``key_split``), and k and W are read KA + KB wide, zero-padded there when K is
    less (``intra_triton.ut_factors_kernel``), so their loads take no key mask (masked key tiles
    feeding wgmma faulted on the H200 at K = 192 once loads left a run-time branch); zero key
    rows add nothing to the state's rows past K, which are never stored."""
    pid = tl.program_id(0)
    row, h, grp, dv, vm, tile = delta_tile((pid // NVT) % NH, pid % NVT, H, G, K, V, KA, KB, BV)
    task = pid // (NH * NVT)
    row64 = row.to(tl.int64)
    cb = tl.load(base_chunk + row).to(tl.int64)
    ins = (k, u, w, g_cum, states, row64, S, NJ, NSLOT, h, grp, tl.arange(0, C), dv, vm, tile)
    if TOP:
        _top_walk(ins, h0, p0, low, cb, NC, NJ - 1, top_exp, H, G, K, V, C, KA, KB, BV, HAS_INIT, ACC, PREC, DOT)
    else:
        _bucket_walk(ins, h0, low, cb, task, NC, NJ, H, G, K, V, C, KA, KB, BV, HAS_INIT, ACC, PREC, DOT)


def key_split(n: int) -> tuple[int, int]:
    """(KA, KB): the delta rule's scans hold a state of key width n as two tiles of KA and KB
    rows (KB = 0: one tile), so that a key width that is not a power of two takes no padded
    rows: K = 192 is 128 + 64, where one tile would be 256 wide with a quarter of its products on
    zero rows. k and W are read KA + KB wide."""
    whole = block_size(n)
    if whole == n or whole == 16:
        return whole, 0
    return whole // 2, block_size(n - whole // 2)


@triton.jit
def delta_tile(pid_nh, pid_v, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
               KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr):
    """``state_tile`` of a delta scan's program, its state as two key tiles: row, head, q/k
    group, value offsets and mask, and ``tile``: (key offsets, offsets in a [K, V] state, their
    mask) of each (with KB = 0 the second repeats the first and is never read)."""
    row, h, grp, dk, dv, _, vm, hv, hvm = state_tile(pid_nh, pid_v, H, G, K, V, KA, BV)
    first = (dk, hv, hvm)
    if KB > 0:
        dkb, _, hvb, hvmb = _key_rows(KA, K, V, dv, vm, KB)
        second = (dkb, hvb, hvmb)
    else:
        second = first
    return row, h, grp, dv, vm, (first, second)


# A delta-scan state is a pair of key tiles (``key_split``): [KA, BV] and [KB, BV], the second a
# scalar zero when KB = 0. The helpers below are the few operations the scans apply to it.

@triton.jit
def _pair_zeros(KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr, ACC: tl.constexpr):
    if KB > 0:
        second = tl.zeros([KB, BV], dtype=ACC)
    else:
        second = tl.zeros((), dtype=ACC)
    return tl.zeros([KA, BV], dtype=ACC), second


@triton.jit
def _pair_in(base, tile, KB: tl.constexpr, ACC: tl.constexpr):
    """The [K, V] state at ``base`` as this program's pair, in ACC."""
    second = tl.zeros((), dtype=ACC)
    if KB > 0:
        second = _state_in(base, tile[1][1], tile[1][2], ACC)
    return _state_in(base, tile[0][1], tile[0][2], ACC), second


@triton.jit
def _pair_record(states, hs, slot, row64, NSLOT, h, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, tile,
                 KB: tl.constexpr):
    _record(states, hs[0], slot, row64, NSLOT, h, H, K, V, tile[0][1], tile[0][2])
    if KB > 0:
        _record(states, hs[1], slot, row64, NSLOT, h, H, K, V, tile[1][1], tile[1][2])


@triton.jit
def _pair_add(x, y):
    return x[0] + y[0], x[1] + y[1]


@triton.jit
def _pair_axpy(a, x, y):
    """a x + y, a a scalar."""
    return a * x[0] + y[0], a * x[1] + y[1]


@triton.jit
def _w_times(wt, hs, KB: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """W h [C, BV]: the product over both key tiles."""
    wh = mma(wt[0], hs[0], DOT, PREC, ACC)
    if KB > 0:
        wh += mma(wt[1], hs[1], DOT, PREC, ACC)
    return wh


@triton.jit
def _keys_t(kt, x, KB: tl.constexpr, DOT: tl.constexpr, PREC: tl.constexpr, ACC: tl.constexpr):
    """k^T x as a pair, for x [C, BV] (already decayed to the chunk's end per token). The loaded
    key tiles go to the tensor cores as they are (never masked: see ``level_scan_delta_kernel``)."""
    second = tl.zeros((), dtype=ACC)
    if KB > 0:
        second = mma(tl.trans(kt[1]), x, DOT, PREC, ACC)
    return mma(tl.trans(kt[0]), x, DOT, PREC, ACC), second


@triton.jit
def _bucket_of(task, cb, NC, NJ):
    """(level js, absolute bucket index) of a below-the-top task: level NJ - 2 first, each level
    given ``tl_bucket_count`` task numbers (every bucket a row of NC chunks starting at absolute
    chunk ``cb`` can touch); js = -1 past the last."""
    t = task.to(tl.int64)
    js = tl.full((), -1, tl.int64)
    b = tl.zeros((), tl.int64)
    for r in range(NJ - 1):
        j = (NJ - 2 - r).to(tl.int64)
        n = tl_bucket_count(NC, j)
        hit = (js < 0) & (t >= 0) & (t < n)
        js = tl.where(hit, j, js)
        b = tl.where(hit, (cb >> (j + 1)) + t, b)
        t -= n
    return js, b


@triton.jit
def _bucket_walk(ins, h0, low, cb, task, NC, NJ, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr,
                 V: tl.constexpr, C: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr,
                 HAS_INIT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """One bucket of level js: its sources' sum (the state pushed through each source with the
    source's contribution, from zero), then its readers, each recording the state and pushing it
    on (not through the last: the level restarts there). Row-local chunks [s, m) are the sources
    in the row, [m, e) the readers; a row starting inside the bucket starts from its initial
    level (``h0``), plus the initial levels inside its first chunk (``low``) if that is a source."""
    row64, h, tile = ins[5], ins[9], ins[14]
    js, b = _bucket_of(task, cb, NC, NJ)
    start = b << (js + 1)
    mid = start + (tl.full((), 1, tl.int64) << js)
    s = tl.maximum(start - cb, 0)
    m = tl.minimum(tl.maximum(mid - cb, 0), NC)
    e = tl.minimum(start + 2 * (mid - start) - cb, NC)
    if (js >= 0) & (m < e):  # readers of this bucket in the row
        hs = _pair_zeros(KA, KB, BV, ACC)
        if HAS_INIT:
            if start <= cb:
                hs = _pair_add(hs, _pair_in(h0 + ((row64 * NJ + js) * H + h) * K * V, tile, KB, ACC))
                if m > 0:
                    hs = _pair_add(hs, _pair_in(low + (row64 * H + h) * K * V, tile, KB, ACC))
        none = tl.zeros((), dtype=ACC)  # the state a walk does not touch
        hs = _walk_chunks(ins, none, hs, s, m, js, False, False, True, not HAS_INIT,
                          G, H, K, V, C, KB, ACC, PREC, DOT)[1]
        hs = _walk_chunks(ins, hs, none, m, e - 1, js, True, True, False, False,
                          G, H, K, V, C, KB, ACC, PREC, DOT)[0]
        _pair_record(ins[4], hs, (e - 1) * NJ + js, row64, ins[8], h, H, K, V, tile, KB)


@triton.jit
def _top_walk(ins, h0, p0, low, cb, NC, js, top_exp, H: tl.constexpr, G: tl.constexpr, K: tl.constexpr,
              V: tl.constexpr, C: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr,
              HAS_INIT: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """The capped top, window by window (2^top_exp chunks): every chunk reads its state h, the
    windows before its own. Through a window, h is pushed on (once a window has closed before:
    absolute window > 0) and the window's own sum p is built (when a later chunk of the row reads
    it), then p joins h. Four loop bodies, picked per window, so that no loop holds a branch."""
    row64, h, tile = ins[5], ins[9], ins[14]
    hs = _pair_zeros(KA, KB, BV, ACC)
    ps = _pair_zeros(KA, KB, BV, ACC)
    if HAS_INIT:
        hs = _pair_add(hs, _pair_in(h0 + ((row64 * (js + 1) + js) * H + h) * K * V, tile, KB, ACC))
        ps = _pair_add(ps, _pair_in(p0 + (row64 * H + h) * K * V, tile, KB, ACC))
        ps = _pair_add(ps, _pair_in(low + (row64 * H + h) * K * V, tile, KB, ACC))
    te = tl.minimum(top_exp, 62).to(tl.int64)
    for wa in range(cb >> te, ((cb + NC - 1) >> te) + 1):
        lo = tl.maximum(wa << te, cb) - cb
        hi = tl.minimum((wa + 1) << te, cb + NC) - cb
        if hi < NC:  # a later chunk reads this window's sum
            if wa > 0:
                hs, ps = _walk_chunks(ins, hs, ps, lo, hi, js, True, True, True, not HAS_INIT,
                                      G, H, K, V, C, KB, ACC, PREC, DOT)
            else:
                ps = _walk_chunks(ins, hs, ps, lo, hi, js, True, False, True, not HAS_INIT,
                                  G, H, K, V, C, KB, ACC, PREC, DOT)[1]
            hs = _pair_add(hs, ps)
            ps = _pair_zeros(KA, KB, BV, ACC)
        elif wa > 0:
            hs = _walk_chunks(ins, hs, ps, lo, hi, js, True, True, False, False,
                              G, H, K, V, C, KB, ACC, PREC, DOT)[0]
        else:
            _walk_chunks(ins, hs, ps, lo, hi, js, True, False, False, False,
                         G, H, K, V, C, KB, ACC, PREC, DOT)


@triton.jit
def prefix_scan_delta_kernel(
    k, u, w, g_cum, states, sync, S, NC, NJ, NSLOT, NH,
    H: tl.constexpr, G: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    C: tl.constexpr, KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr, NVT: tl.constexpr,
    PUBLISH: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    """The delta rule's level states by prefixes, for rows without an initial state (absolute
    chunk = row-local chunk). A reader's levels partition every chunk before it, and each
    transition is linear, so level js of chunk c is X(b_js, c) - X(b_js+1, c), where b_j = c with
    its j lowest bits cleared and X(b, c) the plain recurrent state at chunk b (all sources before
    it) pushed on to c. This records X(b_js, c) in the level's slot (``chunk_output_kernel``
    weights it by lambda_js minus the level read below it) with two kinds of task in one launch:
    - the plain recurrence (the first NH * NVT tasks, one per row, head and value tile), which
      records X(c, c) at every chunk c > 0 in the slot of its lowest set bit (the top's above
      NJ - 2), and publishes how far it got every PUBLISH chunks;
    - the boundaries (one task per even chunk b with readers after it, in order of b), each
      waiting for its recurrence to reach b (``_wait_for``), then pushing X(b, b) on through the
      chunks that read it: 2^tz(b) - 1 of them, 2^top_exp - 1 for the top's windows.
    So boundaries run on the SMs the recurrence leaves idle (72 recurrences on 132 SMs at 16K x 2,
    192 / 384) instead of after it. Tasks are numbered in the order programs start (a counter in
    ``sync``, whose first NH * NVT entries are the recurrences' progress), so every task a program
    waits for has started before it and runs to its end: no deadlock, whatever order the GPU
    starts programs in. Every source enters one push with its contribution, and a boundary's
    state is pushed only to its readers: at 2K (32 chunks of 64, top windows of 16) 80 pushes a
    row where the bucket scans (``level_scan_delta_kernel``) take 130. The top before its first
    window holds nothing and is neither recorded nor read. Same tiles and k and W as the bucket
    scan."""
    task = tl.atomic_add(sync + NH * NVT, 1)  # in the order programs start
    rhv = task % (NH * NVT)
    row, h, grp, dv, vm, tile = delta_tile(rhv // NVT, rhv % NVT, H, G, K, V, KA, KB, BV)
    ins = (k, u, w, g_cum, states, row.to(tl.int64), S, NJ, NSLOT, h, grp, tl.arange(0, C), dv, vm, tile)
    if task < NH * NVT:
        _prefix_walk(ins, sync + rhv, NC, NJ, PUBLISH, K, V, C, KA, KB, BV, G, H, ACC, PREC, DOT)
    else:
        _boundary_walk(ins, sync + rhv, task // (NH * NVT) - 1, NC, NJ, K, V, C, KB, G, H, ACC, PREC, DOT)


@triton.jit
def _prefix_slot(c, NJ):
    """The scan whose slot records X(c, c) (c > 0): its lowest set bit, or the top above NJ - 2."""
    c64 = tl.zeros((), tl.int64) + c
    return tl.minimum(tl_bit_length(c64 & -c64) - 1, NJ - 1)


@triton.jit
def _prefix_walk(ins, flag, NC, NJ, PUBLISH: tl.constexpr, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr,
                 KA: tl.constexpr, KB: tl.constexpr, BV: tl.constexpr, G: tl.constexpr, H: tl.constexpr,
                 ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """The plain recurrence through chunks 0 .. NC - 2, recording the state each next chunk
    starts from (``_prefix_slot``); every PUBLISH chunks it tells ``flag`` the last chunk
    recorded (a barrier in the inner loop would stop its loads being prefetched)."""
    states, row64, NSLOT, h, tile = ins[4], ins[5], ins[8], ins[9], ins[14]
    none = tl.zeros((), dtype=ACC)
    ps = _pair_zeros(KA, KB, BV, ACC)
    if NC > 1:
        ps = _delta_step(ins, none, ps, 0, 0, False, False, True, True, G, H, K, V, C, KB, ACC, PREC, DOT)[1]
        _pair_record(states, ps, NJ, row64, NSLOT, h, H, K, V, tile, KB)  # chunk 1: its lowest bit, scan 0
    for c0 in range(2, NC, PUBLISH):
        c1 = tl.minimum(c0 + PUBLISH, NC)
        for c in range(c0, c1):
            ps = _delta_step(ins, none, ps, c - 1, 0, False, False, True, False, G, H, K, V, C, KB, ACC, PREC, DOT)[1]
            _pair_record(states, ps, c * NJ + _prefix_slot(c, NJ), row64, NSLOT, h, H, K, V, tile, KB)
        _publish(flag, c1 - 1)


@triton.jit
def _publish(flag, c):
    """The recurrence has recorded X(c, c): every thread's stores done (barrier), then released
    to the GPU with c, as a grid-wide barrier releases its arrival."""
    tl.debug_barrier()
    tl.atomic_xchg(flag, c, sem="release", scope="gpu")


@triton.jit
def _wait_for(flag, c):
    """Spin until the recurrence behind ``flag`` has published chunk c (acquire), then let every
    thread on. Bounded: a bug then shows as a wrong output, not as a GPU that hangs."""
    seen = tl.atomic_add(flag, 0, sem="acquire", scope="gpu")
    spins = 0
    while (seen < c) & (spins < 1 << 24):  # ~10 s; a recurrence over 1M tokens takes ~50 ms
        seen = tl.atomic_add(flag, 0, sem="acquire", scope="gpu")
        spins += 1
    tl.debug_barrier()


@triton.jit
def _boundary_walk(ins, flag, task, NC, NJ, K: tl.constexpr, V: tl.constexpr, C: tl.constexpr, KB: tl.constexpr,
                   G: tl.constexpr, H: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """Boundary ``task``: chunk b = 2 (task + 1), whose lowest set bit js (the top's NJ - 1 at or
    above it: its windows are 2^(NJ - 1) chunks when capped) gives its 2^js - 1 readers; level 0
    has none. X(b, b), recorded by the recurrence (once ``flag`` says so), pushed through chunks
    b .. e - 2 and recorded at each next."""
    states, row64, NSLOT, h, tile = ins[4], ins[5], ins[8], ins[9], ins[14]
    b = 2 * (task.to(tl.int64) + 1)
    js = _prefix_slot(b, NJ)
    e = tl.minimum(b + (tl.full((), 1, tl.int64) << js), NC)
    if b + 1 < e:
        _wait_for(flag, b)
        none = tl.zeros((), dtype=ACC)
        hs = _pair_in(slot_tile(states, row64, b * NJ + js, NSLOT, h, H, K, V), tile, KB, ACC)
        hs = _walk_chunks(ins, hs, none, b, b + 1, js, False, True, False, False,
                          G, H, K, V, C, KB, ACC, PREC, DOT)[0]
        hs = _walk_chunks(ins, hs, none, b + 1, e - 1, js, True, True, False, False,
                          G, H, K, V, C, KB, ACC, PREC, DOT)[0]
        _pair_record(states, hs, (e - 1) * NJ + js, row64, NSLOT, h, H, K, V, tile, KB)


@triton.jit
def _walk_chunks(ins, hs, ps, lo, hi, js, RECORD: tl.constexpr, PUSH_H: tl.constexpr, PUSH_P: tl.constexpr,
                 FRESH: tl.constexpr, G: tl.constexpr, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                 C: tl.constexpr, KB: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """``_delta_step`` through row-local chunks [lo, hi). FRESH: p is zero at lo (a restarted
    sum), so its first push, taken out of the loop, has no W p product."""
    if FRESH:
        if lo < hi:
            hs, ps = _delta_step(ins, hs, ps, lo, js, RECORD, PUSH_H, PUSH_P, True,
                                 G, H, K, V, C, KB, ACC, PREC, DOT)
            lo += 1
    for c in range(lo, hi):
        hs, ps = _delta_step(ins, hs, ps, c, js, RECORD, PUSH_H, PUSH_P, False,
                             G, H, K, V, C, KB, ACC, PREC, DOT)
    return hs, ps


@triton.jit
def _delta_step(ins, hs, ps, c, js, RECORD: tl.constexpr, PUSH_H: tl.constexpr, PUSH_P: tl.constexpr,
                FRESH: tl.constexpr, G: tl.constexpr, H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
                C: tl.constexpr, KB: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """Row-local chunk c: record h where it reads this scan (RECORD); push h through the chunk's
    transition (PUSH_H: decay h - Kd^T W h); push p through it with the chunk's contribution
    (PUSH_P: decay p + Kd^T (U - W p), no W p term if FRESH: p is zero). h and p are pairs of key
    tiles (``delta_tile``), or a scalar placeholder where not pushed."""
    k, u, w, g_cum, states, row64, S, NJ, NSLOT, h, grp, i, dv, vm, tile = ins
    if RECORD:
        _pair_record(states, hs, c * NJ + js, row64, NSLOT, h, H, K, V, tile, KB)
    g_end, decay = _chunk_decay(g_cum, row64, S, c, H, h, C, ACC)
    wt, kt, ut, e = _delta_tiles(k, u, w, g_cum, row64, S, c, i, g_end, grp, h, tile, dv, vm, G, H, V, C, KB, ACC)
    if PUSH_H:
        hs = _pair_axpy(decay, hs, _keys_t(kt, -_w_times(wt, hs, KB, DOT, PREC, ACC) * e, KB, DOT, PREC, ACC))
    if PUSH_P:
        if FRESH:
            ps = _keys_t(kt, ut * e, KB, DOT, PREC, ACC)
        else:
            ps = _pair_axpy(decay, ps, _keys_t(kt, (ut - _w_times(wt, ps, KB, DOT, PREC, ACC)) * e, KB, DOT, PREC, ACC))
    return hs, ps


@triton.jit
def _delta_tiles(k, u, w, g_cum, row64, S, c, i, g_end, grp, h, tile, dv, vm, G: tl.constexpr, H: tl.constexpr,
                 V: tl.constexpr, C: tl.constexpr, KB: tl.constexpr, ACC: tl.constexpr):
    """Chunk c's W and k as pairs of [C, KA] and [C, KB] tiles (as stored, KA + KB wide; with KB = 0
    the second repeats the first), its U tile [C, BV] (in ACC), and the decay of its tokens to its
    end e = exp(G_end - G) as a [C, 1] column: what the delta rule pushes a state through it with."""
    tok = row64 * S + c * C + i
    wk = tile[0][0].shape[0] + KB  # the width W and k are stored at
    wa = tl.load(w + (tok[:, None] * H + h) * wk + tile[0][0][None, :])
    ka = tl.load(k + (tok[:, None] * G + grp) * wk + tile[0][0][None, :])
    wb, kb = wa, ka
    if KB > 0:
        wb = tl.load(w + (tok[:, None] * H + h) * wk + tile[1][0][None, :])
        kb = tl.load(k + (tok[:, None] * G + grp) * wk + tile[1][0][None, :])
    ut = head_rows(u, tok, H, h, V, dv, vm).to(ACC)
    return (wa, wb), (ka, kb), ut, _decay_to_end(g_cum, tok, g_end, H, h, ACC)[:, None]
