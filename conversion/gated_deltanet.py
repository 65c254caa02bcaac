"""Gated DeltaNet sources: fla's GatedDeltaNetForCausalLM (fla-hub, NVlabs checkpoints) and our own
log-linear Gated DeltaNet (to change ``num_levels``).

Our parameter names are fla's, so every tensor copies 1:1; each layer gains a zero
``level_proj`` and level tables with lambda = 1 and keeps fla's head_dim^-1/2 query scale
(``use_query_scale=True``), so the converted model is the source function. fla needs CUDA, so
the source runs through ``reference.GatedDeltaNetReference``.
"""
from __future__ import annotations

import torch

from ..configuration_loglinear_gated_deltanet import LogLinearGatedDeltaNetConfig
from .plan import Conversion, Relevel, neutral_level_tensors
from .reference import GatedDeltaNetReference, fla_mlp_width

__all__ = ["GatedDeltaNetConversion", "LogLinearGatedDeltaNetRelevel", "gdn_shapes", "load_reference"]

# fla GatedDeltaNetConfig's defaults, for config.json files written by older fla releases.
FLA_DEFAULTS = {
    "hidden_size": 2048, "expand_v": 2.0, "use_gate": True, "use_short_conv": True, "allow_neg_eigval": False,
    "conv_size": 4, "head_dim": 256, "num_heads": 6, "num_v_heads": None, "max_position_embeddings": 2048,
    "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish", "num_hidden_layers": 21,
    "norm_eps": 1e-6, "use_cache": True, "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "initializer_range": 0.02, "vocab_size": 32000,
}


def fla_config(config: dict) -> dict:
    """fla's GatedDeltaNetConfig fields of ``config`` with fla's defaults filled in, checked."""
    c = {k: config.get(k, default) for k, default in FLA_DEFAULTS.items()}
    if config.get("attn"):
        raise ValueError("this checkpoint has hybrid softmax-attention layers (`attn`), which do not convert")
    if not c["use_short_conv"]:
        raise ValueError("use_short_conv=False checkpoints do not convert (the log-linear model always uses short convolutions)")
    c["num_v_heads"] = c["num_v_heads"] or c["num_heads"]
    c["intermediate_size"] = fla_mlp_width(c["hidden_size"], c["hidden_ratio"], c["intermediate_size"])
    return c


def gdn_shapes(c: dict, names: list[str], level_rows: int = 0) -> dict[str, tuple[int, ...]]:
    """Source tensor shapes of an fla Gated DeltaNet LM; ``level_rows`` > 0 adds the authors'
    ``l_proj`` [num_v_heads * level_rows, hidden] and ``L`` [num_v_heads, level_rows]."""
    hidden, heads_v, width = c["hidden_size"], c["num_v_heads"], c["intermediate_size"]
    key_dim = c["num_heads"] * c["head_dim"]
    head_v = int(c["head_dim"] * c["expand_v"])
    value_dim = heads_v * head_v
    shapes = {"model.embeddings.weight": (c["vocab_size"], hidden), "model.norm.weight": (hidden,)}
    if not c["tie_word_embeddings"] or "lm_head.weight" in names:
        shapes["lm_head.weight"] = (c["vocab_size"], hidden)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes.update({
            f"{p}.attn_norm.weight": (hidden,), f"{p}.mlp_norm.weight": (hidden,),
            f"{p}.attn.q_proj.weight": (key_dim, hidden), f"{p}.attn.k_proj.weight": (key_dim, hidden),
            f"{p}.attn.v_proj.weight": (value_dim, hidden),
            f"{p}.attn.a_proj.weight": (heads_v, hidden), f"{p}.attn.b_proj.weight": (heads_v, hidden),
            f"{p}.attn.A_log": (heads_v,), f"{p}.attn.dt_bias": (heads_v,),
            f"{p}.attn.q_conv1d.weight": (key_dim, 1, c["conv_size"]),
            f"{p}.attn.k_conv1d.weight": (key_dim, 1, c["conv_size"]),
            f"{p}.attn.v_conv1d.weight": (value_dim, 1, c["conv_size"]),
            f"{p}.attn.o_norm.weight": (head_v,), f"{p}.attn.o_proj.weight": (hidden, value_dim),
            f"{p}.mlp.gate_proj.weight": (width, hidden), f"{p}.mlp.up_proj.weight": (width, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, width),
        })
        if c["use_gate"]:
            shapes[f"{p}.attn.g_proj.weight"] = (value_dim, hidden)
        if level_rows:
            shapes[f"{p}.attn.l_proj.weight"] = (heads_v * level_rows, hidden)
            shapes[f"{p}.attn.L"] = (heads_v, level_rows)
    return shapes


def load_reference(model: torch.nn.Module, reader, tied: bool, rename: dict[str, str] | None = None):
    """Fill a reference model from the checkpoint (float32), checking names and shapes strictly."""
    rename = rename or {}
    state = {rename.get(name, name): reader.get(name).float() for name in reader.names()}
    if tied:
        state.pop("lm_head.weight", None)
    model.load_state_dict(state, strict=True)
    return model.eval()


class GatedDeltaNetConversion(Conversion):
    """fla Gated DeltaNet -> log-linear Gated DeltaNet: copy everything, add neutral level weights."""

    format = "gated_deltanet"
    family = "gated_deltanet"
    reference = "plain-torch fla GatedDeltaNet reference (hf_loglinear.conversion.reference)"

    def __init__(self, folder, config, reader, num_levels):
        super().__init__(folder, config, reader, num_levels)
        self.c = fla_config(config)
        self.changes = [
            f"every layer gains a level projection (level_proj, {self.c['num_v_heads']} heads x {num_levels} levels, "
            "initialised to zero) and level tables (scale 1, bias ln(e-1)), so lambda = 1 and the model starts "
            "as exactly the source Gated DeltaNet (query scale head_dim^-1/2 kept outside lambda)",
            "all source tensors are copied unchanged",
        ]

    def target_fields(self) -> dict:
        return {k: self.c[k] for k in FLA_DEFAULTS}

    def target_config(self):
        return LogLinearGatedDeltaNetConfig(**self.target_fields(), num_levels=self.num_levels, use_query_scale=True)

    def source_shapes(self):
        return gdn_shapes(self.c, self.reader.names())

    def convert_tensor(self, name, tensor):
        if name == "lm_head.weight" and self.c["tie_word_embeddings"]:
            return
        yield name, tensor

    def new_tensors(self):
        dtype = self.reader.dtype("model.layers.0.attn.q_proj.weight")
        for i in range(self.c["num_hidden_layers"]):
            yield from neutral_level_tensors(
                f"model.layers.{i}.attn", self.c["num_v_heads"], self.num_levels, self.c["hidden_size"], dtype
            )

    def source_logits(self):
        model = load_reference(GatedDeltaNetReference(self.c), self.reader, self.c["tie_word_embeddings"])
        return lambda input_ids: model(input_ids.cpu())


class LogLinearGatedDeltaNetRelevel(Relevel):
    format = "loglinear_gated_deltanet"
    family = "gated_deltanet"
    reference = "hf-loglinear LogLinearGatedDeltaNetForCausalLM (the source checkpoint)"
    config_class, mixer, heads_field = LogLinearGatedDeltaNetConfig, "attn", "num_v_heads"
