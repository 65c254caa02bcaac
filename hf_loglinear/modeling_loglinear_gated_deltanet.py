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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .cache import HierarchicalCache
from .configuration_loglinear_gated_deltanet import LogLinearGatedDeltaNetConfig
from .modules import (
    GatedRMSNorm,
    LevelProjection,
    LevelWeights,
    SequenceLayout,
    ShortConvolution,
    next_token_labels,
    pack,
    plan_sequences,
    repad,
)
from .ops import loglinear_attention, loglinear_attention_step
from .remote_code import RemoteCodeMixin

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


class LogLinearGatedDeltaNetMLP(nn.Module):
    def __init__(self, config: LogLinearGatedDeltaNetConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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

        if level_state is not None and x.shape[1] == 1 and layout.cu_seqlens is None:
            o, _ = loglinear_attention_step(level_state, q[:, 0], k[:, 0], v[:, 0], g[:, 0], lam[:, 0], beta=beta[:, 0])
            o = o[:, None]
        else:
            o, final = loglinear_attention(
                q, k, v, g, lam, beta=beta, cu_seqlens=layout.cu_seqlens,
                initial_state=level_state, output_final_state=cache is not None,
            )
            if cache is not None:
                cache.update_level_state(self.layer_idx, final)

        gate = self.g_proj(x).unflatten(-1, (self.num_v_heads, self.head_v_dim)) if self.use_gate else None
        o = self.o_norm(o, gate)
        return self.o_proj(o.flatten(-2))


class LogLinearGatedDeltaNetBlock(GradientCheckpointingLayer):
    def __init__(self, config: LogLinearGatedDeltaNetConfig, layer_idx: int):
        super().__init__()
        self.attn_norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = LogLinearGatedDeltaNetMixer(config, layer_idx)
        self.mlp_norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = LogLinearGatedDeltaNetMLP(config)

    def forward(self, hidden_states, layout, cache=None):
        hidden_states = hidden_states + self.attn(self.attn_norm(hidden_states), layout, cache)
        return hidden_states + self.mlp(self.mlp_norm(hidden_states))


class LogLinearGatedDeltaNetPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    config: LogLinearGatedDeltaNetConfig
    config_class = LogLinearGatedDeltaNetConfig
    base_model_prefix = "model"
    _no_split_modules = ["LogLinearGatedDeltaNetBlock"]
    supports_gradient_checkpointing = True
    _is_stateful = True
    _remote_code_classes = {
        "AutoModel": "LogLinearGatedDeltaNetModel",
        "AutoModelForCausalLM": "LogLinearGatedDeltaNetForCausalLM",
    }

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: the model creates its HierarchicalCache itself.
        return False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LogLinearGatedDeltaNetMixer):
            module.init_gdn_weights()
        elif isinstance(module, LevelProjection):
            # With the neutral bias, lambda = 1 at every level: plain Gated DeltaNet until trained.
            init.zeros_(module.weight)
        elif isinstance(module, LevelWeights):
            init.ones_(module.scale)
            init.constant_(module.bias, module.bias_init)


@dataclass
class LogLinearGatedDeltaNetOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class LogLinearGatedDeltaNetCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class LogLinearGatedDeltaNetModel(LogLinearGatedDeltaNetPreTrainedModel):
    def __init__(self, config: LogLinearGatedDeltaNetConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(
            [LogLinearGatedDeltaNetBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = GatedRMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def _resolve_cache(self, cache, use_cache, num_rows):
        if cache is None:
            # Three conv states per layer: the q, k and v short convolutions.
            return HierarchicalCache(self.config, num_conv_states=3) if use_cache else None
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
    ) -> tuple | LogLinearGatedDeltaNetOutput:
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
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            use_cache = False
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
            inputs_embeds = self.embeddings(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must be [batch, seq_len, {self.config.hidden_size}], got shape {tuple(inputs_embeds.shape)}"
            )
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
        hidden_states = restore(self.norm(hidden_states))
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        if cache is not None:
            cache.advance(length)

        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden_states) if v is not None)
        return LogLinearGatedDeltaNetOutput(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden_states)


class LogLinearGatedDeltaNetForCausalLM(LogLinearGatedDeltaNetPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: LogLinearGatedDeltaNetConfig):
        super().__init__(config)
        self.model = LogLinearGatedDeltaNetModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, value):
        self.model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

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
    ) -> tuple | LogLinearGatedDeltaNetCausalLMOutput:
        r"""
        labels (`[batch, seq_len]`, *optional*): targets for the shifted LM loss; a position predicts the
            next token of its own sequence (never across a pad or a document start); -100 is ignored.
        logits_to_keep (`int` or tensor): as in transformers (0 keeps every position).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
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
            output = (logits,) + tuple(x for x in (outputs.cache, outputs.hidden_states) if x is not None)
            return ((loss,) + output) if loss is not None else output
        return LogLinearGatedDeltaNetCausalLMOutput(
            loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states
        )

