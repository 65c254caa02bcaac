"""Long delta-rule inputs in consecutive segments (``backend="triton"``).

The delta rule's chunked kernels keep a [K, V] state per chunk and level: T log T, ~200 GB for one
row of 1M tokens at 6 x 192 / 384 in bf16 in the forward, more in the Triton backward. A dense
input whose states would exceed ``DELTA_STATE_BUDGET`` runs in segments of a power-of-two length,
each continuing from the level state the one before ends with. Exact in every case:

- Without gradients, each segment is the Triton forward from that level state.
- With gradients and rows from position 0 (training), segment [p, p + n) with p a multiple of n
  sees every earlier token at one level per token, the same for all its queries (bit_length of
  the position XOR is decided above bit log2(n)). So its output is the segment on its own (the
  Triton forward and backward of a fresh sequence: levels inside it depend only on bits below
  log2(n)) plus the readout of the carried level states S, which only pass through the
  segment's transitions: o_t += sum_l lambda_t[l] Qt_t^T P_c S_l, where P_c is the product of the
  chunk transitions M = e^(G_end) I - Kd^T W before chunk t's (``block.block_terms``). The segment
  then hands on relevel(P S + F, p, p + n), F being the plain delta-rule state of its own tokens.
  ``_carried`` computes both in torch, chunk by chunk within blocks of ``BLOCK`` chunks and by
  log-depth products over the blocks' totals, as a checkpoint (``_Carried``: nothing of it is
  kept between forward and backward). On an H200 at 6 x 192 / 384 in bf16, 1M tokens fwd+bwd at
  B = 1 take 4.26 s and 59 GiB in 16 segments of 64K (one pass would need ~670 GB); the fresh
  segments are ~1.9 s of that (benchmarks/RESULTS.md).
- With gradients from an initial state (rows from any position, which no power of two aligns),
  or when the final state is asked for, each segment (the last one, respectively) runs through
  the differentiable Triton forward from the last one's state, whose backward recomputes through
  the torch chunked form (~5 ms a chunk at 6 x 192 / 384 on an H200).
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
# through the torch chunked form (``chunk.chunk_loglinear_attention``): 5.6 measured with
# saved-tensor hooks at K = 64, V = 128 (``test_torch_recompute_memory_per_chunk``).
RECOMPUTE_STATES_PER_CHUNK = 6
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
        recompute = n * RECOMPUTE_STATES_PER_CHUNK * num_levels * acc * state  # through torch
        if initial_state is not None:
            return recompute
        fresh = max(triton_bytes(n), _carried_bytes(q, v, n, chunk, acc))
        return max(fresh, recompute) if output_final_state else fresh  # the last segment recomputes

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


def in_segments(inputs, initial_state, output_final_state, seg, grad, forward, differentiable):
    """The delta rule over dense rows in segments of ``seg`` tokens (module docstring): ``forward``
    and ``differentiable`` are the Triton forward without and with autograd, called as
    (q, k, v, g, lam, beta, cu_seqlens, initial_state, output_final_state)."""
    if grad and initial_state is None:
        return _carried_segments(inputs, output_final_state, seg, differentiable)
    run = differentiable if grad else forward
    q, v = inputs[0], inputs[2]
    o = torch.empty_like(v)
    state = initial_state
    for s0 in range(0, q.shape[1], seg):
        part = [x[:, s0 : s0 + seg] for x in inputs]
        o[:, s0 : s0 + seg], state = run(*part, None, state, True)
    return o, (state if output_final_state else None)


def _carried_segments(inputs, output_final_state, seg, differentiable):
    """Training from position 0: each segment fresh through the Triton kernels, plus the carried
    states' readout and hand-on of ``_carried`` (module docstring)."""
    from ..ops import LevelState

    q, k, v, g, lam, beta = inputs
    batch, length = q.shape[:2]
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    levels = v.new_zeros(batch, v.shape[2], lam.shape[-1], q.shape[3], v.shape[3], dtype=acc)
    o = torch.empty_like(v)
    for s0 in range(0, length, seg):
        s1 = min(s0 + seg, length)
        part = [x[:, s0:s1] for x in inputs]
        if s1 == length and output_final_state:
            position = torch.full((batch,), s0, dtype=torch.int64, device=q.device)
            o[:, s0:], final = differentiable(*part, None, LevelState(levels, position), True)
            return o, final
        fresh = differentiable(*part, None, None, False)[0]
        read, levels = _Carried.apply(levels, s0, s1, s1 < length, *part)
        o[:, s0:s1] = fresh if read is None else (fresh.to(acc) + read).to(v.dtype)
    return o, None


class _Carried(torch.autograd.Function):
    """``_carried`` as a checkpoint: the forward keeps only its inputs, the backward runs it again
    under autograd."""

    @staticmethod
    def forward(ctx, levels, start, end, carry, *inputs):
        ctx.save_for_backward(levels, *inputs)
        ctx.args = (start, end, carry)
        return _carried(*inputs, levels, start, end, carry)

    @staticmethod
    def backward(ctx, dread, dlevels):
        needs = ctx.needs_input_grad[:1] + ctx.needs_input_grad[4:]
        run = lambda levels, *inputs: _carried(*inputs, levels, *ctx.args)  # noqa: E731
        grads = recompute_grads(run, ctx.saved_tensors, needs, (dread, dlevels))
        return (grads[0], None, None, None, *grads[1:])


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


def _carried(q, k, v, g, lam, beta, levels, start, end, carry):
    """For the segment of tokens [start, end) of dense rows (``start`` a multiple of the segment's
    power-of-two length), with ``levels`` [N, H, L, K, V] the level states seen from ``start``:
    (the readout of the levels by the segment's queries [N, T, H, V] or None at start 0, the
    level states seen from ``end`` or None without ``carry``), in the dtype of ``levels``.

    The chunk transitions M = d I - Kd^T W are taken in two tiers: one chunk after another
    within blocks of ``BLOCK`` chunks (all blocks at once), applied to the running product (for
    the readout) and to the block's own state (what its tokens leave at its end, for the
    hand-on), never formed as K x K matrices; then log-depth products of the blocks' totals."""
    dtype, chunk = levels.dtype, 64
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
    if start > 0:
        y = mm(torch.stack(queries), _exclusive(_products(product, mm), eye))  # the queries moved to the segment's start
        lam_b = blocks(lam)
        # Levels below the one the last merge filled are empty (``relevel``).
        low = min((start ^ (start - 1)).bit_length(), num_levels - 1)
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
