"""Log-linear Mamba-2 (Guo et al., 2026) as a transformers model.

The mixer is transformers' ``Mamba2Mixer`` (same parameters, names and torch-path semantics:
z | xBC | dt split, depthwise causal conv, dt = clamp(softplus(dt + dt_bias), time_step_limit),
D skip, grouped gated RMSNorm gate-first) with its SSM replaced by log-linear attention:
q = C, k = B, v = dt * x, g = dt * A and per-(head, level) weights
lambda = softplus(scale * level_proj(x) + bias) (SPEC §2). With ``level_proj`` zero and the bias
at softplus^-1(1) it computes exactly Mamba-2.

Padded rows and packed documents run packed, so pads take no position (SPEC §4); decoding keeps
one position per row in a ``HierarchicalCache``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer

from .cache import HierarchicalCache
from .configuration_loglinear_mamba2 import LogLinearMamba2Config
from .modeling_common import (
    LogLinearCausalLMMixin,
    LogLinearModelMixin,
    LogLinearPreTrainedModel,
    SwiGLUMLP,
    attend_with_cache,
)
from .modules import GatedRMSNorm, LevelProjection, LevelWeights, ShortConvolution

__all__ = ["LogLinearMamba2Model", "LogLinearMamba2ForCausalLM", "LogLinearMamba2PreTrainedModel"]


class LogLinearMamba2Mixer(nn.Module):
    def __init__(self, config: LogLinearMamba2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.head_dim = config.num_heads, config.head_dim
        self.n_groups, self.ssm_state_size = config.n_groups, config.state_size
        self.intermediate_size = int(config.expand * config.hidden_size)
        self.conv_dim = self.intermediate_size + 2 * self.n_groups * self.ssm_state_size
        self.time_step_limit = config.time_step_limit
        self.time_step_min, self.time_step_max = config.time_step_min, config.time_step_max
        self.time_step_floor = config.time_step_floor

        projection_size = self.intermediate_size + self.conv_dim + self.num_heads
        self.in_proj = nn.Linear(config.hidden_size, projection_size, bias=config.use_bias)
        self.conv1d = ShortConvolution(
            self.conv_dim, config.conv_kernel, bias=config.use_conv_bias, activation=ACT2FN[config.hidden_act]
        )
        self.dt_bias = nn.Parameter(torch.ones(self.num_heads))
        self.A_log = nn.Parameter(torch.zeros(self.num_heads))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        self.norm = GatedRMSNorm(
            self.intermediate_size, self.intermediate_size // self.n_groups, eps=config.layer_norm_epsilon
        )
        self.out_proj = nn.Linear(self.intermediate_size, config.hidden_size, bias=config.use_bias)
        self.level_proj = LevelProjection(config.hidden_size, self.num_heads, config.num_levels)
        self.level_weights = LevelWeights(self.num_heads, config.num_levels, config.level_bias_init)

    @torch.no_grad()
    def init_mamba2_weights(self):
        """Mamba-2's S4D-real A, D = 1 and dt_bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max]."""
        init.copy_(self.A_log, torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        init.ones_(self.D)
        dt = torch.exp(
            torch.rand(self.num_heads) * (math.log(self.time_step_max) - math.log(self.time_step_min))
            + math.log(self.time_step_min)
        ).clamp(min=self.time_step_floor)
        init.copy_(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))

    def forward(self, hidden_states, layout, cache: HierarchicalCache | None = None):
        """hidden_states ``[B, T, hidden]`` laid out as ``layout`` says (dense rows or packed)."""
        dtype = hidden_states.dtype
        state = cache.level_state(self.layer_idx) if cache is not None else None
        conv_state = cache.get_conv_state(self.layer_idx) if state is not None else None

        gate, xbc, dt = self.in_proj(hidden_states).split(
            [self.intermediate_size, self.conv_dim, self.num_heads], dim=-1
        )
        xbc, conv_state = self.conv1d(xbc, layout, conv_state, output_state=cache is not None)
        x, b, c = xbc.split(
            [self.intermediate_size, self.n_groups * self.ssm_state_size, self.n_groups * self.ssm_state_size], dim=-1
        )
        dt = F.softplus((dt + self.dt_bias.to(dt.dtype)).float()).clamp(*self.time_step_limit)
        g = dt * -torch.exp(self.A_log.float())
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        q = c.unflatten(-1, (self.n_groups, self.ssm_state_size))
        k = b.unflatten(-1, (self.n_groups, self.ssm_state_size))
        v = (x.float() * dt[..., None]).to(x.dtype)
        level_weights = self.level_weights(self.level_proj(hidden_states))

        o = attend_with_cache(q, k, v, g, level_weights, None, layout, cache, state, self.layer_idx)
        if cache is not None:
            cache.update_conv_state(conv_state, self.layer_idx)

        y = o.float() + self.D.float()[:, None] * x.float()
        y = self.norm(y.flatten(-2), gate)
        return self.out_proj(y.to(dtype))


class LogLinearMamba2Block(GradientCheckpointingLayer):
    def __init__(self, config: LogLinearMamba2Config, layer_idx: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = LogLinearMamba2Mixer(config, layer_idx)
        if config.use_mlp:
            self.mlp_norm = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = SwiGLUMLP(config.hidden_size, config.intermediate_size, config.mlp_hidden_act)

    def _residual(self, hidden_states):
        return hidden_states.float() if self.residual_in_fp32 else hidden_states

    def forward(self, hidden_states, layout, cache=None):
        residual = self._residual(hidden_states)
        hidden_states = self.norm(hidden_states.to(self.norm.weight.dtype))
        hidden_states = residual + self.mixer(hidden_states, layout, cache)
        if hasattr(self, "mlp"):
            residual = self._residual(hidden_states)
            hidden_states = residual + self.mlp(self.mlp_norm(hidden_states.to(self.mlp_norm.weight.dtype)))
        return hidden_states


class LogLinearMamba2PreTrainedModel(LogLinearPreTrainedModel):
    config: LogLinearMamba2Config
    config_class = LogLinearMamba2Config
    base_model_prefix = "backbone"
    _no_split_modules = ["LogLinearMamba2Block"]
    _remote_code_classes = {
        "AutoModel": "LogLinearMamba2Model",
        "AutoModelForCausalLM": "LogLinearMamba2ForCausalLM",
    }

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LogLinearMamba2Mixer):
            module.init_mamba2_weights()
            init.kaiming_uniform_(module.conv1d.weight, a=math.sqrt(5))
            if module.conv1d.bias is not None:
                init.zeros_(module.conv1d.bias)
            out_weight = module.out_proj.weight
            if not getattr(out_weight, "_is_hf_initialized", False):  # never rescale loaded weights
                init.kaiming_uniform_(out_weight, a=math.sqrt(5))
                if self.config.rescale_prenorm_residual:
                    with torch.no_grad():
                        out_weight /= math.sqrt(self.config.num_hidden_layers)


class LogLinearMamba2Model(LogLinearModelMixin, LogLinearMamba2PreTrainedModel):
    _final_norm = "norm_f"

    def __init__(self, config: LogLinearMamba2Config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LogLinearMamba2Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm_f = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()


class LogLinearMamba2ForCausalLM(LogLinearCausalLMMixin, LogLinearMamba2PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: LogLinearMamba2Config):
        super().__init__(config)
        self.backbone = LogLinearMamba2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()
