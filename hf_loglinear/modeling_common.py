"""What the log-linear models share: cached attention, the SwiGLU MLP, and the model plumbing.

A model file keeps what is its own (mixer, block, weight init, config) and its public classes;
these pieces run the rest the same way for every model:

- ``attend_with_cache``: one decode step per row, or the chunked form continuing from the cache;
- ``LogLinearPreTrainedModel``: stateful, gradient checkpointing, level parameters initialised so
  that a fresh model is its plain (linear) counterpart;
- ``LogLinearModelMixin``: the backbone forward (input checks, padding/packing plan, blocks,
  final norm, hidden states, cache) over the model's ``embeddings``, ``layers`` and final norm;
- ``LogLinearCausalLMMixin``: the LM head forward (``logits_to_keep``, the per-sequence shifted
  loss) over the model's ``base_model`` and ``lm_head``.

The mixins come first in a model class's bases (their methods win over transformers' defaults);
the causal LM also lists ``GenerationMixin`` directly, which is how transformers detects it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import ModelOutput

from .cache import GENERATE_CACHE_NAME, HierarchicalCache, cache_from_kwargs
from .modules import LevelProjection, LevelWeights, SequenceLayout, next_token_labels, pack, plan_sequences, repad
from .ops import LevelState, loglinear_attention, loglinear_attention_step
from .remote_code import RemoteCodeMixin

__all__ = [
    "attend_with_cache",
    "SwiGLUMLP",
    "LogLinearPreTrainedModel",
    "LogLinearModelOutput",
    "LogLinearCausalLMOutput",
    "LogLinearModelMixin",
    "LogLinearCausalLMMixin",
]


def attend_with_cache(
    q, k, v, g, level_weights, beta, layout: SequenceLayout, cache: HierarchicalCache | None,
    state: LevelState | None, layer_idx: int,
):
    """``loglinear_attention`` of a mixer continuing from ``state`` (layer ``layer_idx``'s cached
    level state, read before the mixer refreshed its conv states): one token per dense row decodes
    in place; otherwise the chunked form runs and, with a cache, stores its final state."""
    if state is not None and q.shape[1] == 1 and layout.cu_seqlens is None:
        step_beta = None if beta is None else beta[:, 0]
        o, _ = loglinear_attention_step(state, q[:, 0], k[:, 0], v[:, 0], g[:, 0], level_weights[:, 0], beta=step_beta)
        return o[:, None]
    o, final = loglinear_attention(
        q, k, v, g, level_weights, beta=beta, cu_seqlens=layout.cu_seqlens, initial_state=state,
        output_final_state=cache is not None,
    )
    if cache is not None:
        cache.update_level_state(layer_idx, final)
    return o


class SwiGLUMLP(nn.Module):
    """down(act(gate(x)) * up(x)), no biases: fla's GatedMLP and the authors' Mamba-2 blocks."""

    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.act = ACT2FN[hidden_act]

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LogLinearPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Base of each model's ``PreTrainedModel``, which adds its config, block and mixer init."""

    supports_gradient_checkpointing = True
    _is_stateful = True
    # lambda = softplus(scale * raw + bias) must be exactly 1 in a fresh conversion; in bf16 the
    # tables round to 1.001, so they stay float32 whatever dtype the model loads in.
    _keep_in_fp32_modules_strict = ["level_weights"]

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache: the model creates its HierarchicalCache itself.
        return False

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LevelProjection):
            # With the neutral bias, lambda = 1 at every level: the plain model until trained.
            init.zeros_(module.weight)
        elif isinstance(module, LevelWeights):
            init.ones_(module.scale)
            init.constant_(module.bias, module.bias_init)


@dataclass
class LogLinearModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class LogLinearCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: HierarchicalCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def _expose_cache(output: ModelOutput) -> ModelOutput:
    """transformers 5.17's generate() looks for the cache under ``past_key_values`` (5.2x: ``cache``)."""
    if GENERATE_CACHE_NAME == "past_key_values" and output.cache is not None:
        output["past_key_values"] = output.cache
    return output


class LogLinearModelMixin:
    """The backbone forward. The model defines ``embeddings``, ``layers`` (blocks called as
    ``block(hidden_states, layout=..., cache=...)``) and a final norm named by ``_final_norm``;
    ``_num_conv_states`` is how many conv states a layer caches."""

    _final_norm = "norm"
    _num_conv_states = 1

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def _resolve_cache(self, cache, use_cache, num_rows):
        if cache is None:
            return HierarchicalCache(self.config, num_conv_states=self._num_conv_states) if use_cache else None
        if not isinstance(cache, HierarchicalCache):
            raise ValueError(f"cache must be a HierarchicalCache returned by this model, got {type(cache).__name__}")
        cache.check(self.config.model_type, num_rows)
        if len(cache.layers) != self.config.num_hidden_layers:
            raise ValueError(f"the cache has {len(cache.layers)} layers, the model {self.config.num_hidden_layers}")
        return cache

    def _embed(self, input_ids, inputs_embeds):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq_len], got shape {tuple(input_ids.shape)}")
            return self.embeddings(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            expected = f"[batch, seq_len, {self.config.hidden_size}]"
            raise ValueError(f"inputs_embeds must be {expected}, got shape {tuple(inputs_embeds.shape)}")
        return inputs_embeds

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
    ) -> tuple | LogLinearModelOutput:
        r"""
        attention_mask (`[batch, >= seq_len]`, *optional*): 1 for real tokens, 0 for pads. Pads take no
            position: padded rows run packed from their own first real token. Only the last ``seq_len``
            columns apply (generate() passes the whole mask); a one-token step on a filled cache ignores it.
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
        inputs_embeds = self._embed(input_ids, inputs_embeds)
        batch, length = inputs_embeds.shape[:2]

        if length == 1 and isinstance(cache, HierarchicalCache) and cache.get_seq_length() > 0:
            # A decode step carries no pad (generate() extends the mask with ones; pads only precede
            # a row's prompt): not reading the mask keeps every decode step free of host syncs.
            attention_mask = None
        layout, unpadded = plan_sequences(batch, length, attention_mask, cu_seqlens, inputs_embeds.device)
        cache = self._resolve_cache(cache, use_cache, layout.num_sequences)
        restore = (lambda h: repad(h, unpadded)) if unpadded is not None else (lambda h: h)

        hidden_states = pack(inputs_embeds, unpadded) if unpadded is not None else inputs_embeds
        all_hidden_states = (restore(hidden_states),) if output_hidden_states else None
        for block in self.layers:
            hidden_states = block(hidden_states, layout=layout, cache=cache)
            if output_hidden_states:
                all_hidden_states += (restore(hidden_states),)
        hidden_states = restore(getattr(self, self._final_norm)(hidden_states))
        if output_hidden_states:  # the last entry is the normed output, as in transformers
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        if cache is not None:
            cache.advance(length)

        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden_states) if v is not None)
        return _expose_cache(
            LogLinearModelOutput(last_hidden_state=hidden_states, cache=cache, hidden_states=all_hidden_states)
        )


class LogLinearCausalLMMixin:
    """The causal-LM forward over ``self.base_model`` (the backbone) and ``self.lm_head``."""

    def get_input_embeddings(self):
        return self.base_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.base_model.set_input_embeddings(value)

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
    ) -> tuple | LogLinearCausalLMOutput:
        r"""
        labels (`[batch, seq_len]`, *optional*): targets for the shifted LM loss; a position predicts the
            next token of its own sequence (never across a pad or a document start); -100 is ignored.
        logits_to_keep (`int` or tensor): as in transformers (0 keeps every position).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.base_model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cu_seqlens=cu_seqlens,
            cache=cache_from_kwargs(cache, kwargs),
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
            LogLinearCausalLMOutput(loss=loss, logits=logits, cache=outputs.cache, hidden_states=outputs.hidden_states)
        )
