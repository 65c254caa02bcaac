"""Long delta-rule inputs in consecutive segments (``backend="triton"``).

The delta rule's chunked kernels keep a [K, V] state per chunk and level: T log T, ~200 GB for one
row of 1M tokens at 6 x 192 / 384 in bf16 in the forward, more in the Triton backward. A dense
input whose states would exceed ``DELTA_STATE_BUDGET`` runs in segments of a power-of-two length,
each continuing from the level state the one before ends with. Exact in every case:

- Without gradients, each segment is the Triton forward from that level state.
- With gradients, segment [p, p + n) with p a multiple of n sees every earlier token at one level
  per token, the same for all its queries (bit_length of the position XOR is decided above bit
  log2(n)). So its output is the segment on its own (the Triton forward and backward of a fresh
  sequence: levels inside it depend only on bits below log2(n)) plus the readout of the carried
  level states S, which only pass through the segment's transitions: o_t += sum_l lambda_t[l]
  Qt_t^T P_c S_l, where P_c is the product of the chunk transitions M = e^(G_end) I - Kd^T W
  before chunk t's (``block.block_terms``). The segment then hands on relevel(P S + F, p, p + n),
  F being the plain delta-rule state of its own tokens. ``_carried`` computes both in torch,
  chunk by chunk within blocks of ``BLOCK`` chunks and by log-depth products over the blocks'
  totals, as a checkpoint (``_Carried``: nothing of it is kept between forward and backward). On
  an H200 at 6 x 192 / 384 in bf16, 1M tokens fwd+bwd at B = 1 take 4.26 s and 59 GiB in 16
  segments of 64K (one pass would need ~670 GB); the fresh segments are ~1.9 s of that
  (benchmarks/RESULTS.md).
- Cuts: from position 0, segments of the budget's length. From an initial state that every row
  shares, pieces aligned to their own power-of-two length (``_pieces``: they grow from an
  unaligned start until they reach it). When the final state is asked for, the last chunk runs
  through the differentiable Triton forward from the carried state (its backward recomputes that
  chunk through the torch form). Rows from different positions cannot share cuts: each segment
  runs through the differentiable Triton forward from the last one's state, whose backward
  recomputes the whole segment through the torch form (~5 ms a chunk at 6 x 192 / 384 on an
  H200: 79 s at 1M).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..levels import inter_chunk_scans, relevel
from .block import block_terms
from .recompute import recompute_grads

# Bytes the delta rule's per-chunk level states may take in one call; None: half the device's
# free memory (CUDA, counting what torch's allocator holds unused), no bound elsewhere.
DELTA_STATE_BUDGET: int | None = None
# Level-state-sized fp32 tensors autograd keeps per chunk when a segment's backward recomputes
# through the torch chunked form (``chunk.chunk_loglinear_attention``, reading every level from a
# differentiable state): 7.3 measured with saved-tensor hooks at K = 64, V = 128
# (``test_torch_recompute_memory_per_chunk``).
RECOMPUTE_STATES_PER_CHUNK = 8
# Chunks per block of ``_carried``: one chunk after another within a block, log-depth products
# over the blocks' totals (K x K each). 8 keeps both tiers short at 256 to 4096 chunks a segment.
BLOCK = 8


def segment_length(q, v, num_levels, beta, cu_seqlens, initial_state, grad, output_final_state, chunk):
    """Tokens per segment (a power of two, at least ``chunk``), or None when the delta rule's
    per-chunk states fit ``DELTA_STATE_BUDGET`` in one call: those the forward records, and with
    gradients also the Triton backward's fp32 gradients of them. Scalar decay records states
    linear in T, and packed documents are not cut."""
    if beta is None or cu_seqlens is not None:
        return None
    chunks = -(-q.shape[1] // chunk)
    acc = 8 if q.dtype == torch.float64 else 4
    state = q.shape[0] * v.shape[2] * q.shape[3] * v.shape[3]  # values of one [K, V] state per row and head
    triton_bytes = lambda n: state_bytes(q, v, num_levels, initial_state, grad, n, chunk)  # noqa: E731
    budget = _budget(q.device, triton_bytes(chunks))
    if budget is None:
        return None

    def need(n):  # bytes a segment of n chunks keeps at once
        if not grad:
            return triton_bytes(n)
        recompute = RECOMPUTE_STATES_PER_CHUNK * num_levels * acc * state  # a chunk through torch
        if initial_state is not None and q.shape[0] > 1:  # rows may start apart: the chain
            return n * recompute
        fresh = max(state_bytes(q, v, num_levels, None, grad, n, chunk), _carried_bytes(q, v, n, chunk, acc))
        return max(fresh, recompute) if output_final_state else fresh  # the last chunk recomputes

    n = 1 << (chunks - 1).bit_length()
    while n > 1 and need(n) > budget:
        n //= 2
    return None if n >= chunks else n * chunk


def state_bytes(q, v, num_levels, initial_state, grad, num_chunks, chunk):
    """Bytes of the per-chunk level states one Triton call keeps over ``num_chunks`` chunks: the
    forward's recorded states, and with ``grad`` the backward's fp32 gradients of them."""
    last = num_chunks - 1 if initial_state is None else 1 << 62  # from a state every scan counts
    num_js = inter_chunk_scans(last, num_levels, chunk)[0]
    stored, acc = (8, 8) if q.dtype == torch.float64 else (q.element_size(), 4)
    state = q.shape[0] * v.shape[2] * q.shape[3] * v.shape[3]
    return num_chunks * state * (num_js * stored + (grad and (num_js + 2) * acc))


def _budget(device, whole):
    """``DELTA_STATE_BUDGET``, or None when ``whole`` bytes fit it."""
    budget = DELTA_STATE_BUDGET
    if budget is None:
        if device.type != "cuda":
            return None
        if whole <= torch.cuda.get_device_properties(device).total_memory // 8:
            return None  # far inside any bound: no driver query of the free memory on every call
        free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        budget = free // 2
    return None if whole <= budget else budget


def _carried_bytes(q, v, num_chunks, chunk, acc):
    """What ``_carried``'s backward holds for a segment of ``num_chunks`` chunks: the running
    products and block states of every step ([K, K] and [K, V] a chunk, a few of each with their
    products' saved inputs), the outer tier's products, and a few chunk-sized tensors."""
    batch, heads, key_dim, value_dim = q.shape[0], v.shape[2], q.shape[3], v.shape[3]
    per_chunk = 4 * key_dim * key_dim + 4 * key_dim * value_dim + chunk * (16 * key_dim + 4 * value_dim)
    return num_chunks * batch * heads * acc * per_chunk


def in_segments(inputs, initial_state, output_final_state, seg, grad, forward, differentiable, chunk):
    """The delta rule over dense rows in segments of at most ``seg`` tokens (module docstring):
    ``forward`` and ``differentiable`` are the Triton forward without and with autograd, called as
    (q, k, v, g, lam, beta, cu_seqlens, initial_state, output_final_state), on chunks of ``chunk``."""
    length = inputs[0].shape[1]
    start = _shared_start(initial_state)
    if start is None:  # rows from different positions: plain cuts, each from the last one's state
        cuts = [(s0, min(s0 + seg, length)) for s0 in range(0, length, seg)]
        return _chain(inputs, initial_state, output_final_state, cuts, differentiable if grad else forward)
    if grad:
        return _carried_segments(inputs, initial_state, start, output_final_state, seg, differentiable, chunk)
    return _chain(inputs, initial_state, output_final_state, _pieces(start, length, seg, exact=False), forward)


def _shared_start(initial_state):
    """The position every row starts at (0 without a state), or None when the rows' differ (one
    host read of the positions, which the initial-state path's planner makes anyway)."""
    if initial_state is None:
        return 0
    positions = initial_state.position.tolist()
    return positions[0] if len(set(positions)) == 1 else None


def _pieces(start, length, seg, exact):
    """Cuts [(s0, s1)] of tokens [0, length) at absolute positions from ``start``: each piece starts
    at a multiple of the power of two n it fits in (n at most ``seg``; from position p > 0, n
    divides p, so pieces from an unaligned start grow by powers of two until they reach ``seg``).
    Every piece is n long, except that the last may be shorter unless ``exact``, where each is
    the largest power of two that fits."""
    cuts, s0 = [], 0
    while s0 < length:
        p = start + s0
        n = seg if p == 0 else min(seg, p & -p)
        m = min(n, length - s0)
        if exact:
            m = 1 << (m.bit_length() - 1)
        cuts.append((s0, s0 + m))
        s0 += m
    return cuts


def _chain(inputs, initial_state, output_final_state, cuts, run):
    """Each cut through ``run`` from the level state the one before ends with."""
    o = torch.empty_like(inputs[2])
    state = initial_state
    for s0, s1 in cuts:
        o[:, s0:s1], state = run(*[x[:, s0:s1] for x in inputs], None, state, True)
    return o, (state if output_final_state else None)


def _carried_segments(inputs, initial_state, start, output_final_state, seg, differentiable, chunk):
    """With gradients, every row from position ``start``: each piece fresh through the Triton
    kernels, plus the carried states' readout and hand-on of ``_carried`` (module docstring). With
    the final state asked for, the last chunk runs through ``differentiable`` from the level state
    before it (its backward recomputes that one chunk through torch)."""
    from ..ops import LevelState

    q, k, v, g, lam, beta = inputs
    batch, length = q.shape[:2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    if initial_state is None:
        levels = v.new_zeros(batch, v.shape[2], lam.shape[-1], q.shape[3], v.shape[3], dtype=acc)
    else:  # seen from ``start`` (``_carried``'s form)
        levels = relevel(initial_state.levels.to(acc), initial_state.position - 1, initial_state.position)
    body = length - min(length, chunk) if output_final_state else length
    o = torch.empty_like(v)
    for s0, s1 in _pieces(start, body, seg, exact=output_final_state):
        part = [x[:, s0:s1] for x in inputs]
        fresh = differentiable(*part, None, None, False)[0]
        readout = start + s0 > 0 or initial_state is not None
        read, levels = _Carried.apply(levels, (start + s0, start + s1, readout, s1 < length, chunk), *part)
        o[:, s0:s1] = fresh if read is None else (fresh.to(acc) + read).to(v.dtype)
    if not output_final_state:
        return o, None
    position = torch.full((batch,), start + body, dtype=torch.int64, device=q.device)
    o[:, body:], final = differentiable(*[x[:, body:] for x in inputs], None, LevelState(levels, position), True)
    return o, final


class _Carried(torch.autograd.Function):
    """``_carried`` as a checkpoint: the forward keeps only its inputs, the backward runs it again
    under autograd."""

    @staticmethod
    def forward(ctx, levels, args, *inputs):
        ctx.save_for_backward(levels, *inputs)
        ctx.args = args  # (start, end, readout, carry, chunk) of ``_carried``
        return _carried(*inputs, levels, *args)

    @staticmethod
    def backward(ctx, dread, dlevels):
        needs = ctx.needs_input_grad[:1] + ctx.needs_input_grad[2:]
        run = lambda levels, *inputs: _carried(*inputs, levels, *ctx.args)  # noqa: E731
        grads = recompute_grads(run, ctx.saved_tensors, needs, (dread, dlevels))
        return (grads[0], None, *grads[1:])


class _Product(torch.autograd.Function):
    """a @ b (broadcasting batch dims) with TF32 products in the forward and the backward when
    ``tf32``: for half-precision inputs, whose Triton kernels take half operands. torch's own
    matmul backward ran in IEEE fp32 on the H200 even inside a "high" precision context."""

    @staticmethod
    def forward(ctx, a, b, tf32):
        ctx.save_for_backward(a, b)
        ctx.tf32 = tf32
        with _matmul_precision(tf32):
            return a @ b

    @staticmethod
    def backward(ctx, d):
        a, b = ctx.saved_tensors
        with _matmul_precision(ctx.tf32):
            da = (d @ b.transpose(-1, -2)).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
            db = (a.transpose(-1, -2) @ d).sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        return da, db, None


@contextmanager
def _matmul_precision(tf32):
    """torch's fp32 matmul precision "high" (TF32) inside, when ``tf32``; restored after."""
    before = torch.get_float32_matmul_precision()
    if tf32:
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def _carried(q, k, v, g, lam, beta, levels, start, end, readout, carry, chunk):
    """For the piece of tokens [start, end) of dense rows (``start`` a multiple of a power of two
    at least its length), with ``levels`` [N, H, L, K, V] the level states seen from ``start``:
    (the readout of the levels by the piece's queries [N, T, H, V] or None without ``readout``,
    the level states seen from ``end`` or None without ``carry``), in the dtype of ``levels``,
    for chunks of ``chunk`` tokens.

    The chunk transitions M = d I - Kd^T W are taken in two tiers: one chunk after another
    within blocks of ``BLOCK`` chunks (all blocks at once), applied to the running product (for
    the readout) and to the block's own state (what its tokens leave at its end, for the
    hand-on), never formed as K x K matrices; then log-depth products of the blocks' totals."""
    dtype = levels.dtype
    num_heads, num_levels = v.shape[2], lam.shape[-1]
    length = q.shape[1]
    num_blocks = -(-length // (chunk * BLOCK))
    tf32 = q.dtype in (torch.bfloat16, torch.float16)
    mm = lambda a, b: _Product.apply(a, b, tf32)  # noqa: E731

    def blocks(x, repeat=1):  # [N, T, X, ...] -> [BLOCK, N, X * repeat, NB, C, ...], null tokens padded
        x = x.to(dtype)
        if num_blocks * BLOCK * chunk > length:
            x = torch.cat([x, x.new_zeros(x.shape[0], num_blocks * BLOCK * chunk - length, *x.shape[2:])], 1)
        x = x.repeat_interleave(repeat, dim=2) if repeat > 1 else x
        x = x.unflatten(1, (num_blocks, BLOCK, chunk))  # [N, NB, BLOCK, C, X, ...]
        return x.permute(2, 0, 4, 1, 3, *range(5, x.dim())).contiguous()

    rep = num_heads // q.shape[2]
    t = block_terms(blocks(q, rep), blocks(k, rep), blocks(g), blocks(beta))
    eye = torch.eye(q.shape[3], dtype=dtype, device=q.device)
    vb = blocks(v) if carry else None
    queries, product, own = [], None, None  # product: the transitions before chunk j of each block
    for j in range(BLOCK):
        decay, kd_t, w = t.decay[j][..., None, None], t.Kd[j].transpose(-1, -2), t.W[j]
        queries.append(t.Qt[j] if product is None else mm(t.Qt[j], product))
        product = decay * eye - mm(kd_t, w) if product is None else decay * product - mm(kd_t, mm(w, product))
        if carry:
            pushed = mm(t.R[j], vb[j])
            own = pushed if own is None else decay * own - mm(kd_t, mm(w, own)) + pushed
    read = None
    if readout:
        y = mm(torch.stack(queries), _exclusive(_products(product, mm), eye))  # the queries moved to the segment's start
        lam_b = blocks(lam)
        # Levels below the one the last merge filled are empty (``relevel``); at 0 nothing merged.
        low = min((start ^ (start - 1)).bit_length(), num_levels - 1) if start > 0 else 0
        read = sum(lam_b[..., lvl, None] * mm(y, levels[:, :, lvl, None]) for lvl in range(low, num_levels))
        read = read.permute(1, 3, 0, 4, 2, 5).flatten(1, 3)[:, :length]
    if not carry:
        return read, None
    after = _exclusive(_products(product, mm, reverse=True), eye, reverse=True)  # blocks after each block
    own = mm(after, own).sum(2)  # the segment's tokens pushed to its end
    moved = torch.einsum("nhkj,nhljv->nhlkv", mm(after[:, :, 0], product[:, :, 0]), levels)
    moved = torch.cat([moved[:, :, :1] + own[:, :, None], moved[:, :, 1:]], 2)
    where = lambda p: torch.full((q.shape[0],), p, dtype=torch.int64, device=q.device)  # noqa: E731
    return read, relevel(moved, where(start), where(end))


def _exclusive(products, eye, reverse=False):
    """Inclusive products [..., n, K, K] of ``_products`` shifted to exclusive ones: out[c] the
    product of the transitions before c (``reverse``: after c), the identity at the end."""
    one = eye.expand_as(products[..., :1, :, :])
    if reverse:
        return torch.cat([products[..., 1:, :, :], one], -3)
    return torch.cat([one, products[..., :-1, :, :]], -3)


def _products(m, mm=torch.matmul, reverse=False):
    """Products of the transitions m [..., NC, K, K] in the order they act, out[c] = m[c] ... m[0]
    (``reverse``: m[NC-1] ... m[c]), by log2(NC) batched products ``mm`` (Hillis-Steele)."""
    out, step, n = m, 1, m.shape[-3]
    while step < n:
        prod = mm(out[..., step:, :, :], out[..., : n - step, :, :])
        out = torch.cat([prod, out[..., n - step :, :, :]] if reverse else [out[..., :step, :, :], prod], -3)
        step *= 2
    return out
