"""Building blocks shared by the log-linear models.

API (read by both models):

- ``LevelProjection(hidden_size, num_heads, num_levels)``: the bias-free ``nn.Linear`` producing the
  raw level weights ([H * L, hidden], head-major then level), zero at init. A class of its own
  so that ``_init_weights`` can zero it by type: on ``from_pretrained`` of a checkpoint without
  it, transformers initialises only the missing module, never its parent mixer.
- ``LevelWeights(num_heads, num_levels, bias_init=None)``: parameters ``scale`` [H, L] (init 1) and
  ``bias`` [H, L] (init ``bias_init`` or ln(e - 1) = softplus^-1(1)).
  ``forward(raw [..., H * L]) -> lambda [..., H, L]`` float32, softplus(scale * raw + bias).
  ``reset_parameters()`` re-applies the initial values (call it from ``_init_weights``).
- ``GatedRMSNorm(hidden_size, group_size=None, eps=1e-6, norm_before_gate=False)``: weight
  [hidden_size]; ``forward(x, gate=None)``. ``norm_before_gate=False`` is transformers'
  ``MambaRMSNormGated`` (x * silu(gate), then RMS per group of ``group_size``, then weight);
  ``True`` is fla's ``FusedRMSNormGated`` / Qwen3-Next's gated norm (RMS, weight, then * silu(gate)).
  ``group_size=None`` normalises over the whole last dim.
- ``SequenceLayout``: where the tokens of one forward sit. ``SequenceLayout.dense(batch, length,
  device)`` for [B, T] rows that are whole sequences (or continuations), ``SequenceLayout.packed(
  cu_seqlens, length)`` for sequences packed along T of a B = 1 input. Fields: ``cu_seqlens``
  (None when dense, else the int32 [N + 1] tensor to hand the operator), ``seq_index`` [B, T]
  (which sequence / cache row), ``offset`` [B, T] (tokens of the same sequence before it in this
  input), ``starts`` / ``lengths`` [N] (flat token index of each sequence's first token, and its
  token count in this input), ``num_sequences``.
- ``ShortConvolution(channels, kernel_size, bias=True, activation=None)``: an ``nn.Conv1d``
  (depthwise, weight [D, 1, K], so checkpoints load by name) whose ``forward(x [B, T, D],
  layout=None, state=None, output_state=False) -> (y [B, T, D], state | None)`` restarts at every
  sequence start of ``layout`` and continues from ``state`` [N, D, K - 1] (the last K - 1 inputs
  of each sequence, zeros before its start). Prefill writes the state, a one-token decode
  (T = 1) rolls it: both are the same call. ``causal_conv`` is the functional form.
- Packing for padded batches: ``Unpadded = unpad(attention_mask)`` (``indices`` of the real
  tokens in the flattened [B * T], ``cu_seqlens`` int32 [B + 1], ``batch``, ``length``);
  ``pack(x [B, T, ...], unpadded) -> [1, N_tokens, ...]``; ``repad(x [1, N_tokens, ...],
  unpadded) -> [B, T, ...]`` with zeros at the pads. Each row becomes one packed sequence that
  starts at its own first real token, which makes padding exact (SPEC §4).
- ``plan_sequences(batch, length, attention_mask=None, cu_seqlens=None, device=None) ->
  (SequenceLayout, Unpadded | None)``: the one decision every model forward makes: dense rows,
  packed documents (``cu_seqlens``, B = 1), or padded rows run packed (``Unpadded`` given: pack
  the embeddings before the layers and repad after). Only the last ``length`` columns of
  ``attention_mask`` apply (generate() passes the whole mask).
- ``next_token_labels(labels [B, T], layout, unpadded=None) -> [B, T]``: shifted LM targets that
  never cross a sequence start or a pad (-100 there); hand them to ``loss_function`` as
  ``shift_labels``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LevelProjection",
    "LevelWeights",
    "GatedRMSNorm",
    "SequenceLayout",
    "ShortConvolution",
    "causal_conv",
    "Unpadded",
    "unpad",
    "pack",
    "repad",
    "plan_sequences",
    "next_token_labels",
]

# softplus^-1(1): with a zero projection the level weights are exactly 1 (plain Mamba-2 / GDN).
NEUTRAL_LEVEL_BIAS = math.log(math.e - 1)


# --------------------------------------------------------------------------- level weights
class LevelProjection(nn.Linear):
    """Raw level weights, one per (head, level), from the mixer's input; starts at zero, which
    with the neutral ``LevelWeights`` bias makes a fresh model the plain linear model."""

    def __init__(self, hidden_size: int, num_heads: int, num_levels: int):
        super().__init__(hidden_size, num_heads * num_levels, bias=False)

    def reset_parameters(self):
        nn.init.zeros_(self.weight)


class LevelWeights(nn.Module):
    """lambda = softplus(scale * raw + bias), one value per (head, level).

    A submodule of its own so that peft ``modules_to_save=["level_weights"]`` can train and save
    the per-(head, level) tables (1-D/2-D parameters cannot carry LoRA).
    """

    def __init__(self, num_heads: int, num_levels: int, bias_init: float | None = None):
        super().__init__()
        if num_heads < 1 or num_levels < 1:
            raise ValueError(f"LevelWeights needs num_heads >= 1 and num_levels >= 1, got {num_heads}, {num_levels}")
        self.num_heads, self.num_levels = num_heads, num_levels
        self.bias_init = NEUTRAL_LEVEL_BIAS if bias_init is None else float(bias_init)
        self.scale = nn.Parameter(torch.ones(num_heads, num_levels))
        self.bias = nn.Parameter(torch.full((num_heads, num_levels), self.bias_init))

    @torch.no_grad()
    def reset_parameters(self):
        self.scale.fill_(1.0)
        self.bias.fill_(self.bias_init)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        raw = raw.unflatten(-1, (self.num_heads, self.num_levels)).float()
        return F.softplus(self.scale.float() * raw + self.bias.float())

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, num_levels={self.num_levels}, bias_init={self.bias_init:.4f}"


# --------------------------------------------------------------------------- gated RMSNorm
class GatedRMSNorm(nn.Module):
    """RMSNorm with a SiLU gate, per group of channels, computed in float32.

    ``norm_before_gate=False``: weight * rms(x * silu(gate)) (Mamba-2, gate first).
    ``norm_before_gate=True``: weight * rms(x) * silu(gate) (Gated DeltaNet's o_norm).
    """

    def __init__(self, hidden_size: int, group_size: int | None = None, eps: float = 1e-6, norm_before_gate=False):
        super().__init__()
        group_size = hidden_size if group_size is None else group_size
        if group_size < 1 or hidden_size % group_size:
            raise ValueError(f"group_size {group_size} must divide hidden_size {hidden_size}")
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.group_size, self.variance_epsilon, self.norm_before_gate = group_size, eps, norm_before_gate

    def _rms(self, x):
        groups = x.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return groups.flatten(-2)

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if gate is None:
            return self.weight * self._rms(x).to(dtype)
        if not self.norm_before_gate:
            return self.weight * self._rms(x * F.silu(gate.float())).to(dtype)
        y = self.weight * self._rms(x).to(dtype)
        return (y * F.silu(gate.float())).to(dtype)

    def extra_repr(self) -> str:
        return (
            f"{self.weight.shape[0]}, group_size={self.group_size}, eps={self.variance_epsilon}, "
            f"norm_before_gate={self.norm_before_gate}"
        )


# --------------------------------------------------------------------------- token layout
@dataclass
class SequenceLayout:
    """Which sequence each token of a forward belongs to, and how many of its tokens precede it."""

    cu_seqlens: torch.Tensor | None
    seq_index: torch.Tensor  # [B, T] int64
    offset: torch.Tensor  # [B, T] int64
    starts: torch.Tensor  # [N] int64 flat index of each sequence's first token
    lengths: torch.Tensor  # [N] int64

    @property
    def num_sequences(self) -> int:
        return self.lengths.shape[0]

    @classmethod
    def dense(cls, batch: int, length: int, device=None) -> "SequenceLayout":
        t = torch.arange(length, device=device)
        rows = torch.arange(batch, device=device)
        return cls(
            cu_seqlens=None,
            seq_index=rows[:, None].expand(batch, length),
            offset=t[None].expand(batch, length),
            starts=rows * length,
            lengths=torch.full((batch,), length, dtype=torch.int64, device=device),
        )

    @classmethod
    def packed(cls, cu_seqlens: torch.Tensor, length: int) -> "SequenceLayout":
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.is_floating_point():
            raise ValueError(f"cu_seqlens must be a 1-D integer tensor [N + 1], got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}")
        cu = cu_seqlens.to(torch.int64)
        lengths = cu[1:] - cu[:-1]
        if cu[0].item() != 0 or cu[-1].item() != length or bool((lengths < 0).any()):
            raise ValueError(f"cu_seqlens must rise from 0 to the packed length {length}, got {cu.tolist()}")
        t = torch.arange(length, device=cu.device)
        seq = torch.searchsorted(cu[1:], t, right=True)
        return cls(
            cu_seqlens=cu_seqlens.to(torch.int32),
            seq_index=seq[None],
            offset=(t - cu[seq])[None],
            starts=cu[:-1],
            lengths=lengths,
        )


# --------------------------------------------------------------------------- short convolution
def causal_conv(x, weight, bias=None, layout=None, state=None, activation=None, output_state=False):
    """Depthwise causal convolution that restarts at sequence starts.

    x ``[B, T, D]``; weight ``[D, K]``; bias ``[D]`` or None; layout a ``SequenceLayout`` (None:
    dense rows); state ``[N, D, K - 1]`` (the inputs before each sequence's first token here,
    oldest first) or None (nothing before). Output tap j (0 = the token itself) reads x j tokens
    back inside the same sequence; taps reaching before this input read ``state``.
    Returns ``(y [B, T, D], new_state [N, D, K - 1] or None)``.
    """
    batch, length, channels = x.shape
    if layout is None:
        layout = SequenceLayout.dense(batch, length, x.device)
    width = weight.shape[-1] - 1
    n = layout.num_sequences
    if state is not None and tuple(state.shape) != (n, channels, width):
        raise ValueError(f"conv state has shape {tuple(state.shape)}, expected {(n, channels, width)} [N, D, K - 1]")
    w = weight.to(x.dtype)
    y = x * w[:, width]
    if bias is not None:
        y = y + bias.to(x.dtype)
    offset = layout.offset[..., None]
    for j in range(1, width + 1):  # a short, fixed number of taps: shift, mask, accumulate
        shifted = F.pad(x, (0, 0, j, 0))[:, :length]
        y = y + torch.where(offset >= j, shifted, 0.0) * w[:, width - j]
    if state is not None and width > 0:
        # The first K - 1 tokens of each sequence also see the cached inputs: for a token with
        # o earlier tokens here, carry[o] = sum_i w[i] * state[i + o] (a small conv of the state).
        state = state.to(x.dtype)
        padded = F.pad(state, (0, width))
        carry = F.conv1d(padded, w[:, None, :width], groups=channels)[..., :width]  # [N, D, W]
        carry = torch.cat([carry.transpose(1, 2).reshape(n * width, channels), carry.new_zeros(1, channels)])
        index = torch.where(layout.offset < width, layout.seq_index * width + layout.offset, n * width)
        y = y + carry[index]
    if activation is not None:
        y = activation(y)
    if not output_state:
        return y, None
    return y, _conv_tail(x, state, layout, width)


def _conv_tail(x, state, layout, width):
    """The last ``width`` inputs of every sequence, reaching into ``state`` when it is shorter."""
    channels = x.shape[-1]
    n = layout.num_sequences
    flat = x.reshape(-1, channels)
    if state is None:
        past = x.new_zeros(n * width, channels)
    else:
        past = state.transpose(1, 2).reshape(n * width, channels).to(x.dtype)
    buffer = torch.cat([flat, past])
    slot = torch.arange(width, device=x.device)
    back = layout.lengths[:, None] - width + slot  # offset in this input of the token slot i holds
    # Slot s of the old state holds offset s - width, so offset `back` < 0 lives in slot back + width.
    from_state = flat.shape[0] + torch.arange(n, device=x.device)[:, None] * width + back + width
    index = torch.where(back >= 0, layout.starts[:, None] + back, from_state)
    return buffer[index].transpose(1, 2).contiguous()  # [N, D, W]


class ShortConvolution(nn.Conv1d):
    """Depthwise causal conv1d (weight [D, 1, K]) with sequence restarts and a decode state."""

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, activation=None):
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, groups=channels, bias=bias, padding=kernel_size - 1)
        self.activation = activation

    @property
    def state_width(self) -> int:
        return self.kernel_size[0] - 1

    def forward(self, x, layout=None, state=None, output_state=False):
        return causal_conv(
            x, self.weight[:, 0], self.bias, layout, state, activation=self.activation, output_state=output_state
        )


# --------------------------------------------------------------------------- padding <-> packing
@dataclass
class Unpadded:
    indices: torch.Tensor  # [N_tokens] int64 into the flattened [B * T]
    cu_seqlens: torch.Tensor  # [B + 1] int32
    batch: int
    length: int


def unpad(attention_mask: torch.Tensor) -> Unpadded:
    """Real tokens of a [B, T] 0/1 mask, each row one sequence (rows may be empty)."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be 2-D [B, T] of 0/1, got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    lengths = mask.sum(-1)
    cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    indices = mask.flatten().nonzero().squeeze(-1)
    return Unpadded(indices, cu, mask.shape[0], mask.shape[1])


def pack(x: torch.Tensor, unpadded: Unpadded) -> torch.Tensor:
    return x.flatten(0, 1)[unpadded.indices].unsqueeze(0)


def repad(x: torch.Tensor, unpadded: Unpadded) -> torch.Tensor:
    flat = x.new_zeros(unpadded.batch * unpadded.length, *x.shape[2:])
    flat = flat.index_copy(0, unpadded.indices, x[0])
    return flat.view(unpadded.batch, unpadded.length, *x.shape[2:])


# --------------------------------------------------------------------------- planning a forward
def plan_sequences(batch, length, attention_mask=None, cu_seqlens=None, device=None):
    """Dense rows, packed documents, or padded rows run packed: see the module docstring."""
    if cu_seqlens is not None:
        if attention_mask is not None:
            raise ValueError("pass either attention_mask (padded rows) or cu_seqlens (packed documents), not both")
        if batch != 1:
            raise ValueError(f"cu_seqlens packs documents along T and needs batch size 1, got {batch}")
        return SequenceLayout.packed(cu_seqlens.to(device), length), None
    if attention_mask is not None:
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] < length:
            raise ValueError(
                f"attention_mask must be [batch, >= {length}] with batch {batch}, got {tuple(attention_mask.shape)}"
            )
        mask = attention_mask[:, -length:]
        if not bool(mask.all()):
            unpadded = unpad(mask.to(device))
            return SequenceLayout.packed(unpadded.cu_seqlens, unpadded.indices.numel()), unpadded
    return SequenceLayout.dense(batch, length, device), None


def next_token_labels(labels, layout, unpadded=None, ignore_index=-100):
    """Targets for logits at every [B, T] position: the next token of the same sequence."""
    flat = labels.flatten()
    seq = layout.seq_index.flatten()
    index = unpadded.indices if unpadded is not None else torch.arange(flat.numel(), device=flat.device)
    same = seq[1:] == seq[:-1]
    targets = torch.full_like(flat, ignore_index)
    targets[index[:-1]] = torch.where(same, flat[index[1:]], ignore_index)
    return targets.view_as(labels)
