"""Chunked log-linear attention in plain torch: the CPU production path, differentiable by autograd.

Per chunk of C tokens (SPEC §4):
- intra-chunk: the block terms of ``block.py`` give the composite coefficients P; level weights
  multiply them elementwise, with levels from the tokens' absolute positions;
- inter-chunk: a scan over chunks carries the L level states of every sequence, expressed for
  the query at the chunk's first token. Moving to the next chunk start b re-levels the states
  (the decode merge generalised: ``levels.relevel``), pushes them through the chunk's
  transitions, and adds the chunk's own tokens, which all sit at level bit_length(b XOR (b-1))
  as seen from b. A query t reads state level l at min(max(l, bit_length(t XOR a)), L-1).
The scan is a Python loop over chunks (not tokens), each step batched over sequences, heads and
levels. Levels that are provably empty at a chunk start are skipped in the readout, except from
an initial state that takes gradients: the decode rule reads every level, so the entries no real
prefix could fill still get theirs.
"""
from __future__ import annotations

import torch

from ..levels import bit_length, level_tensor, read_levels, relevel
from .block import block_terms, level_split, weighted_readout
from .layout import make_layout


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _to_slots(layout, x, dtype, repeat=1):
    """[B, T, X, ...] -> [N, X * repeat, NC, C, ...] in ``dtype`` (X is the head or group dim)."""
    s = layout.gather(x.to(dtype))
    if repeat > 1:
        s = s.repeat_interleave(repeat, dim=3)
    dims = list(range(s.dim()))
    return s.permute(0, 3, 1, 2, *dims[4:])


def _live_levels(a: list[int], num_levels: int) -> list[int]:
    """Levels that can hold anything, for any row, when the states refer to queries ``a``.

    Seen from a (after its merge) level l >= 1 is non-empty only if bit l-1 of a is set; the
    top level also holds everything from higher bits.
    """
    live = set()
    for pos in a:
        for lvl in range(1, pos.bit_length() + 1):
            if (pos >> (lvl - 1)) & 1:
                live.add(min(lvl, num_levels - 1))
    return sorted(live)


def chunk_loglinear_attention(
    q,
    k,
    v,
    g,
    level_weights,
    beta=None,
    cu_seqlens=None,
    initial_state=None,
    output_final_state=False,
    chunk_size=64,
):
    from ..ops import LevelState

    batch, length, num_groups, _ = q.shape
    num_heads, num_levels = v.shape[2], level_weights.shape[-1]
    dtype = _compute_dtype(q.dtype)
    starts = initial_state.position if initial_state is not None else None
    layout = make_layout(batch, length, cu_seqlens, starts, chunk_size, q.device)
    rep = num_heads // num_groups
    qs, ks = _to_slots(layout, q, dtype, rep), _to_slots(layout, k, dtype, rep)
    vs, gs, lam = _to_slots(layout, v, dtype), _to_slots(layout, g, dtype), _to_slots(layout, level_weights, dtype)
    bs = None if beta is None else _to_slots(layout, beta, dtype)
    terms = block_terms(qs, ks, gs, bs)  # every tensor [N, H, NC, ...]

    pos = layout.positions  # [N, NC, C]
    intra = level_tensor(pos[..., :, None], pos[..., None, :], num_levels)
    lam_ts = lam.gather(-1, intra[:, None].expand(-1, num_heads, -1, -1, -1))
    out = (terms.P * lam_ts) @ vs  # [N, H, NC, C, V]

    n = layout.index.shape[0]
    if initial_state is not None:
        states = initial_state.levels.to(dtype)
        states = relevel(states, layout.start - 1, layout.start)
    else:
        states = torch.zeros(n, num_heads, num_levels, ks.shape[-1], vs.shape[-1], dtype=dtype, device=q.device)
    chunk_sum = terms.R @ vs  # [N, H, NC, K, V]: each chunk's tokens pushed to its end
    first_pos = (layout.base.tolist(), layout.start.tolist())
    last = layout.last_chunk.tolist()
    keep = set(last) if output_final_state else set()  # chunk starts the final states are built from
    readouts, at_chunk_start = [], {}
    for i in range(layout.num_chunks):
        a = layout.chunk_start(i)
        if i in keep:
            at_chunk_start[i] = states
        a_host = [max(b + i * layout.block, s) for b, s in zip(*first_pos)]
        # A level empty in value still carries gradient to a differentiable initial state (its
        # entries that no real prefix could fill): read them all, as the decode rule does.
        every = initial_state is not None and (i == 0 or initial_state.levels.requires_grad)
        live = list(range(num_levels)) if every else _live_levels(a_host, num_levels)
        if live and (i > 0 or initial_state is not None):
            sel = torch.tensor(live, device=q.device)
            w = lam[:, :, i].gather(-1, read_levels(a[:, None], pos[:, i], num_levels)[:, None].expand(-1, num_heads, -1, -1))
            readouts.append(weighted_readout(terms.Qt[:, :, i], states[:, :, sel], w[..., sel]))
        else:
            readouts.append(None)
        if i + 1 < layout.num_chunks:
            b = layout.base + (i + 1) * layout.block
            states = relevel(states, a, b)
            states = terms.map(lambda x: x[:, :, i]).transition(states)
            top = bit_length(b ^ (b - 1)).clamp_max(num_levels - 1)
            onehot = torch.nn.functional.one_hot(top, num_levels).to(dtype)[:, None, :, None, None]
            states = states + onehot * chunk_sum[:, :, i, None]
    inter = [r if r is not None else torch.zeros_like(out[:, :, 0]) for r in readouts]
    out = out + torch.stack(inter, dim=2)

    o = layout.scatter(out.permute(0, 2, 3, 1, 4), batch, length).to(v.dtype)
    if not output_final_state:
        return o, None
    start_states = torch.stack([at_chunk_start[c][row] for row, c in enumerate(last)])
    last = layout.last_chunk
    rows = torch.arange(n, device=q.device)
    lt = terms.map(lambda x: x[rows, :, last])
    a_last = torch.maximum(layout.base + last * layout.block, layout.start)
    final_pos = layout.end - 1
    src_levels = level_tensor(final_pos[:, None], pos[rows, last].clamp_max(final_pos[:, None]), num_levels)
    final = lt.transition(relevel(start_states, a_last, final_pos))
    final = final + level_split(lt.R, vs[rows, :, last], src_levels[:, None], num_levels)
    if initial_state is not None:  # empty sequences keep their state
        empty = (layout.end == layout.start).view(-1, 1, 1, 1, 1)
        final = torch.where(empty, initial_state.levels.to(dtype), final)
    return o, LevelState(final if dtype == torch.float64 else final.float(), layout.end.clone())
