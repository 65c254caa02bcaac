"""Chunked log-linear attention with Triton kernels: the ``backend="triton"`` whole-sequence path.

Stages (one launch each, all chunk- or level-parallel; SPEC §4):
1. ``decay_triton.chunk_decay_kernel``: chunk-local cumulative log decay G and each chunk's total;
2. ``intra_triton.ut_factors_kernel`` (delta rule only): A^-1 diag(beta), W, U, the readout
   query Qt and the level-weighted intra-chunk matrix Pw per chunk (``_DeltaFactors``);
3. ``scan_triton.level_scan_kernel`` (``level_scan_delta_kernel``): every inter-chunk level is
   its own scan over chunks, recording the state each chunk reads (scalar decay: grid sequences
   x heads x levels x value tiles; the delta rule: one program per bucket of each level; both
   with the capped top in a second launch beside it). The delta rule's forward without an
   initial state records prefix states instead
   (``prefix_scan_delta_kernel``: the plain recurrence, and in the same launch each boundary
   pushed to its readers once the recurrence has passed it; 80 pushes a row at 2K where the
   bucket scan takes 130);
4. ``output_triton.chunk_output_kernel``: intra-chunk (P * Lambda) V plus the level readout.
The final LevelState is assembled in torch from the recorded states of each sequence's last
chunk (``_Recorded``: under scalar decay one state per run of chunks reading it, so the buffer is
linear in T) and ``block.block_terms`` of that one chunk (small: one chunk per sequence).

Layout: dense batches without an initial state run on the inputs in place (padded with null
tokens to a multiple of the chunk when T is not one): no copies, no host synchronisation.
``cu_seqlens`` or ``initial_state`` go through ``layout.make_layout``, the torch planner, which
reads lengths and start positions on the host (one synchronisation per call) and gathers the
tokens into position-aligned rows.
Memory: the delta rule records a state per chunk and level (T log T); a dense input whose states
would exceed ``segments.DELTA_STATE_BUDGET`` runs in segments (``segments.py``), with or without
gradients.

Gradients: without initial state or final-state output (dense rows or documents packed with
``cu_seqlens``: the training case), ``chunk_bwd_triton`` for scalar decay and
``chunk_bwd_delta_triton`` for the delta rule (recomputed level states, reverse level scans,
chunk-parallel gradient kernels; both checked on an H200 against float64 with fp32 and bf16
inputs, the delta rule's at key 192 / value 384: benchmarks/RESULTS.md). Every other case
recomputes the forward with the torch chunked form and differentiates it with autograd.

Precision: decay, level weights and states accumulate in fp32 (fp64 for fp64 inputs). The
scans' and the output's products of bf16/fp16 inputs take bf16/fp16 tensor-core operands
(``scan_triton.mma``), and the delta rule's chunk factors W, U, Qt, Pw are stored in that dtype
(its UT inverse is formed in fp32 with tf32 products); fp32 inputs use IEEE fp32 unless torch's
float32 matmul precision allows tf32 (``_input_precision``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # guarded: transformers checks every remote-code file's imports; this one loads only with triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = tl = None

from ..levels import inter_chunk_scans, level_tensor, relevel, scan_run, scan_slot_sizes
from .block import block_terms, level_split
from .chunk import chunk_loglinear_attention
from .decay_triton import chunk_decay, chunk_offsets, chunk_reverse_cumsum, row_reverse_cumsum
from .intra_triton import ut_factors_kernel
from .layout import make_layout
from .output_triton import chunk_output_kernel
from .recompute import recompute_grads
from .scan_triton import block_size, key_split, level_scan_delta_kernel, level_scan_kernel, prefix_scan_delta_kernel
from .segments import in_segments, segment_length

CHUNK = 64


def _acc(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


class _Rows:
    """Inputs as rows of position-aligned slots ``[N, S, ...]`` (S = NC * C), plus where they sit."""

    def __init__(self, q, k, v, g, lam, beta, cu_seqlens, initial_state, chunk):
        batch, length = q.shape[:2]
        self.layout = None
        self.chunk = chunk
        if cu_seqlens is None and initial_state is None:
            self.base = torch.zeros(batch, dtype=torch.int64, device=q.device)
            self.num_chunks = -(-length // chunk)
            self.max_chunk = self.num_chunks - 1
        else:
            starts = None if initial_state is None else initial_state.position
            self.layout = make_layout(batch, length, cu_seqlens, starts, chunk, q.device)
            self.base = self.layout.base
            self.num_chunks = self.layout.num_chunks
            self.max_chunk = self.layout.max_base // chunk + self.num_chunks - 1
        self.q, self.k, self.v, self.lam = (self.slots(x) for x in (q, k, v, lam))
        self.g = self.slots(g)
        self.beta = None if beta is None else self.slots(beta)
        self.start = initial_state.position if initial_state is not None else torch.zeros_like(self.base)
        self.num_rows = self.q.shape[0]

    def slots(self, x):
        """[B, T, ...] tokens -> [N, S, ...] contiguous slots (null slots zero)."""
        if self.layout is not None:
            return self.layout.gather(x).flatten(1, 2).contiguous()
        pad = -x.shape[1] % self.chunk
        return (x if pad == 0 else F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))).contiguous()

    def output(self, o, batch, length):
        if self.layout is None:
            return o[:, :length]
        return self.layout.scatter(o.view(self.num_rows, self.num_chunks, -1, *o.shape[2:]), batch, length)


@dataclass
class _Recorded:
    """The inter-chunk level states the scans recorded for the chunks that read them.

    ``states`` is ``[N, slots, H, K, V]``: under the delta rule slot ``c * NJ + js`` for every
    chunk c and scan js; under scalar decay one slot per run of chunks reading the same state
    (``levels.scan_slot_sizes``), which a reader decays from the chunk that recorded it with
    ``chunk_g`` ([N, NC, H] float64 cumulative log decay at chunk starts).
    """

    states: torch.Tensor
    chunk_g: torch.Tensor | None
    num_scans: int
    top_exp: int
    prefix: bool = False  # the delta rule's prefix states (``_prefix_delta_scan``)

    @property
    def num_slots(self) -> int:
        return self.states.shape[1]

    def kernel_args(self):
        """(states, chunk_g, NJ, NSLOT, top_exp) as the kernels take them."""
        chunk_g = self.states if self.chunk_g is None else self.chunk_g  # never read under DELTA
        return self.states, chunk_g, self.num_scans, self.num_slots, self.top_exp

    def read(self, chunk: torch.Tensor, base_chunk: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The states row-local chunk ``chunk`` [N] reads, ``[N, NJ, H, K, V]`` in ``dtype``
        (garbage for scans it does not read: the caller masks them)."""
        n = self.states.shape[0]
        idx = torch.arange(n, device=chunk.device)
        if self.chunk_g is None:
            per_chunk = self.states.view(n, -1, self.num_scans, *self.states.shape[2:])
            read = per_chunk[idx, chunk].to(dtype)
            return _levels_from_prefixes(read, base_chunk + chunk, self.top_exp) if self.prefix else read
        out = []
        for js in range(self.num_scans):
            slot, first = scan_run(base_chunk + chunk, base_chunk, js, self.num_scans, self.chunk_g.shape[1], self.top_exp)
            decay = torch.exp(self.chunk_g[idx, chunk] - self.chunk_g[idx, first]).to(dtype)  # [N, H]
            out.append(self.states[idx, slot].to(dtype) * decay[:, :, None, None])
        return torch.stack(out, 1)


def _levels_from_prefixes(read, chunk, top_exp):
    """Per-level states [N, NJ, H, K, V] of absolute chunks ``chunk`` [N] from the prefix states
    they read (``read``, same shape, garbage in slots not recorded): level js is its prefix minus
    the prefix of the next level read above it; levels not read come out zero, as does the top
    before its first window."""
    shape = (-1,) + (1,) * (read.dim() - 2)
    above = torch.where((chunk >> min(top_exp, 62) > 0).view(shape), read[:, -1], 0.0)
    levels = [above]
    for js in reversed(range(read.shape[1] - 1)):
        prefix = torch.where(((chunk >> js) & 1).bool().view(shape), read[:, js], above)
        levels.append(prefix - above)
        above = prefix
    return torch.stack(levels[::-1], 1)


def _initial_terms(levels, start, base_chunk, num_js, chunk):
    """Split the initial levels (seen from p0 - 1) into what the scans and the first chunk need.

    Returns ``low`` [N, H, L, K, V] (levels inside the first chunk, read per token there), ``h0``
    [N, NJ, H, K, V] and ``p0`` [N, H, K, V] (start values of the level scans).
    """
    n, _, num_levels = levels.shape[:3]
    log_c = chunk.bit_length() - 1
    lvl = torch.arange(num_levels, device=levels.device).view(1, 1, -1, 1, 1)
    is_low = lvl < min(log_c + 1, num_levels - 1)
    aligned = (start % chunk == 0).view(-1, 1, 1, 1, 1)
    high = torch.where(aligned, relevel(levels, start - 1, start), levels * ~is_low)
    low = torch.where(aligned, torch.zeros_like(levels), levels * is_low)
    inter = high[:, :, log_c + 1 :]
    cum = inter.cumsum(2)
    h0 = []
    for js in range(num_js - 1):
        bit = ((base_chunk >> js) & 1).bool().view(-1, 1, 1, 1)
        h0.append(torch.where(bit, inter[:, :, js], cum[:, :, js]))
    h0.append(high[:, :, num_levels - 1])
    pending = inter[:, :, : max(0, num_levels - 2 - log_c)].sum(2)
    return low, torch.stack(h0, 1).contiguous(), pending.contiguous()


def _final_state(rows, recorded, o_dtype, initial_state, num_heads, num_levels, chunk):
    """Level states seen from each sequence's last token (SPEC §3 handoff to decode)."""
    from ..ops import LevelState

    log_c = chunk.bit_length() - 1
    lay = rows.layout
    n = rows.num_rows
    dev = rows.q.device
    if lay is None:
        last = torch.full((n,), rows.num_chunks - 1, dtype=torch.int64, device=dev)
        end = torch.full((n,), rows.length, dtype=torch.int64, device=dev)
    else:
        last, end = lay.last_chunk, lay.end
    idx = torch.arange(n, device=dev)
    num_js = recorded.num_scans
    ca = rows.base // chunk + last
    rec = recorded.read(last, rows.base // chunk, o_dtype)  # [N, NJ, H, K, V]
    start_states = torch.zeros(n, num_heads, num_levels, *rec.shape[-2:], dtype=o_dtype, device=dev)
    for js in range(num_js - 1):
        bit = ((ca >> js) & 1).bool().view(-1, 1, 1, 1)
        start_states[:, :, log_c + 1 + js] = torch.where(bit, rec[:, js], 0.0)
    start_states[:, :, num_levels - 1] = rec[:, num_js - 1]
    a_last = torch.maximum(rows.base + last * chunk, rows.start)
    if initial_state is not None:
        first = relevel(initial_state.levels.to(o_dtype), rows.start - 1, rows.start)
        start_states = torch.where((last == 0).view(-1, 1, 1, 1, 1), first, start_states)

    def pick(x):  # [N, S, X, ...] -> last chunk per row [N, X, C, ...]
        x = x.view(n, rows.num_chunks, chunk, *x.shape[2:])[idx, last].to(o_dtype)
        return x.movedim(1, 2)

    rep = num_heads // rows.q.shape[2]
    qc, kc = (pick(x).repeat_interleave(rep, 1) for x in (rows.q, rows.k))
    terms = block_terms(qc, kc, pick(rows.g), None if rows.beta is None else pick(rows.beta))
    pos = rows.base[:, None] + last[:, None] * chunk + torch.arange(chunk, device=dev)
    final_pos = end - 1
    src = level_tensor(final_pos[:, None], pos.clamp_max(final_pos[:, None]), num_levels)
    final = terms.transition(relevel(start_states, a_last, final_pos))
    final = final + level_split(terms.R, pick(rows.v), src[:, None], num_levels)
    if initial_state is not None:
        empty = (end == rows.start).view(-1, 1, 1, 1, 1)
        final = torch.where(empty, initial_state.levels.to(o_dtype), final)
    return LevelState(final if o_dtype == torch.float64 else final.float(), end.clone())


def _dot_dtype(dtype):
    """Operand dtype of the forward's and the scalar-decay backward's products
    (``scan_triton.mma``): half inputs go to the tensor cores as they are (twice the tf32 rate,
    half the operand registers and shared memory); the accumulation stays fp32."""
    if dtype not in (torch.bfloat16, torch.float16):
        return _acc(dtype)
    return tl.bfloat16 if dtype == torch.bfloat16 else tl.float16


def _storage_dtype(dtype):
    """dtype of the recorded states and the delta rule's chunk factors: the inputs' for bf16 /
    fp16 (what the tensor cores read), the accumulation dtype otherwise."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else (torch.float64 if dtype == torch.float64 else torch.float32)


@dataclass
class _DeltaFactors:
    """The delta rule's chunk-local factors (``intra_triton``): ``a_inv`` [N, NC, H, C, C] is
    A^-1 diag(beta) in the accumulation dtype (the backward's), ``w`` [N, S, H, WK] (WK: the
    width of the scans' two key tiles, ``scan_triton.key_split``; rows zero-padded past K),
    ``qt`` [N, S, H, K], ``u`` [N, S, H, V] and ``pw`` [N, NC, H, C, C] in the storage dtype; ``k``
    the keys as the scans read them, [N, S, G, WK] (the inputs' when K = WK, as at K = 192, else
    a zero-padded copy written beside W)."""

    a_inv: torch.Tensor
    w: torch.Tensor
    u: torch.Tensor
    qt: torch.Tensor
    pw: torch.Tensor
    k: torch.Tensor

    @classmethod
    def compute(cls, rows, g_cum, consts, num_levels, chunk):
        n, nc, slots = rows.num_rows, rows.num_chunks, rows.q.shape[1]
        num_heads, key_dim, value_dim = consts["H"], consts["K"], consts["V"]
        dtype = _storage_dtype(rows.q.dtype)
        new = lambda *shape, dt=dtype: torch.empty(n, *shape, dtype=dt, device=g_cum.device)  # noqa: E731
        wk = sum(key_split(key_dim))
        kp = rows.k if wk == key_dim else torch.empty(*rows.k.shape[:-1], wk, dtype=rows.k.dtype, device=rows.k.device)
        f = cls(new(nc, num_heads, chunk, chunk, dt=g_cum.dtype), new(slots, num_heads, wk),
                new(slots, num_heads, value_dim), new(slots, num_heads, key_dim), new(nc, num_heads, chunk, chunk), kp)
        ut_factors_kernel[(n * nc, num_heads)](
            rows.q, rows.k, rows.v, g_cum, rows.beta, rows.lam, f.a_inv, f.w, f.u, f.qt, f.pw, kp, slots, nc, num_levels,
            H=num_heads, G=consts["G"], K=key_dim, V=value_dim, WK=wk, C=chunk, LOG_C=chunk.bit_length() - 1,
            LP=block_size(num_levels), BKT=min(wk & -wk, 64), BV=min(block_size(value_dim), 64),
            ACC=consts["ACC"], PREC=consts["PREC"], DOT=_dot_dtype(rows.q.dtype), num_warps=4,
        )
        return f


def _input_precision(dtype):
    """Products of fp32 inputs follow torch's matmul setting: IEEE fp32 by default ("highest"),
    tf32 tensor cores after ``torch.set_float32_matmul_precision("high")`` (or "medium"), as
    torch's own fp32 matmuls do; IEEE fp32 runs without tensor cores and spills (gpu_notes.md).
    fp64 is always exact; half inputs use tf32 where their products are not half (delta rule)."""
    if dtype == torch.float64:
        return "ieee"
    if dtype == torch.float32:
        return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    return "tf32"


def _consts(dtype, num_heads, num_groups, key_dim, value_dim, chunk):
    """Launch constants shared by the forward and backward kernels."""
    acc, prec = _acc(dtype), _input_precision(dtype)
    bk = block_size(key_dim)
    consts = dict(H=num_heads, G=num_groups, K=key_dim, V=value_dim, C=chunk, BK=bk, ACC=acc, PREC=prec)
    consts["num_warps"] = 4 if bk <= 128 else 8
    return consts


def _scan(rows, dtype, consts, num_levels, initial_state, chunk, prefix=False):
    """Stages 1-3: chunk-local G, the delta rule's chunk factors, the recorded level states
    (``prefix``: the delta rule's prefix states, ``_prefix_delta_scan``)."""

    n, nc, slots = rows.num_rows, rows.num_chunks, rows.q.shape[1]
    num_heads, key_dim, value_dim = consts["H"], consts["K"], consts["V"]
    dev = rows.q.device
    acc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    g_cum, totals = chunk_decay(rows.g, chunk, acc_dtype)
    delta = rows.beta is not None
    factors = _DeltaFactors.compute(rows, g_cum, consts, num_levels, chunk) if delta else None

    num_js, top_exp = inter_chunk_scans(rows.max_chunk, num_levels, chunk)
    num_slots = nc * num_js if delta else sum(scan_slot_sizes(nc, num_js, top_exp))
    states = torch.empty(n, num_slots, num_heads, key_dim, value_dim, dtype=_storage_dtype(dtype), device=dev)
    chunk_g = None
    if not delta:  # cumulative log decay at chunk starts, in float64: a long row's sum is large
        chunk_g = chunk_offsets(totals, exclusive=True)
    recorded = _Recorded(states, chunk_g, num_js, top_exp, prefix)
    has_init = initial_state is not None
    base_chunk = rows.base // chunk
    if has_init:
        low, h0, p0 = _initial_terms(initial_state.levels.to(acc_dtype), rows.start, base_chunk, num_js, chunk)
        low_sum = low.sum(2).contiguous()
        low = low.contiguous()
    else:
        low = h0 = p0 = low_sum = states  # never read
    dot = _dot_dtype(dtype)
    args = (g_cum, states, h0, p0, low_sum, base_chunk, slots, nc, num_js, num_slots, top_exp)
    if delta:
        if prefix:
            _prefix_delta_scan(factors, args, consts, dot, n * num_heads)
        else:
            buckets = scan_slot_sizes(nc, num_js, top_exp)[:-1]
            _delta_scan(rows, factors, args, consts, dot, has_init, n * num_heads, buckets)
        return g_cum, factors, recorded, low
    bv_scan, scan_launch = _scan_tiles(value_dim)
    grid = lambda num_programs: (n * num_heads, num_programs, triton.cdiv(value_dim, bv_scan))  # noqa: E731
    common = {**consts, **scan_launch, "HAS_INIT": has_init, "DOT": dot, "BV": bv_scan}
    # The inter-chunk levels and the capped top (alone carrying a pending window sum) in two
    # launches side by side: at long T the top's few programs walk as many chunks as all the
    # others. The top unpipelined: prefetch buffers besides its two state tiles would spill.
    _side_by_side(
        lambda: level_scan_kernel[grid(1)](rows.k, rows.v, *args, TOP=True, **{**common, "num_stages": 1}),
        (lambda: level_scan_kernel[grid(num_js - 1)](rows.k, rows.v, *args, TOP=False, **common)) if num_js > 1 else None,
        dev,
    )
    return g_cum, factors, recorded, low


_SIDE_STREAMS: dict = {}


def _side_by_side(first, second, device):
    """Run two independent launches concurrently on CUDA: ``first`` on a side stream (one per
    device, joined back before returning; capturable in a CUDA graph), ``second`` on the current
    one. Elsewhere (the interpreter) one after the other."""
    if second is None or device.type != "cuda":
        first()
        if second is not None:
            second()
        return
    main = torch.cuda.current_stream(device)
    side = _SIDE_STREAMS.setdefault(device, torch.cuda.Stream(device))
    side.wait_stream(main)
    with torch.cuda.stream(side):
        first()
    second()
    main.wait_stream(side)


def _delta_scan(rows, factors, args, consts, dot, has_init, num_row_heads, buckets):
    """The delta rule's level scans (``scan_triton.level_scan_delta_kernel``): the top, one program
    per row, head and value tile, beside the levels below it, one program per bucket (``buckets``:
    how many a row can touch at each level, ``levels.scan_slot_sizes``), on k and W as
    ``_DeltaFactors`` stores them, the state in two key tiles (``_key_tiles``)."""
    value_dim, tasks = consts["V"], sum(buckets)
    k, w = factors.k, factors.w

    def scan(programs, top):
        bv, launch = _delta_scan_tiles(dot, top)
        nvt = triton.cdiv(value_dim, bv)
        level_scan_delta_kernel[(programs * num_row_heads * nvt,)](
            k, factors.u, w, *args, num_row_heads, **{**_key_tiles(consts), **launch}, TOP=top, HAS_INIT=has_init, DOT=dot,
            BV=bv, NVT=nvt)

    _side_by_side(lambda: scan(1, True), (lambda: scan(tasks, False)) if tasks else None, rows.k.device)


def _prefix_delta_scan(factors, args, consts, dot, num_row_heads):
    """The delta rule's prefix states (``scan_triton.prefix_scan_delta_kernel``) for rows that
    start at chunk 0 with nothing before them, in one launch: the plain recurrence and one task
    per even chunk with readers after it (the middles of the buckets of levels 1 and up, the
    top's windows after the first), on the bucket scan's k and W, with launch options of its own
    (``_prefix_scan_tiles``). One launch against two (the boundaries after the recurrence), on
    the H200 at 192 / 384 in bf16 (``gpu_session23.sh a``): forward 2.10 / 2.50 / 2.72 / 2.87 ms
    at 2K x 16 / 8K x 4 / 16K x 2 / 32K x 1 against 2.09 / 2.69 / 2.89 / 3.64."""
    g_cum, states, slots, nc, num_js, num_slots, top_exp = args[:2] + args[6:]
    bv, launch = _prefix_scan_tiles(dot, factors.w.shape[-1])
    nvt = triton.cdiv(consts["V"], bv)
    recurrences = num_row_heads * nvt
    # windows of one chunk (top_exp 0) and level 0's buckets have no reader past their boundary
    boundaries = (nc - 2) // 2 if top_exp and nc > 2 else 0
    sync = torch.zeros(recurrences + 1, dtype=torch.int32, device=g_cum.device)  # progress, task counter
    prefix_scan_delta_kernel[((1 + boundaries) * recurrences,)](
        factors.k, factors.u, factors.w, g_cum, states, sync, slots, nc, num_js, num_slots, num_row_heads,
        **{**_key_tiles(consts), **launch}, PUBLISH=8, DOT=dot, BV=bv, NVT=nvt)


def _key_tiles(consts):
    """``consts`` as the delta rule's scans take them: the key head as two tiles
    (``scan_triton.key_split``: KA + KB = the width of W and k, ``_DeltaFactors``) instead of BK."""
    ka, kb = key_split(consts["K"])
    return {**{name: x for name, x in consts.items() if name != "BK"}, "KA": ka, "KB": kb}


def _scan_tiles(value_dim):
    """(value tile, launch options) of the scalar-decay level scans and their reverse scan: each
    program holds the whole key head and a value tile of up to 64. Splitting the keys (their rows
    evolve independently) gained nothing at 2K and 3% of the forward alone at 64K in session 7's
    sweep, and was removed."""
    return min(block_size(value_dim), 64), {}


def _delta_scan_tiles(dot, top):
    """(value tile, launch options) of the delta rule's level scan (``top``: the capped top's
    launch, else the buckets'): 8 warps, value tiles of 64 for half operands. On the H200 at
    192 / 384 in bf16 (``gpu_session15.sh a``, forward at 2K, one stage for both): 64 x 8 warps
    4.65 ms, 64 x 4 warps 5.51, 16 x 2 warps 8.29; value tiles of 32 (4 or 8 warps) and of 16 at 4
    warps computed wrong outputs (error ~0.8, the interpreter exact) and then faulted: triton 3.6
    miscompiles those shapes. The buckets' two loops prefetch their W, k and U tiles at two
    stages (sm_90 offline 176 KB of shared memory); the top's four loops would take 273 KB, so
    it keeps one: 4.69 -> 4.55 ms at 2K, 6.59 -> 6.11 at 8K beside one stage in one call
    (``gpu_session16.sh a``); at 4 warps 5.95 / 8.24 (all with the state one 256-wide key tile,
    before ``_key_tiles``). The prefix scan has its own (``_prefix_scan_tiles``). fp32 operands:
    tiles of 32, one stage (their [C, K] key tiles take twice the shared memory)."""
    if dot == tl.float32:
        return 32, dict(num_warps=8, num_stages=1)
    return 64, dict(num_warps=8, num_stages=1 if top else 2)


def _prefix_scan_tiles(dot, key_width):
    """(value tile, launch options) of the prefix scan, for W and k ``key_width`` wide. Half
    operands up to 192 wide: value tiles of 64 at 4 warps, loads triple-buffered (4 stages would
    take 238 KB of shared memory). Measured while the recurrence and the boundaries were two
    launches, on the H200 at 192 / 384 in bf16 (``gpu_session21.sh b``, forward at 2K x 16 /
    8K x 4): recurrence 0.34 / 0.54 ms and
    boundaries 0.72 / 1.02, against 0.60 / 0.92 and 0.82 / 1.17 at 8 warps and 2 stages (the
    bucket scan's tiles, which they used before); 8 warps with 3 stages 0.44 + 0.81 at 2K; both at
    4 warps and 3 stages 0.34 + 0.73. The boundaries at 3 stages against 2 (``gpu_session22.sh
    g``, 8K x 4 / 16K x 2): 0.979 / 1.095 ms against 1.006 / 1.141; at 8 warps 1.157 / 1.318.
    Smaller value tiles, so that a row or two at batch 1 or 2 fill the SMs, made the forward
    slower (2.91 -> 3.18 ms at 16K x 2, gpu_session22.sh f). Wider keys (256) and fp32 operands
    keep the bucket scan's tiles (not timed): at 4 warps a 256-wide state alone takes 128
    registers a thread, and the kernel spills (sm_90 offline)."""
    if dot == tl.float32 or key_width > 192:
        return _delta_scan_tiles(dot, False)
    return 64, dict(num_warps=4, num_stages=3)


def _reverse_scan_launch(dot):
    """Launch options of the scalar-decay reverse level scan (``level_scan_bwd_kernel``). Half
    operands: 4 warps, loads double-buffered. On the H200 at key 128 / value 64 in bf16 that
    takes the fwd+bwd from 6.40 to 6.23 ms at 2K and 7.68 to 7.50 at 8K against 8 warps with
    the default three stages; 4 warps with three stages were slower (6.85), one stage 6.31, 8
    warps with two 6.56, 16 warps 6.93 (``benchmarks/sweep_tiles.py m2bwd``, two runs). fp32
    operands keep 8 warps (not timed: twice the tile bytes a thread)."""
    return dict(num_warps=8) if dot == tl.float32 else dict(num_warps=4, num_stages=2)


def _output_tiles(dot, consts, prefix):
    """(value tile, warps) of the output kernel. The delta rule's prefix path with half operands:
    tiles of up to 128 at 4 warps, each program reading Qt and Pw for twice the values. On the
    H200 at 192 / 384 in bf16 that launch takes 0.58 ms at 2K x 16 and 0.72 at 8K x 4, against
    0.82 / 1.02 for 64 at 8 warps (64 at 4 warps 0.71 / 0.88, one or two stages no change; 32
    slower, and faulting at 4 warps; 256 at 4 warps 1.33 / 1.70: ``debug_gdn_forward.py sweep``,
    gpu_session20.sh a, b and c).
    Elsewhere tiles of 64 and the key width's warps: rows from an initial state would take 352 KB
    of shared memory at 128 (sm_90 offline), scalar decay and fp32 operands were not timed."""
    if prefix and dot in (tl.bfloat16, tl.float16):
        return min(block_size(consts["V"]), 128), 4
    return min(block_size(consts["V"]), 64), consts["num_warps"]


def _forward(q, k, v, g, lam, beta, cu_seqlens, initial_state, output_final_state, chunk=CHUNK):
    batch, length, num_groups, key_dim = q.shape
    num_heads, value_dim = v.shape[2:]
    num_levels = lam.shape[-1]
    log_c = chunk.bit_length() - 1
    rows = _Rows(q, k, v, g, lam, beta, cu_seqlens, initial_state, chunk)
    rows.length = length
    n, nc, slots = rows.num_rows, rows.num_chunks, rows.q.shape[1]
    consts = _consts(q.dtype, num_heads, num_groups, key_dim, value_dim, chunk)
    delta = rows.beta is not None
    # prefix states: rows from chunk 0 with nothing before them (the final state takes their
    # differences, ``_Recorded.read``; the backward recomputes per-level states)
    prefix = delta and initial_state is None and rows.max_chunk == nc - 1
    g_cum, factors, recorded, low = _scan(rows, q.dtype, consts, num_levels, initial_state, chunk, prefix)
    dot = _dot_dtype(q.dtype)
    bv, warps = _output_tiles(dot, consts, prefix)
    o = torch.empty(n, slots, num_heads, value_dim, dtype=v.dtype, device=q.device)
    states, chunk_g, num_js, num_slots, top_exp = recorded.kernel_args()
    chunk_output_kernel[(n * nc, num_heads, triton.cdiv(value_dim, bv))](
        rows.q, rows.k, rows.v, g_cum, rows.lam, factors.pw if delta else g_cum, factors.qt if delta else g_cum, states, chunk_g,
        low, rows.base // chunk, rows.start, o, slots, nc, num_js, num_slots, top_exp, num_levels,
        LOG_C=log_c, LP=block_size(num_levels), BV=bv, DELTA=delta, HAS_INIT=initial_state is not None,
        PREFIX=prefix, DOT=dot, **{**consts, "num_warps": warps},
    )
    out = rows.output(o, batch, length)
    if not output_final_state:
        return out, None
    acc_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return out, _final_state(rows, recorded, acc_dtype, initial_state, num_heads, num_levels, chunk)


class _Backward:
    """What both Triton backwards start from (the rows, launch constants, the recomputed forward
    stages of ``_scan`` and the output gradient in slots) and how their gradients leave."""

    def __init__(self, q, k, v, g, lam, beta, do, cu_seqlens, chunk):
        self.rows = rows = _Rows(q, k, v, g, lam, beta, cu_seqlens, None, chunk)
        self.inputs = (q, k, v, g, lam) + (() if beta is None else (beta,))
        self.num_heads, self.key_dim, self.value_dim = v.shape[2], q.shape[3], v.shape[3]
        self.num_levels = lam.shape[-1]
        self.log_c = chunk.bit_length() - 1
        self.consts = _consts(q.dtype, self.num_heads, q.shape[2], self.key_dim, self.value_dim, chunk)
        self.g_cum, self.factors, self.recorded, _ = _scan(rows, q.dtype, self.consts, self.num_levels, None, chunk)
        self.states = self.recorded.states  # the delta rule's layout: [N, NC * NJ, H, K, V]
        self.top_exp = self.recorded.top_exp
        self.do = rows.slots(do)
        self.n, self.nc, self.slots, self.num_js = rows.num_rows, rows.num_chunks, rows.q.shape[1], self.recorded.num_scans
        self.bv = min(block_size(self.value_dim), 64)

    def new(self, *shape):
        """An uninitialised [N, *shape] buffer in the accumulation dtype."""
        return torch.empty(self.n, *shape, dtype=self.g_cum.dtype, device=self.g_cum.device)

    def tokens(self, grads):
        """Per-slot gradients [N, S, ...] -> per token in each input's dtype; the first two (q, k)
        are per head or per group; per-head ones are summed over the heads of their group."""
        batch, length, num_groups = self.inputs[0].shape[:3]

        def per_group(x):
            # Already per group (the scalar backward's atomics): no sum, which would copy the
            # buffer (a reduction over a dim of one is still a kernel: ~18 us at 2K x 16 in bf16).
            if x.shape[2] == num_groups:
                return x
            return x.view(self.n, self.slots, num_groups, -1, self.key_dim).sum(3)

        grads = [per_group(x) for x in grads[:2]] + list(grads[2:])
        return tuple(self.rows.output(x, batch, length).to(like.dtype) for x, like in zip(grads, self.inputs))


def _backward_scalar(q, k, v, g, lam, do, cu_seqlens, chunk=CHUNK):
    """Gradients of (q, k, v, g, lam) for scalar decay without initial or final state, dense
    rows or documents packed with ``cu_seqlens`` (each its own row of slots, as in the forward).

    Recomputes the level states (one scan launch), then runs the reverse level scans (which also
    take the readout's share of dq, dlambda and dg) and the chunk-parallel gradient kernel of
    ``chunk_bwd_triton``; dg is the reverse cumulative sum of q.dq - k.dk per head (see that
    module), taken per row (``decay_triton.row_reverse_cumsum``): null slots add zero to it.
    """

    from .chunk_bwd_triton import chunk_grad_kernel, level_scan_bwd_kernel

    b = _Backward(q, k, v, g, lam, None, do, cu_seqlens, chunk)
    rows, nh, nk, nv = b.rows, b.num_heads, b.key_dim, b.value_dim
    dot = _dot_dtype(q.dtype)
    states, chunk_g, num_js, num_slots, top_exp = b.recorded.kernel_args()
    # One [K, V] gradient per (scan, sum of source chunks), laid out and stored like the recorded
    # states (bf16 / fp16 for those inputs: the chunk kernel reads each slot once per chunk that
    # adds to it, and rounds the decayed sum to that dtype for its products anyway); the scan
    # writes every slot the chunk kernel reads (``levels.tl_scan_source``): no zero fill.
    dsum = torch.empty(b.n, num_slots, nh, nk, nv, dtype=states.dtype, device=q.device)
    # dq, dk of the heads sharing a q/k group are summed by fp32 atomics into one [S, G, K] buffer
    # (per-head buffers would take H/G times the memory: 51 GB at 1M tokens, 48 heads, G = 1; on
    # the H200 the atomics cost no measurable time against them). dq, dlam and dacc are zero-filled:
    # every program of the scan (levels, value tiles) adds its readout share atomically.
    groups = b.consts["G"]
    shapes = ((b.slots, groups, nk), (b.slots, nh, b.num_levels), (nh, b.slots))
    dq, dlam, dacc = (b.new(*shape).zero_() for shape in shapes)
    dk = b.new(b.slots, groups, nk)
    if groups < nh:
        dk.zero_()
    bv_scan, _ = _scan_tiles(nv)
    level_scan_bwd_kernel[(b.n * nh, num_js, triton.cdiv(nv, bv_scan))](
        rows.q, b.g_cum, rows.lam, b.do, states, chunk_g, dsum, dq, dlam, dacc,
        b.slots, b.nc, num_js, num_slots, b.num_levels, top_exp,
        LOG_C=b.log_c, DOT=dot, **{**b.consts, "BV": bv_scan, **_reverse_scan_launch(dot)},
    )
    dv = torch.empty(b.n, b.slots, nh, nv, dtype=v.dtype, device=q.device)
    # The chunk kernel adds its own share to dq (G = H), dlam and dacc: the scan's is complete.
    bv_chunk, grad_launch = _grad_tiles(nv, dot)
    chunk_grad_kernel[(b.n * b.nc, nh)](
        rows.q, rows.k, rows.v, b.g_cum, rows.lam, b.do, dsum, chunk_g, dq, dk, dv, dlam, dacc,
        b.slots, b.nc, num_js, num_slots, top_exp, b.num_levels,
        LOG_C=b.log_c, LP=block_size(b.num_levels), DOT=dot, **{**b.consts, "BV": bv_chunk, **grad_launch},
    )
    dg = row_reverse_cumsum(dacc, chunk)  # [N, S, H], contiguous
    return b.tokens((dq, dk, dv, dg, dlam))


def _grad_tiles(value_dim, dot):
    """(value tile, launch options) of ``chunk_grad_kernel`` for operands of dtype ``dot``: the
    whole value head (up to 64). With half operands it runs at 4 warps: on an H200 at key 128 /
    value 64 that is 12% faster in fwd+bwd than 8 warps (7.00 vs 7.99 ms at T=2048;
    ``benchmarks/sweep_tiles.py grad``, RESULTS.md) although it spills more (792 B against 256 B,
    sm_90 offline): two programs then share an SM. One to three pipeline stages time the same
    (6.15 - 6.18 ms). fp32 operands keep 8 warps: at 4 their sm_90 stack grows from 10 to 38 KB
    a thread."""
    return min(block_size(value_dim), 64), dict(num_warps=8 if dot == tl.float32 else 4)


def _backward_delta(q, k, v, g, lam, beta, do, cu_seqlens, chunk=CHUNK):
    """Gradients of (q, k, v, g, lam, beta) for the delta rule, in the cases ``_backward_scalar``
    covers: the recomputed forward stages (chunk factors with the readout queries Qt, level
    states), then the three stages of ``chunk_bwd_delta_triton`` (reverse level scans, the
    state-gradient pairs D and dX, the chunk-parallel gradients). The decay reaches other chunks
    only through each chunk's total decay, so dg is the reverse cumulative sum of the kernel's
    dG within each chunk (``decay_triton.chunk_reverse_cumsum``)."""

    from .chunk_bwd_delta_triton import chunk_grad_delta_kernel, level_scan_bwd_delta_kernel, state_pairs_kernel

    b = _Backward(q, k, v, g, lam, beta, do, cu_seqlens, chunk)
    rows, nh, nk, nv = b.rows, b.num_heads, b.key_dim, b.value_dim
    f = b.factors
    # The chunk-parallel stages walk the keys in tiles of 64: no [C, K] tile of a wide head.
    tiled = dict(H=nh, K=nk, BKT=min(b.consts["BK"], 64), ACC=b.consts["ACC"], PREC=b.consts["PREC"])
    # The reverse scan keeps W, Kd, lambda Qt [C, K] and two state tiles; unpipelined (one
    # stage) and with BV = 32 above K = 128 for half operands (16 for fp32) they fit the shared
    # memory (K <= 256). At 192 / 384 in bf16 on the H200 (gpu_session23.sh i), 32 against 16:
    # that launch 12.00 -> 8.49 ms at 2K x 16 and 20.65 -> 14.94 at 16K x 2 (32 at 4 warps: 15.19
    # / 24.61).
    dot = _dot_dtype(q.dtype)
    bv_scan = (32 if dot in (tl.bfloat16, tl.float16) else 16) if b.consts["BK"] > 128 else b.bv
    dstates = b.new(b.nc, b.num_js + 2, nh, nk, nv)  # slots: dh' per scan, the top's pending sum, dX
    level_scan_bwd_delta_kernel[(b.n * nh, b.num_js, triton.cdiv(nv, bv_scan))](
        rows.k, f.w, f.qt, b.g_cum, rows.lam, b.do, dstates, b.slots, b.nc, b.num_js, b.num_levels, b.top_exp,
        LOG_C=b.log_c, BV=bv_scan, WK=f.w.shape[-1], DOT=dot, **{**b.consts, "num_stages": 1},
    )
    tiled.update(V=nv, BV=b.bv)
    tiles = triton.cdiv(nk, tiled["BKT"])
    pairs = b.new(b.nc, nh, nk, nk)
    # value tiles of 128: 5.99 -> 5.35 ms at 2K x 16 and 8.68 -> 7.76 at 16K x 2 against 64 (192 / 384
    # in bf16 on the H200, gpu_session23.sh g; 32: 6.16 / 8.91; 8 warps at 64: 8.67 / 12.65)
    state_pairs_kernel[(b.n * b.nc, nh, tiles * tiles)](
        b.states, dstates, pairs, b.nc, b.num_js, **{**tiled, "BV": min(block_size(nv), 128)}, num_warps=4)
    dq, dk, dv = b.new(b.slots, nh, nk), b.new(b.slots, nh, nk), b.new(b.slots, nh, nv)
    dlam, dbeta, dgc = b.new(b.slots, nh, b.num_levels), b.new(b.slots, nh), b.new(b.slots, nh)
    chunk_grad_delta_kernel[(b.n * b.nc, nh)](
        rows.q, rows.k, rows.v, b.g_cum, rows.beta, rows.lam, f.a_inv, f.w, f.qt, b.do, b.states, dstates, pairs,
        dq, dk, dv, dlam, dbeta, dgc, b.slots, b.nc, b.num_js, b.num_levels,
        G=b.consts["G"], WK=f.w.shape[-1], C=chunk, LOG_C=b.log_c, LP=block_size(b.num_levels), **tiled,
        # loads not prefetched: 9.41 -> 8.38 ms at 2K x 16 and 10.46 -> 9.43 at 16K x 2 against
        # two stages (192 / 384 in bf16, gpu_session23.sh i; three would not fit)
        num_warps=8, num_stages=1,
    )
    dg = chunk_reverse_cumsum(dgc, chunk)
    return b.tokens((dq, dk, dv, dg, dlam, dbeta))


def _triton_backward_enabled() -> bool:
    """HF_LOGLINEAR_TRITON_BACKWARD=0 routes every backward through the torch recomputation (to
    rule the Triton backward out when chasing a numerical question); on by default."""
    return os.environ.get("HF_LOGLINEAR_TRITON_BACKWARD", "1") != "0"


class _LogLinearAttention(torch.autograd.Function):
    """Triton forward; Triton backward without initial or final state (dense or packed rows: the
    training case), otherwise by recomputation
    through the torch chunked form."""

    @staticmethod
    def forward(ctx, q, k, v, g, lam, beta, levels0, pos0, cu_seqlens, output_final_state):
        from ..ops import LevelState

        init = None if levels0 is None else LevelState(levels0, pos0)
        o, final = _forward(q, k, v, g, lam, beta, cu_seqlens, init, output_final_state)
        ctx.save_for_backward(q, k, v, g, lam, beta, levels0, pos0, cu_seqlens)
        ctx.output_final_state = output_final_state
        if final is None:
            return o, None, None
        ctx.mark_non_differentiable(final.position)
        return o, final.levels, final.position

    @staticmethod
    def backward(ctx, do, dlevels, _dpos):
        from ..ops import LevelState

        q, k, v, g, lam, beta, levels0, pos0, cu_seqlens = ctx.saved_tensors
        fresh = levels0 is None and not ctx.output_final_state and _triton_backward_enabled()
        if fresh:
            if beta is None:
                grads = _backward_scalar(q, k, v, g, lam, do, cu_seqlens)
            else:
                grads = _backward_delta(q, k, v, g, lam, beta, do, cu_seqlens)
            grads += (None,) * (len(ctx.needs_input_grad) - len(grads))
            return tuple(d if need else None for d, need in zip(grads, ctx.needs_input_grad))
        def torch_form(q, k, v, g, lam, beta, levels0):
            init = None if levels0 is None else LevelState(levels0, pos0)
            o, final = chunk_loglinear_attention(q, k, v, g, lam, beta, cu_seqlens, init, ctx.output_final_state)
            return o, (None if final is None else final.levels)

        inputs = [q, k, v, g, lam, beta, levels0]
        return (*recompute_grads(torch_form, inputs, ctx.needs_input_grad, (do, dlevels)), None, None, None)


def chunk_loglinear_attention_triton(
    q, k, v, g, level_weights, beta=None, cu_seqlens=None, initial_state=None, output_final_state=False
):
    tensors = [q, k, v, g, level_weights, beta] + ([initial_state.levels] if initial_state is not None else [])
    grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)
    seg = segment_length(q, v, level_weights.shape[-1], beta, cu_seqlens, initial_state, grad, output_final_state, CHUNK)
    if seg is None:
        run = _differentiable if grad else _forward
        return run(q, k, v, g, level_weights, beta, cu_seqlens, initial_state, output_final_state)
    inputs = (q, k, v, g, level_weights, beta)
    return in_segments(inputs, initial_state, output_final_state, seg, grad, _forward, _differentiable, CHUNK)


def _differentiable(q, k, v, g, lam, beta, cu_seqlens, initial_state, output_final_state):
    """``_forward`` under autograd (``_LogLinearAttention``), with the final state as a LevelState."""
    from ..ops import LevelState

    levels0 = None if initial_state is None else initial_state.levels
    pos0 = None if initial_state is None else initial_state.position
    o, levels, pos = _LogLinearAttention.apply(q, k, v, g, lam, beta, levels0, pos0, cu_seqlens, output_final_state)
    return o, (LevelState(levels, pos) if output_final_state else None)
