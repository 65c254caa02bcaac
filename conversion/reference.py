"""Plain-torch references of the SOURCE models the converter checks itself against.

The converter must show that the converted model computes what the source computed. For
Mamba-2 the source runs through transformers' own ``Mamba2ForCausalLM``; fla's Gated DeltaNet
and the authors' log-linear models need fla / mamba_ssm / CUDA, so they are restated here from
their published math, token by token and with the sources' own parameter names (so that loading
a checkpoint with ``strict=True`` also checks its layout):

- ``GatedDeltaNetReference(config)``: fla's GatedDeltaNetForCausalLM (q/k/v short convs + SiLU,
  L2-normalised q and k, q scaled by head_dim^-1/2, beta = sigmoid(b), g = -exp(A_log) *
  softplus(a + dt_bias), per-head RMSNorm then * silu(g_proj), SwiGLU MLP).
- ``GatedDeltaNetReference(config, num_levels=15)``: the authors' h_gated_deltanet: the same plus
  ``attn.l_proj`` and ``attn.L``, lambda = softplus(L * l_proj(x)), and no query scale.
- ``HAttentionReference(config)``: the authors' hattention (log-linear Mamba-2 mixer whose in_proj
  ends in H * 15 dl rows, lambda = softplus(L * dl), a gated RMSNorm over the whole inner width,
  then a SwiGLU MLP per block).

Levels follow the authors: uncapped, so a sequence may not reach level ``num_levels`` (their
model stops at 2^(num_levels - 1) tokens too). Everything runs in the parameters' dtype; the
converter uses float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GatedDeltaNetReference", "HAttentionReference", "level_recurrence"]


def level_recurrence(q, k, v, log_decay, *, beta=None, level_weights=None):
    """o_t = sum_l lambda_t^(l) q_t^T S_t^(l) over Fenwick level states, one token at a time.

    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, log_decay ``[B, T, H]``, beta ``[B, T, H]`` (delta
    rule) or None, level_weights ``[B, T, H, L]`` or None (one level of weight 1: the linear model).
    Step t: merge the levels below m = bit_length(t XOR (t-1)) into level m, apply the
    transition to every level (decay, and for the delta rule I - beta k k^T), write the token
    into level 0, read.
    """
    batch, length, heads, key_dim = k.shape
    if level_weights is None:
        level_weights = q.new_ones(batch, length, heads, 1)
    elif length > 1 << (level_weights.shape[-1] - 1):
        raise ValueError(
            f"position {1 << (level_weights.shape[-1] - 1)} needs level {level_weights.shape[-1]}; "
            f"the source model has only {level_weights.shape[-1]} levels"
        )
    used = min(level_weights.shape[-1], (length - 1).bit_length() + 1)  # levels this length can reach
    states = q.new_zeros(batch, heads, used, key_dim, v.shape[-1])
    decay = log_decay.exp()[..., None, None, None]
    write = k[..., :, None] * (v if beta is None else beta[..., None] * v)[..., None, :]  # [B, T, H, K, V]
    out = []
    for t in range(length):
        if t > 0 and used > 1:
            m = (t ^ (t - 1)).bit_length()
            states[:, :, m] += states[:, :, :m].sum(2)
            states[:, :, :m] = 0
        states.mul_(decay[:, t])
        if beta is not None:
            k_t = k[:, t, :, None, :, None]  # [B, H, 1, K, 1]
            states -= beta[:, t, :, None, None, None] * k_t * (k_t * states).sum(-2, keepdim=True)
        states[:, :, 0] += write[:, t]
        read = (q[:, t, :, None, None, :] @ states).squeeze(-2)  # [B, H, L, V]
        out.append((level_weights[:, t, :, :used, None] * read).sum(2))
    return torch.stack(out, dim=1)


# --------------------------------------------------------------------------- shared pieces
class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class SwiGLU(nn.Module):
    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def depthwise_conv(x, conv: nn.Conv1d):
    """Causal depthwise convolution + SiLU over [B, T, D]."""
    y = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=conv.kernel_size[0] - 1, groups=x.shape[-1])
    return F.silu(y[..., : x.shape[1]]).transpose(1, 2)


def l2norm(x, eps=1e-6):
    """fla's L2 normalisation of q and k (eps inside the square root)."""
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def _conv(channels, kernel, bias):
    return nn.Conv1d(channels, channels, kernel, groups=channels, bias=bias)


def fla_mlp_width(hidden_size, hidden_ratio=4, intermediate_size=None):
    """fla's GatedMLP width: 2/3 * hidden * ratio rounded up to a multiple of 256."""
    if intermediate_size is not None:
        return intermediate_size
    width = int(hidden_size * (4 if hidden_ratio is None else hidden_ratio) * 2 / 3)
    return 256 * ((width + 255) // 256)


class _CausalLM(nn.Module):
    """Embeddings -> blocks -> final norm -> lm_head, under the source's module prefix."""

    def __init__(self, prefix, vocab, hidden, blocks, final_norm_name, eps, tied):
        super().__init__()
        body = nn.Module()
        body.embeddings = nn.Embedding(vocab, hidden)
        body.layers = nn.ModuleList(blocks)
        setattr(body, final_norm_name, RMSNorm(hidden, eps))
        setattr(self, prefix, body)
        self.prefix, self.final_norm_name, self.tied = prefix, final_norm_name, tied
        if not tied:
            self.lm_head = nn.Linear(hidden, vocab, bias=False)

    @torch.no_grad()
    def forward(self, input_ids):
        body = getattr(self, self.prefix)
        h = body.embeddings(input_ids)
        for block in body.layers:
            h = block(h)
        h = getattr(body, self.final_norm_name)(h)
        return F.linear(h, body.embeddings.weight if self.tied else self.lm_head.weight)


# --------------------------------------------------------------------------- Gated DeltaNet
class _GatedDeltaNetAttention(nn.Module):
    def __init__(self, c, num_levels):
        super().__init__()
        hidden, self.head_k = c["hidden_size"], c["head_dim"]
        self.heads_k, self.heads_v = c["num_heads"], c.get("num_v_heads") or c["num_heads"]
        self.head_v = int(self.head_k * c["expand_v"])
        key_dim, value_dim = self.heads_k * self.head_k, self.heads_v * self.head_v
        self.q_proj = nn.Linear(hidden, key_dim, bias=False)
        self.k_proj = nn.Linear(hidden, key_dim, bias=False)
        self.v_proj = nn.Linear(hidden, value_dim, bias=False)
        self.a_proj = nn.Linear(hidden, self.heads_v, bias=False)
        self.b_proj = nn.Linear(hidden, self.heads_v, bias=False)
        self.A_log = nn.Parameter(torch.zeros(self.heads_v))
        self.dt_bias = nn.Parameter(torch.zeros(self.heads_v))
        self.q_conv1d = _conv(key_dim, c["conv_size"], False)
        self.k_conv1d = _conv(key_dim, c["conv_size"], False)
        self.v_conv1d = _conv(value_dim, c["conv_size"], False)
        self.use_gate, self.allow_neg_eigval = c["use_gate"], c["allow_neg_eigval"]
        if self.use_gate:
            self.g_proj = nn.Linear(hidden, value_dim, bias=False)
        self.o_norm = RMSNorm(self.head_v, c["norm_eps"])
        self.o_proj = nn.Linear(value_dim, hidden, bias=False)
        self.num_levels = num_levels
        if num_levels is not None:  # the authors' h_gated_deltanet
            self.l_proj = nn.Linear(hidden, self.heads_v * num_levels, bias=False)
            self.L = nn.Parameter(torch.ones(self.heads_v, num_levels))

    def forward(self, x):
        B, T, _ = x.shape
        per_value_head = self.heads_v // self.heads_k  # GVA: value head h reads key head h // ratio
        q = depthwise_conv(self.q_proj(x), self.q_conv1d).view(B, T, self.heads_k, self.head_k)
        k = depthwise_conv(self.k_proj(x), self.k_conv1d).view(B, T, self.heads_k, self.head_k)
        v = depthwise_conv(self.v_proj(x), self.v_conv1d).view(B, T, self.heads_v, self.head_v)
        q, k = (l2norm(t).repeat_interleave(per_value_head, dim=2) for t in (q, k))
        beta = self.b_proj(x).sigmoid() * (2 if self.allow_neg_eigval else 1)
        g = -self.A_log.exp() * F.softplus(self.a_proj(x) + self.dt_bias)
        if self.num_levels is None:
            o = level_recurrence(q * self.head_k**-0.5, k, v, g, beta=beta)
        else:
            lam = F.softplus(self.L * self.l_proj(x).view(B, T, self.heads_v, self.num_levels))
            o = level_recurrence(q, k, v, g, beta=beta, level_weights=lam)
        o = self.o_norm(o)
        if self.use_gate:
            o = o * F.silu(self.g_proj(x).view(B, T, self.heads_v, self.head_v))
        return self.o_proj(o.reshape(B, T, -1))


class _GatedDeltaNetBlock(nn.Module):
    def __init__(self, c, num_levels):
        super().__init__()
        self.attn_norm = RMSNorm(c["hidden_size"], c["norm_eps"])
        self.attn = _GatedDeltaNetAttention(c, num_levels)
        self.mlp_norm = RMSNorm(c["hidden_size"], c["norm_eps"])
        self.mlp = SwiGLU(c["hidden_size"], fla_mlp_width(c["hidden_size"], c.get("hidden_ratio"), c.get("intermediate_size")))

    def forward(self, h):
        h = h + self.attn(self.attn_norm(h))
        return h + self.mlp(self.mlp_norm(h))


class GatedDeltaNetReference(_CausalLM):
    """fla's GatedDeltaNetForCausalLM (``num_levels=None``) or the authors' h_gated_deltanet."""

    def __init__(self, config: dict, num_levels: int | None = None):
        c = config
        blocks = [_GatedDeltaNetBlock(c, num_levels) for _ in range(c["num_hidden_layers"])]
        super().__init__("model", c["vocab_size"], c["hidden_size"], blocks, "norm", c["norm_eps"],
                         c.get("tie_word_embeddings", False))


# --------------------------------------------------------------------------- authors' Mamba-2
class _HAttentionMixer(nn.Module):
    def __init__(self, c, num_levels):
        super().__init__()
        self.heads, self.head_dim, self.groups = c["num_heads"], c["head_dim"], c["n_groups"]
        self.state, self.num_levels = c["state_size"], num_levels
        self.inner = int(c["expand"] * c["hidden_size"])
        conv_dim = self.inner + 2 * self.groups * self.state
        self.in_proj = nn.Linear(c["hidden_size"], self.inner + conv_dim + self.heads * (1 + num_levels), bias=c["use_bias"])
        self.conv1d = _conv(conv_dim, c["conv_kernel"], c["use_conv_bias"])
        self.dt_bias = nn.Parameter(torch.zeros(self.heads))
        self.A_log = nn.Parameter(torch.zeros(self.heads))
        self.L = nn.Parameter(torch.ones(self.heads, num_levels))
        self.D = nn.Parameter(torch.ones(self.heads))
        self.norm = RMSNorm(self.inner, c["layer_norm_epsilon"])
        self.out_proj = nn.Linear(self.inner, c["hidden_size"], bias=c["use_bias"])

    def forward(self, x):
        B, T, _ = x.shape
        gs = self.groups * self.state
        z, xbc, dt, dl = self.in_proj(x).split([self.inner, self.inner + 2 * gs, self.heads, self.heads * self.num_levels], -1)
        xs, b, c = depthwise_conv(xbc, self.conv1d).split([self.inner, gs, gs], -1)
        xs = xs.view(B, T, self.heads, self.head_dim)
        b, c = (t.view(B, T, self.groups, self.state).repeat_interleave(self.heads // self.groups, 2) for t in (b, c))
        dt = F.softplus(dt + self.dt_bias)
        lam = F.softplus(self.L * dl.view(B, T, self.heads, self.num_levels))
        y = level_recurrence(c, b, xs * dt[..., None], -self.A_log.exp() * dt, level_weights=lam)
        y = (y + self.D[:, None] * xs).reshape(B, T, self.inner)
        return self.out_proj(self.norm(y * F.silu(z)))  # gate first, then RMS over the whole width


class _HAttentionBlock(nn.Module):
    def __init__(self, c, num_levels, intermediate):
        super().__init__()
        self.mixer_norm = RMSNorm(c["hidden_size"], c["layer_norm_epsilon"])
        self.mixer = _HAttentionMixer(c, num_levels)
        self.mlp_norm = RMSNorm(c["hidden_size"], c["layer_norm_epsilon"])
        self.mlp = SwiGLU(c["hidden_size"], intermediate)

    def forward(self, h):
        h = h + self.mixer(self.mixer_norm(h))
        return h + self.mlp(self.mlp_norm(h))


class HAttentionReference(_CausalLM):
    """The authors' HAttentionForCausalLM; ``num_levels`` and the MLP width come from the checkpoint."""

    def __init__(self, config: dict, num_levels: int = 15, intermediate_size: int | None = None):
        c = config
        width = intermediate_size or fla_mlp_width(c["hidden_size"])
        blocks = [_HAttentionBlock(c, num_levels, width) for _ in range(c["num_hidden_layers"])]
        super().__init__("backbone", c["vocab_size"], c["hidden_size"], blocks, "norm_f", c["layer_norm_epsilon"],
                         c.get("tie_word_embeddings", False))
