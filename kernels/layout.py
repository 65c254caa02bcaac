"""Chunk layout: sequences (batched or packed with cu_seqlens) as rows of position-aligned chunks.

Every sequence n gets a row of ``num_chunks * C`` slots. Slot j of row n holds the token at
absolute position ``base[n] + j`` where ``base`` is the sequence's first position rounded down
to a multiple of C, so chunk boundaries fall on multiples of C as the level arithmetic needs
(SPEC §4). Slots before the first token (a continuation that starts mid-chunk) and after the
last are null tokens: zero q, k, v, beta and lambda, zero log decay. A null token decays
nothing and adds nothing, so the chunked algebra needs no masks for them.

``chunk_size=None`` puts each whole sequence into one unaligned block (the quadratic form).
This module reads lengths and start positions on the host: it is the torch path's planner.
Every layer of a model (and each backward) plans the same ``cu_seqlens`` again, so the last
plan without start positions is kept and reused while the same, unmodified tensor comes back:
one host read per batch instead of one per layer and pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Layout:
    index: torch.Tensor  # [N, S] int64 flat token index, or the null row (= number of tokens)
    slot_of_token: torch.Tensor  # [B * T] int64 flat slot holding each token (the inverse of index)
    base: torch.Tensor  # [N] int64 absolute position of slot 0
    start: torch.Tensor  # [N] int64 absolute position of the first real token
    end: torch.Tensor  # [N] int64 one past the absolute position of the last real token
    last_chunk: torch.Tensor  # [N] int64 chunk holding each sequence's last token
    block: int  # slots per chunk
    num_chunks: int
    num_tokens: int
    max_base: int  # base.max() known on the host (no device read to size the scans)

    @property
    def positions(self) -> torch.Tensor:
        """Absolute position of every slot, ``[N, num_chunks, block]``."""
        slots = torch.arange(self.num_chunks * self.block, device=self.base.device)
        return (self.base[:, None] + slots).view(-1, self.num_chunks, self.block)

    def chunk_start(self, i: int) -> torch.Tensor:
        """Position of the first real token of chunk i per row (the query its states refer to)."""
        return torch.maximum(self.base + i * self.block, self.start)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, ...] tokens -> [N, num_chunks, block, ...] slots (null slots zero)."""
        flat = x.reshape(-1, *x.shape[2:])
        flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
        out = flat[self.index.view(-1)]
        return out.view(self.index.shape[0], self.num_chunks, self.block, *x.shape[2:])

    def scatter(self, slots: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """[N, num_chunks, block, ...] slots -> [B, T, ...] tokens (inverse of gather; a gather
        itself, since every token has one slot: no boolean mask, no host sync)."""
        flat = slots.reshape(-1, *slots.shape[3:])
        return flat.index_select(0, self.slot_of_token).view(batch, length, *slots.shape[3:])


def sequence_bounds(batch: int, length: int, cu_seqlens) -> list[tuple[int, int]]:
    """(first flat token, length) of every sequence."""
    if cu_seqlens is None:
        return [(b * length, length) for b in range(batch)]
    cu = cu_seqlens.tolist()
    if cu[0] != 0 or cu[-1] != length or any(b < a for a, b in zip(cu, cu[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to T={length}, got {cu}")
    return [(a, b - a) for a, b in zip(cu, cu[1:])]


_last_plan: tuple | None = None  # (key, cu_seqlens kept alive so its address stays its own, layout)


def make_layout(batch, length, cu_seqlens, start_positions, chunk_size, device) -> Layout:
    global _last_plan
    key = None
    if cu_seqlens is not None and start_positions is None:
        key = (cu_seqlens.data_ptr(), cu_seqlens._version, cu_seqlens.numel(), cu_seqlens.device,
               batch, length, chunk_size, torch.device(device))
        if _last_plan is not None and _last_plan[0] == key:
            return _last_plan[2]
    layout = _plan(batch, length, cu_seqlens, start_positions, chunk_size, device)
    if key is not None:
        _last_plan = (key, cu_seqlens, layout)
    return layout


def _plan(batch, length, cu_seqlens, start_positions, chunk_size, device) -> Layout:
    bounds = sequence_bounds(batch, length, cu_seqlens)
    starts = start_positions.tolist() if start_positions is not None else [0] * len(bounds)
    if any(p < 0 for p in starts):
        raise ValueError(f"initial_state.position must be >= 0, got {starts}")
    if chunk_size is None:
        offsets = [0] * len(bounds)
        block = max(1, max(n for _, n in bounds))
    else:
        offsets = [p % chunk_size for p in starts]
        block = chunk_size
    num_chunks = max(1, max(-(-(o + n) // block) for o, (_, n) in zip(offsets, bounds)))
    num_tokens = batch * length
    slots = num_chunks * block
    index = torch.full((len(bounds), slots), num_tokens, dtype=torch.int64)
    last = []
    for row, ((first, n), off) in enumerate(zip(bounds, offsets)):
        index[row, off : off + n] = torch.arange(first, first + n)
        last.append(max(0, (off + n - 1) // block))
    start = torch.tensor(starts, dtype=torch.int64)
    lengths = torch.tensor([n for _, n in bounds], dtype=torch.int64)
    slot_of_token = torch.empty(num_tokens, dtype=torch.int64)
    real = index.view(-1) < num_tokens
    slot_of_token[index.view(-1)[real]] = torch.arange(index.numel())[real]
    return Layout(
        index=index.to(device),
        slot_of_token=slot_of_token.to(device),
        base=(start - torch.tensor(offsets)).to(device),
        start=start.to(device),
        end=(start + lengths).to(device),
        last_chunk=torch.tensor(last, dtype=torch.int64, device=device),
        block=block,
        num_chunks=num_chunks,
        num_tokens=num_tokens,
        max_base=max(p - o for p, o in zip(starts, offsets)),
    )
