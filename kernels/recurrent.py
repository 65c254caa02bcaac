"""Token-by-token recurrence (SPEC §3): the decode rule, and a full-sequence loop over it.

The step is the torch decode path and the ground truth the chunked forms are tested against:
it never forms a block, a WY factor or a level matrix, only merges, transitions and inserts.
"""
from __future__ import annotations

import torch

from ..levels import relevel
from .layout import sequence_bounds


def _heads(x, num_heads):
    """[N, G, K] -> [N, H, K]: value head h reads group h // (H // G)."""
    return x.repeat_interleave(num_heads // x.shape[1], dim=1)


def recurrent_step(levels, position, q, k, v, g, level_weights, beta=None):
    """One token per row. levels ``[N, H, L, K, V]``, position ``[N]``; returns (o, new levels).

    Pure function (differentiable); ``loglinear_attention_step`` wraps it in place.
    """
    dtype = levels.dtype
    num_heads = v.shape[1]
    q, k = _heads(q.to(dtype), num_heads), _heads(k.to(dtype), num_heads)
    v, g, lam = v.to(dtype), g.to(dtype), level_weights.to(dtype)
    levels = relevel(levels, position - 1, position)
    alpha = g.exp()[:, :, None, None, None]
    if beta is None:
        levels = alpha * levels
        value = v
    else:
        beta = beta.to(dtype)
        k_s = torch.einsum("nhk,nhlkv->nhlv", k, levels)
        levels = alpha * (levels - beta[:, :, None, None, None] * k[:, :, None, :, None] * k_s[:, :, :, None, :])
        value = beta[..., None] * v
    insert = torch.zeros_like(levels[:, :, :1])
    insert = insert + (k[..., :, None] * value[..., None, :])[:, :, None]
    levels = levels + torch.nn.functional.pad(insert, (0, 0, 0, 0, 0, levels.shape[2] - 1))
    o = torch.einsum("nhk,nhl,nhlkv->nhv", q, lam, levels)
    return o, levels


def step_loglinear_attention(state, q, k, v, g, level_weights, beta=None):
    """In-place decode step on a LevelState (torch path)."""
    o, levels = recurrent_step(state.levels, state.position, q, k, v, g, level_weights, beta)
    state.levels.copy_(levels)
    state.position.add_(1)
    return o.to(v.dtype), state


def recurrent_loglinear_attention(
    q, k, v, g, level_weights, beta=None, cu_seqlens=None, initial_state=None, output_final_state=False
):
    """Whole sequences by stepping token after token (slow: tests only)."""
    from ..ops import LevelState

    batch, length = q.shape[:2]
    num_heads, num_levels = v.shape[2], level_weights.shape[-1]
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    flat = [x if x is None else x.reshape(batch * length, *x.shape[2:]) for x in (q, k, v, g, level_weights, beta)]
    out = v.new_zeros(batch * length, num_heads, v.shape[-1], dtype=dtype)
    finals, positions = [], []
    for n, (first, size) in enumerate(sequence_bounds(batch, length, cu_seqlens)):
        if initial_state is not None:
            levels, pos = initial_state.levels[n : n + 1].to(dtype), initial_state.position[n : n + 1]
        else:
            levels = torch.zeros(1, num_heads, num_levels, q.shape[-1], v.shape[-1], dtype=dtype, device=q.device)
            pos = torch.zeros(1, dtype=torch.int64, device=q.device)
        rows = []
        for t in range(first, first + size):
            token = [x if x is None else x[t : t + 1] for x in flat]
            o, levels = recurrent_step(levels, pos, *token[:5], beta=token[5])
            rows.append(o)
            pos = pos + 1
        if rows:
            out = out.index_copy(0, torch.arange(first, first + size, device=q.device), torch.cat(rows))
        finals.append(levels)
        positions.append(pos)
    o = out.view(batch, length, num_heads, -1).to(v.dtype)
    if not output_final_state:
        return o, None
    levels = torch.cat(finals)
    return o, LevelState(levels if dtype == torch.float64 else levels.float(), torch.cat(positions))
