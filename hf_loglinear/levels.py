"""Fenwick level arithmetic: the one definition every reference, kernel and cache uses.

Positions count from 0 at a sequence's own first token. For a query at position t and a source
s <= t::

    level(t, s) = bit_length(t XOR s)          (0 when s == t)

so the prefix [0, t] splits into 1 + popcount(t) buckets. A model has ``num_levels`` = L
level weights; every source at level >= L - 1 uses the top weight, i.e. the buckets at or above
L - 1 are merged into one "top" state. Only integer bit operations are used: float log2 is
wrong for large powers of two.

Three forms of the same rules live here:
- plain ``int`` functions (host side, tests, shape planning);
- ``torch`` functions on int64 tensors (references, caches; no host synchronisation);
- ``triton`` device functions (kernels), defined only when Triton imports.
"""
from __future__ import annotations

import torch

try:  # Triton is optional: CPU-only installs and remote-code users may lack it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None


# --------------------------------------------------------------------------- python ints
def level(t: int, s: int) -> int:
    """Uncapped level of source ``s`` for query ``t`` (s <= t)."""
    if not 0 <= s <= t:
        raise ValueError(f"level(t, s) needs 0 <= s <= t, got t={t}, s={s}")
    return (t ^ s).bit_length()


def capped_level(t: int, s: int, num_levels: int) -> int:
    """Level as a model with ``num_levels`` weights uses it: at most num_levels - 1."""
    return min(level(t, s), num_levels - 1)


def levels_for_length(length: int) -> int:
    """Number of levels a sequence of ``length`` tokens touches: bit_length(T - 1) + 1."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return (length - 1).bit_length() + 1


def bucket(t: int, lvl: int) -> range:
    """Sources that query ``t`` reads at uncapped level ``lvl`` (empty when that level is unused)."""
    if lvl == 0:
        return range(t, t + 1)
    if not (t >> (lvl - 1)) & 1:
        return range(0)
    start = (t >> lvl) << lvl
    return range(start, start + (1 << (lvl - 1)))


def merge_level(t: int, num_levels: int) -> int:
    """Level that absorbs the levels below it when token ``t`` (>= 1) is consumed (SPEC §3)."""
    if t < 1:
        raise ValueError(f"merge_level needs t >= 1, got {t}")
    return min((t ^ (t - 1)).bit_length(), num_levels - 1)


def inter_chunk_scans(last_chunk: int, num_levels: int, chunk: int) -> tuple[int, int]:
    """(number of scans, top_exp) of the chunked kernels for chunks of ``chunk`` tokens up to
    absolute chunk ``last_chunk``: one scan per inter-chunk level a chunk index can reach below
    the capped top, plus the top, which holds every bucket of more than 2^top_exp chunks."""
    top_exp = max(0, num_levels - 2 - (chunk.bit_length() - 1))
    return min(top_exp, last_chunk.bit_length()) + 1, top_exp


def scan_slot_sizes(num_chunks: int, num_scans: int, top_exp: int) -> list[int]:
    """Slots one row of the chunked kernels keeps per inter-chunk scan (scalar decay); below the
    top also the buckets a row can touch (the delta rule's scan runs one program per bucket).

    The chunks that read one state of scan ``js`` form a run: for js below the top, the chunks of
    a bucket of 2^(js+1) whose bit js is set (one run per bucket); for the top, every chunk of a
    bucket of 2^top_exp. Under scalar decay a run reads one state, decayed by a scalar to each
    of its chunks, so one slot per run is enough: about ``num_chunks`` slots in all instead of
    ``num_chunks * num_scans`` (memory linear in T, not T log T). A row starting mid-bucket can
    touch one run more than ``num_chunks`` / bucket rounds to, hence the + 2.
    """
    exps = [js + 1 for js in range(num_scans - 1)] + [min(top_exp, 62)]  # chunk indices < 2^62
    return [((num_chunks - 1) >> e) + 2 for e in exps]


def chunks_with_bit(n: int, js: int, bit: int) -> int:
    """How many chunk indices in [0, n) have bit js equal to ``bit``: below the top, the sources of
    scan js (bit 0) or its readers (bit 1). A scan walks only those, counting them."""
    period = 1 << js
    return ((n >> (js + 1)) << js) + min(max((n & (2 * period - 1)) - bit * period, 0), period)


def nth_chunk_with_bit(t: int, js: int, bit: int) -> int:
    """The t-th chunk index (from 0) whose bit js equals ``bit``: the inverse of ``chunks_with_bit``."""
    return ((t >> js) << (js + 1)) | (bit << js) | (t & ((1 << js) - 1))


# --------------------------------------------------------------------------- torch tensors
def bit_length(x: torch.Tensor) -> torch.Tensor:
    """Elementwise bit_length of a non-negative int64 tensor, branch-free binary search."""
    x = x.to(torch.int64)
    n = torch.zeros_like(x)
    for shift in (32, 16, 8, 4, 2, 1):
        high = (x >> shift) > 0
        n = n + high.to(torch.int64) * shift
        x = torch.where(high, x >> shift, x)
    return n + (x > 0).to(torch.int64)


def level_tensor(t: torch.Tensor, s: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Capped level(t, s) for broadcastable int64 tensors (callers guarantee s <= t)."""
    return bit_length(t ^ s).clamp_max(num_levels - 1)


def relevel(states: torch.Tensor, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Re-express level states built for query ``old`` as seen from query ``new`` >= ``old``.

    ``states`` is ``[N, H, L, K, V]`` (level dim 2), ``old`` and ``new`` are ``[N]`` int64.
    A source at level l for ``old`` sits at max(l, bit_length(new XOR old)) for ``new``
    (capped at L - 1), so every level below e = min(bit_length(new XOR old), L - 1) is added
    into level e and zeroed. With new = old + 1 this is the decode merge of SPEC §3; with
    new = old it changes nothing. Rows with ``old`` < 0 (nothing consumed yet) are left as is.
    """
    num_levels = states.shape[2]
    e = bit_length((new ^ old).clamp_min(0)).clamp_max(num_levels - 1)
    e = torch.where(old < 0, torch.zeros_like(e), e)
    lvl = torch.arange(num_levels, device=states.device).view(1, num_levels)
    e2 = e.view(-1, 1)
    shape = (states.shape[0], 1, num_levels, 1, 1)
    below = (lvl < e2).view(shape)
    at = (lvl == e2).view(shape)
    merged = states.cumsum(dim=2).gather(
        2, e.view(-1, 1, 1, 1, 1).expand(-1, states.shape[1], 1, states.shape[3], states.shape[4])
    )
    return torch.where(below, torch.zeros_like(states), torch.where(at, merged, states))


def scan_run(chunk: torch.Tensor, base: torch.Tensor, js: int, num_scans: int, num_chunks: int, top_exp: int):
    """(slot, first chunk) of the run through which absolute chunk ``chunk`` reads scan ``js``, for
    rows starting at absolute chunk ``base`` (int64 tensors); the first chunk is row-local, the
    slot counts from the row's first slot (``scan_slot_sizes`` gives the layout)."""
    offset = sum(scan_slot_sizes(num_chunks, num_scans, top_exp)[:js])
    top = js == num_scans - 1
    run_exp, slot_exp = (min(top_exp, 62),) * 2 if top else (js, js + 1)
    first = torch.maximum((chunk >> run_exp) << run_exp, base) - base
    return offset + (chunk >> slot_exp) - (base >> slot_exp), first


def read_levels(old: torch.Tensor, query: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Level at which a query at ``query`` reads each state level built for ``old`` <= ``query``.

    Returns ``[..., L]`` int64: min(max(l, bit_length(query XOR old)), L - 1). Used to read
    level states relative to an earlier position without first re-levelling them.
    """
    e = bit_length(query ^ old).unsqueeze(-1)
    lvl = torch.arange(num_levels, device=query.device)
    return torch.maximum(lvl, e).clamp_max(num_levels - 1)


# --------------------------------------------------------------------------- triton
if triton is not None:

    @triton.jit
    def tl_bit_length(x):
        """bit_length of non-negative integers as int64, branch-free (same search as above).

        Widened first: the search shifts by 32, undefined on 32-bit integers once compiled.
        """
        x = x.to(tl.int64)
        n = tl.zeros_like(x)
        for shift in tl.static_range(5, -1, -1):
            s = 1 << shift
            high = (x >> s) > 0
            n = n + tl.where(high, s, 0)
            x = tl.where(high, x >> s, x)
        return n + tl.where(x > 0, 1, 0)

    @triton.jit
    def tl_capped_level(t, s, num_levels):
        """min(level(t, s), L - 1) of integer positions (s <= t), as int64."""
        return tl.minimum(tl_bit_length(t ^ s), num_levels - 1)

    # The chunked kernels run one scan per inter-chunk level (SPEC §4): scan js carries level
    # log2(C) + 1 + js, and the last of the NJ scans is the capped top level L - 1.

    @triton.jit
    def tl_scan_level(js, num_scans, num_levels, LOG_C: tl.constexpr):
        """The level (lambda column) that inter-chunk scan ``js`` holds."""
        return tl.where(js == num_scans - 1, num_levels - 1, LOG_C + 1 + js)

    @triton.jit
    def tl_chunk_reads_scan(chunk, js, num_scans):
        """Whether chunk ``chunk`` (absolute index) reads scan ``js``: bit js of its index is set,
        or js is the top (which also holds every higher bucket)."""
        return (js == num_scans - 1) | (((chunk >> js) & 1) == 1)

    @triton.jit
    def tl_bucket_count(num_chunks, js):
        """``scan_slot_sizes`` of a scan ``js`` below the top on the device: the buckets of 2^(js+1)
        chunks a row of ``num_chunks`` chunks can touch (one run, one slot each)."""
        return ((num_chunks - 1) >> (js + 1)) + 2

    @triton.jit
    def tl_scan_run(chunk, base, js, num_scans, num_chunks, top_exp):
        """``scan_run`` on the device: (slot, row-local first chunk) of the run through which
        absolute chunk ``chunk`` reads scan ``js`` (see ``scan_slot_sizes``)."""
        zero = tl.zeros((), dtype=tl.int64)  # widens tensors and Python ints (interpreter) alike
        chunk = chunk + zero
        base = base + zero
        offset = zero
        for i in range(js):
            offset += tl_bucket_count(num_chunks, i)
        js64 = js + zero
        top = js64 == num_scans - 1
        run_exp = tl.where(top, tl.minimum(top_exp, 62), js64)
        slot_exp = tl.where(top, tl.minimum(top_exp, 62), js64 + 1)
        first = tl.maximum((chunk >> run_exp) << run_exp, base) - base
        return offset + (chunk >> slot_exp) - (base >> slot_exp), first

    @triton.jit
    def tl_scan_source(chunk, js, num_scans, num_chunks, top_exp):
        """Where chunk ``chunk`` of a row starting at chunk 0 adds to scan ``js`` (the backward's
        view): (slot, last, feeds, adds). It adds to the level's sum when bit js of its index is
        clear, to the top's pending sum always. ``last`` closes that sum: the bucket's last source
        chunk | (2^js - 1) below the top, the bucket's last chunk | (2^top_exp - 1) at the top. The
        sum reaches a reader in the row (``feeds``) when last + 1 < num_chunks; its readers' gradient
        then reaches the chunk decayed from the end of ``last`` to the end of the chunk. One slot per
        sum, in ``tl_scan_run``'s layout (below the top, the slot its bucket's readers read; at the
        top, that of the bucket's own run)."""
        zero = tl.zeros((), dtype=tl.int64)
        chunk = chunk + zero
        js64 = js + zero
        top = js64 == num_scans - 1
        span = tl.where(top, tl.minimum(top_exp, 62), js64)
        last = chunk | (((zero + 1) << span) - 1)
        adds = top | (((chunk >> js64) & 1) == 0)
        slot, _ = tl_scan_run(chunk, 0, js, num_scans, num_chunks, top_exp)
        return slot, last, adds & (last + 1 < num_chunks), adds

    @triton.jit
    def tl_chunks_with_bit(n, js, bit):
        """``chunks_with_bit`` on the device (int64)."""
        one = tl.full((), 1, tl.int64)
        n = n + 0 * one
        js = js + 0 * one
        period = one << js
        return ((n >> (js + 1)) << js) + tl.minimum(tl.maximum((n & (2 * period - 1)) - bit * period, 0), period)

    @triton.jit
    def tl_nth_chunk_with_bit(t, js, bit):
        """``nth_chunk_with_bit`` on the device (int64)."""
        one = tl.full((), 1, tl.int64)
        t = t + 0 * one
        js = js + 0 * one
        return ((t >> js) << (js + 1)) | ((bit + 0 * one) << js) | (t & ((one << js) - 1))

    @triton.jit
    def tl_scan_window(js, num_scans, top_exp):
        """Low chunk-index bits that span one bucket of scan ``js``: a chunk whose index has them
        all set closes the bucket (2^(js+1) - 1; the top's buckets span 2^top_exp chunks)."""
        one = tl.full((), 1, tl.int64)
        return tl.where(js == num_scans - 1, (one << top_exp) - 1, (one << (js.to(tl.int64) + 1)) - 1)
