"""Log-linear Gated DeltaNet as a transformers model (fla's GatedDeltaNet layout plus level weights).

Each block: attn_norm -> log-linear Gated DeltaNet mixer -> residual, mlp_norm -> SwiGLU MLP ->
residual. The mixer (SPEC §2, §6):

    q, k, v = silu(short_conv(q_proj(x))), silu(short_conv(k_proj(x))), silu(short_conv(v_proj(x)))
    q, k    = l2norm per head (q additionally * head_dim ** -0.5 when use_query_scale)
    beta    = sigmoid(b_proj(x))            (x 2 when allow_neg_eigval)
    g       = -exp(A_log) * softplus(a_proj(x) + dt_bias)
    lambda  = level_weights(level_proj(x))
    o       = loglinear_attention(q, k, v, g, lambda, beta)     (G = num_heads, H = num_v_heads)
    out     = o_proj(o_norm(o, g_proj(x)))                       (RMS per head first, then * silu(gate))

Padded batches run packed (every row restarts at its first real token), so a pad never takes a
position; a cached forward continues every row from its own position.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer

from .cache import HierarchicalCache
from .configuration_loglinear_gated_deltanet import LogLinearGatedDeltaNetConfig
from .modeling_common import (
    LogLinearCausalLMMixin,
    LogLinearModelMixin,
    LogLinearPreTrainedModel,
    SwiGLUMLP,
    attend_with_cache,
)
from .modules import GatedRMSNorm, LevelProjection, LevelWeights, SequenceLayout, ShortConvolution

__all__ = [
    "LogLinearGatedDeltaNetForCausalLM",
    "LogLinearGatedDeltaNetModel",
    "LogLinearGatedDeltaNetPreTrainedModel",
]

# fla draws A in [0, 16] and dt log-uniformly in [1e-3, 0.1] (floor 1e-4) for a fresh layer.
_A_RANGE = (0.0, 16.0)
_DT_RANGE, _DT_FLOOR = (1e-3, 1e-1), 1e-4
_L2_EPS = 1e-6  # the epsilon of fla's / transformers' in-kernel q, k normalisation


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """Unit-normalise the last dim in float32 (as fla's ``use_qk_l2norm_in_kernel``)."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).sum(-1, keepdim=True) + _L2_EPS)).to(x.dtype)


class LogLinearGatedDeltaNetMixer(nn.Module):
    """The ``attn`` module of a block; parameter names are fla's ``GatedDeltaNet`` ones plus
    ``level_proj`` and ``level_weights``."""

    def __init__(self, config: LogLinearGatedDeltaNetConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_v_heads = config.num_heads, config.num_v_heads
        self.head_k_dim, self.head_v_dim = config.head_dim, config.head_v_dim
        self.key_dim, self.value_dim = self.num_heads * self.head_k_dim, self.num_v_heads * self.head_v_dim
        self.num_levels = config.num_levels
        self.use_gate, self.allow_neg_eigval = config.use_gate, config.allow_neg_eigval
        self.query_scale = self.head_k_dim**-0.5 if config.use_query_scale else None
        hidden = config.hidden_size

        self.q_proj = nn.Linear(hidden, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.value_dim, bias=False)
        self.a_proj = nn.Linear(hidden, self.num_v_heads, bias=False)
        self.b_proj = nn.Linear(hidden, self.num_v_heads, bias=False)
        self.A_log = nn.Parameter(torch.zeros(self.num_v_heads))
        self.dt_bias = nn.Parameter(torch.zeros(self.num_v_heads))
        self.q_conv1d = ShortConvolution(self.key_dim, config.conv_size, bias=False, activation=F.silu)
        self.k_conv1d = ShortConvolution(self.key_dim, config.conv_size, bias=False, activation=F.silu)
        self.v_conv1d = ShortConvolution(self.value_dim, config.conv_size, bias=False, activation=F.silu)
        self.level_proj = LevelProjection(hidden, self.num_v_heads, self.num_levels)
        self.level_weights = LevelWeights(self.num_v_heads, self.num_levels, config.level_bias_init)
        if self.use_gate:
            self.g_proj = nn.Linear(hidden, self.value_dim, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=config.norm_eps, norm_before_gate=True)
        self.o_proj = nn.Linear(self.value_dim, hidden, bias=False)

    def init_gdn_weights(self):
        """fla's initial decay rates: A ~ U[0, 16], dt log-uniform in [1e-3, 0.1], dt_bias = softplus^-1(dt)."""
        device = self.A_log.device
        a = torch.empty(self.num_v_heads, device=device).uniform_(*_A_RANGE)
        init.copy_(self.A_log, a.log())
        low, high = math.log(_DT_RANGE[0]), math.log(_DT_RANGE[1])
        dt = torch.exp(torch.rand(self.num_v_heads, device=device) * (high - low) + low).clamp(min=_DT_FLOOR)
        init.copy_(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))

    def _short_convs(self, x, layout, cache):
        """q, k, v after their causal convolutions, continuing from (and refreshing) the cached conv states."""
        has_state = cache is not None and cache.has_state(self.layer_idx)
        outputs = []
        for idx, (proj, conv) in enumerate(
            ((self.q_proj, self.q_conv1d), (self.k_proj, self.k_conv1d), (self.v_proj, self.v_conv1d))
        ):
            state = cache.get_conv_state(self.layer_idx, idx) if has_state else None
            y, state = conv(proj(x), layout=layout, state=state, output_state=cache is not None)
            if cache is not None:
                cache.update_conv_state(state, self.layer_idx, idx)
            outputs.append(y)
        return outputs

    def forward(self, hidden_states: torch.Tensor, layout: SequenceLayout, cache: HierarchicalCache | None = None):
        x = hidden_states
        level_state = cache.level_state(self.layer_idx) if cache is not None else None
        q, k, v = self._short_convs(x, layout, cache)
        q = l2norm(q.unflatten(-1, (self.num_heads, self.head_k_dim)))
        k = l2norm(k.unflatten(-1, (self.num_heads, self.head_k_dim)))
        if self.query_scale is not None:
            q = q * self.query_scale
        v = v.unflatten(-1, (self.num_v_heads, self.head_v_dim))
        beta = torch.sigmoid(self.b_proj(x).float())
        if self.allow_neg_eigval:
            beta = beta * 2
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(x).float() + self.dt_bias.float())
        lam = self.level_weights(self.level_proj(x))

        o = attend_with_cache(q, k, v, g, lam, beta, layout, cache, level_state, self.layer_idx)

        gate = self.g_proj(x).unflatten(-1, (self.num_v_heads, self.head_v_dim)) if self.use_gate else None
        o = self.o_norm(o, gate)
        return self.o_proj(o.flatten(-2))


class LogLinearGatedDeltaNetBlock(GradientCheckpointingLayer):
    def __init__(self, config: LogLinearGatedDeltaNetConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = LogLinearGatedDeltaNetMixer(config, layer_idx)
        self.mlp_norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size, config.hidden_act)

    def forward(self, hidden_states, layout, cache=None):
        hidden_states = hidden_states + self.attn(self.attn_norm(hidden_states), layout, cache)
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class LogLinearGatedDeltaNetPreTrainedModel(LogLinearPreTrainedModel):
    config: LogLinearGatedDeltaNetConfig
    config_class = LogLinearGatedDeltaNetConfig
    base_model_prefix = "model"
    _no_split_modules = ["LogLinearGatedDeltaNetBlock"]
    _remote_code_classes = {
        "AutoModel": "LogLinearGatedDeltaNetModel",
        "AutoModelForCausalLM": "LogLinearGatedDeltaNetForCausalLM",
    }

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LogLinearGatedDeltaNetMixer):
            module.init_gdn_weights()


class LogLinearGatedDeltaNetModel(LogLinearModelMixin, LogLinearGatedDeltaNetPreTrainedModel):
    _num_conv_states = 3  # the q, k and v short convolutions

    def __init__(self, config: LogLinearGatedDeltaNetConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            [LogLinearGatedDeltaNetBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()


class LogLinearGatedDeltaNetForCausalLM(
    LogLinearCausalLMMixin, LogLinearGatedDeltaNetPreTrainedModel, GenerationMixin
):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: LogLinearGatedDeltaNetConfig):
        super().__init__(config)
        self.model = LogLinearGatedDeltaNetModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
