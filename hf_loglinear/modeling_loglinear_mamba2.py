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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .cache import GENERATE_CACHE_NAME, HierarchicalCache, cache_from_kwargs
from .configuration_loglinear_mamba2 import LogLinearMamba2Config
from .modules import (
    GatedRMSNorm,
    LevelProjection,
    LevelWeights,
    ShortConvolution,
    next_token_labels,
    pack,
    plan_sequences,
    repad,
)
from .ops import loglinear_attention, loglinear_attention_step
from .remote_code import RemoteCodeMixin

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

        if state is not None and hidden_states.shape[1] == 1 and layout.cu_seqlens is None:
            o, _ = loglinear_attention_step(state, q[:, 0], k[:, 0], v[:, 0], g[:, 0], level_weights[:, 0])
            o = o[:, None]
        else:
            o, final = loglinear_attention(
                q, k, v, g, level_weights, cu_seqlens=layout.cu_seqlens, initial_state=state,
                output_final_state=cache is not None,
            )
            if cache is not None:
                cache.update_level_state(self.layer_idx, final)
        if cache is not None:
            cache.update_conv_state(conv_state, self.layer_idx)

        y = o.float() + self.D.float()[:, None] * x.float()
        y = self.norm(y.flatten(-2), gate)
        return self.out_proj(y.to(dtype))


class LogLinearMamba2MLP(nn.Module):
    """SwiGLU MLP of the authors' block layout: down(act(gate(x)) * up(x))."""

    def __init__(self, config: LogLinearMamba2Config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = ACT2FN[config.mlp_hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LogLinearMamba2Block(GradientCheckpointingLayer):
    def __init__(self, config: LogLinearMamba2Config, layer_idx: int):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.mixer = LogLinearMamba2Mixer(config, layer_idx)
        if config.use_mlp:
            self.mlp_norm = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = LogLinearMamba2MLP(config)

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


class LogLinearMamba2PreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config: LogLinearMamba2Config
    config_class = LogLinearMamba2Config
    base_model_prefix = "backbone"
    _no_split_modules = ["LogLinearMamba2Block"]
    supports_gradient_checkpointing = True
    _is_stateful = True
    _remote_code_classes = {
        "AutoModel": "LogLinearMamba2Model",
        "AutoModelForCausalLM": "LogLinearMamba2ForCausalLM",
    }

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # forward builds a HierarchicalCache itself

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
        elif isinstance(module, LevelProjection):
            init.zeros_(module.weight)
        elif isinstance(module, LevelWeights):
            init.ones_(module.scale)
            init.constant_(module.bias, module.bias_init)


@dataclass
class LogLinearMamba2Output(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class LogLinearMamba2CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def _expose_cache(output: ModelOutput) -> ModelOutput:
    """transformers 5.17's generate() looks for the cache under ``past_key_values`` (5.2x: ``cache``)."""
    if GENERATE_CACHE_NAME == "past_key_values" and output.cache is not None:
        output["past_key_values"] = output.cache
    return output


class LogLinearMamba2Model(LogLinearMamba2PreTrainedModel):
    def __init__(self, config: LogLinearMamba2Config):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([LogLinearMamba2Block(config, i) for i in range(config.num_hidden_layers)])
        self.norm_f = GatedRMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings = new_embeddings

    def _resolve_cache(self, cache, use_cache, num_rows):
        if cache is None:
            return HierarchicalCache(self.config) if use_cache else None
        if not isinstance(cache, HierarchicalCache):
            raise ValueError(f"cache must be a HierarchicalCache returned by this model, got {type(cache).__name__}")
        cache.check(self.config.model_type, num_rows)
        if len(cache.layers) != self.config.num_hidden_layers:
            raise ValueError(f"the cache has {len(cache.layers)} layers, the model {self.config.num_hidden_layers}")
        return cache

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: HierarchicalCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | LogLinearMamba2Output:
        r"""
        attention_mask (`[batch, >= seq_len]`, *optional*): 1 for real tokens, 0 for pads. Pads take no
            position: padded rows run packed from their own first real token. Only the last ``seq_len``
            columns apply (generate() passes the whole mask).
        cu_seqlens (`[num_docs + 1]`, *optional*): documents packed along the sequence of a batch-1 input;
            convolutions and levels restart at every document start.
        cache (`HierarchicalCache`, *optional*): continue every row from its cached state.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = cache_from_kwargs(cache, kwargs)
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
            inputs_embeds = self.embeddings(input_ids)
        elif inputs_embeds.dim() != 3:
            raise ValueError(f"inputs_embeds must be [batch, seq_len, hidden], got shape {tuple(inputs_embeds.shape)}")
        batch, length = inputs_embeds.shape[:2]

        layout, unpadded = plan_sequences(batch, length, attention_mask, cu_seqlens, inputs_embeds.device)
        cache = self._resolve_cache(cache, use_cache, layout.num_sequences)
        restore = (lambda h: repad(h, unpadded)) if unpadded is not None else (lambda h: h)

        hidden_states = pack(inputs_embeds, unpadded) if unpadded is not None else inputs_embeds
        all_hidden_states = (restore(hidden_states),) if output_hidden_states else None
        for block in self.layers:
            hidden_states = block(hidden_states, layout=layout, cache=cache)
            if output_hidden_states:
                all_hidden_states += (restore(hidden_states),)
        hidden_states = restore(self.norm_f(hidden_states))
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        if cache is not None:
            cache.advance(length)

        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden_states) if v is not None)
        return _expose_cache(
            LogLinearMamba2Output(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden_states)
        )


class LogLinearMamba2ForCausalLM(LogLinearMamba2PreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "backbone.embeddings.weight"}

    def __init__(self, config: LogLinearMamba2Config):
        super().__init__(config)
        self.backbone = LogLinearMamba2Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        return self.backbone.set_input_embeddings(new_embeddings)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: HierarchicalCache | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> tuple | LogLinearMamba2CausalLMOutput:
        r"""
        labels (`[batch, seq_len]`, *optional*): targets for the shifted LM loss; a position predicts the
            next token of its own sequence (never across a pad or a document start); -100 is ignored.
        logits_to_keep (`int` or tensor): as in transformers (0 keeps every position).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        cache = cache_from_kwargs(cache, kwargs)
        outputs = self.backbone(
            input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep].to(self.lm_head.weight.dtype)).float()

        loss = None
        if labels is not None:
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(hidden_states.shape[:2])}, got {tuple(labels.shape)}")
            if logits.shape[1] != labels.shape[1]:
                raise ValueError("labels need logits at every position: use logits_to_keep=0")
            layout, unpadded = plan_sequences(*labels.shape, attention_mask, cu_seqlens, labels.device)
            targets = next_token_labels(labels, layout, unpadded)
            loss = self.loss_function(
                logits=logits, labels=None, shift_labels=targets, vocab_size=self.config.vocab_size, **kwargs
            )

        if not return_dict:
            output = (logits,) + tuple(v for v in (outputs.cache, outputs.hidden_states) if v is not None)
            return ((loss,) + output) if loss is not None else output
        return _expose_cache(
            LogLinearMamba2CausalLMOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)
        )
