"""The authors' released log-linear checkpoints (SPEC §5-6), converted so that our model computes
what theirs did.

Their level weights are lambda = softplus(L * dl) with dl a bias-free projection; ours are
softplus(scale * level_proj(x) + bias). So level_proj = their dl rows, scale = their L and
bias = 0 (or L * the dl rows' bias when their in_proj has one). Their Gated DeltaNet has no
query scale (lambda absorbs it): ``use_query_scale=False``. Their Mamba-2 blocks carry a SwiGLU
MLP: ``use_mlp=True``. The sources run through ``reference.py`` (their code needs CUDA).
"""
from __future__ import annotations

import torch

from ..configuration_loglinear_gated_deltanet import LogLinearGatedDeltaNetConfig
from ..configuration_loglinear_mamba2 import LogLinearMamba2Config
from .gated_deltanet import FLA_DEFAULTS, fla_config, gdn_shapes, load_reference
from .mamba2 import MAMBA2_FIELDS, backbone_shapes, mixer_shapes, normalized_mamba2_config
from .plan import Conversion, relevel_tensor
from .reference import GatedDeltaNetReference, HAttentionReference

__all__ = ["HAttentionConversion", "HGatedDeltaNetConversion"]


def _levels_change(source_levels: int, num_levels: int) -> list[str]:
    if num_levels == source_levels:
        return []
    if num_levels > source_levels:
        return [f"levels {source_levels}..{num_levels - 1} are added as copies of the top level (exact)"]
    return [f"levels {num_levels}..{source_levels - 1} are dropped: exact for sequences of up to "
            f"{1 << (num_levels - 1)} tokens"]


class HAttentionConversion(Conversion):
    """model_type "hattention": Mamba-2 mixer with H * L extra dl rows at the end of in_proj and
    mixer.L [H, L]; blocks mixer_norm -> mixer -> mlp_norm -> SwiGLU mlp."""

    format = "hattention"
    family = "mamba2"
    reference = "plain-torch reference of the authors' HAttention model (hf_loglinear.conversion.reference)"

    def __init__(self, folder, config, reader, num_levels):
        super().__init__(folder, config, reader, num_levels)
        self.c = normalized_mamba2_config(config)
        if self.c["n_groups"] != 1:
            raise ValueError(
                f"hattention with n_groups={self.c['n_groups']} does not convert exactly: the authors' gated "
                "RMSNorm spans the whole inner width, ours one group"
            )
        heads = self.c["num_heads"]
        self.source_levels = reader.shape("backbone.layers.0.mixer.L")[1]
        self.width = reader.shape("backbone.layers.0.mlp.gate_proj.weight")[0]
        self.inner_rows = reader.shape("backbone.layers.0.mixer.in_proj.weight")[0] - heads * self.source_levels
        self.changes = [
            "the dl rows at the end of each in_proj become level_proj, mixer.L becomes level_weights.scale and "
            "level_weights.bias is 0: lambda = softplus(L * dl) exactly as the source computed it",
            "mixer_norm is renamed norm; the SwiGLU MLP blocks are kept (use_mlp)",
            *_levels_change(self.source_levels, num_levels),
        ]

    def target_config(self):
        fields = {k: self.c[k] for k in MAMBA2_FIELDS}
        fields["time_step_limit"] = (0.0, float("inf"))  # the authors' kernels never clamp dt
        return LogLinearMamba2Config(
            **fields, num_levels=self.num_levels, level_bias_init=0.0, use_mlp=True,
            intermediate_size=self.width, mlp_hidden_act="silu",
        )

    def source_shapes(self):
        names = self.reader.names()
        embedding = "backbone.embedding.weight" if "backbone.embedding.weight" in names else "backbone.embeddings.weight"
        shapes = backbone_shapes(self.c, names, embedding, block_norms=("mixer_norm", "mlp_norm"))
        hidden, heads = self.c["hidden_size"], self.c["num_heads"]
        for i in range(self.c["num_hidden_layers"]):
            p = f"backbone.layers.{i}"
            shapes.update(mixer_shapes(self.c, f"{p}.mixer", extra_in_proj_rows=heads * self.source_levels))
            shapes[f"{p}.mixer.L"] = (heads, self.source_levels)
            shapes.update({f"{p}.mlp.gate_proj.weight": (self.width, hidden), f"{p}.mlp.up_proj.weight": (self.width, hidden),
                           f"{p}.mlp.down_proj.weight": (hidden, self.width)})
        return shapes

    def _relevel(self, tensor):
        return relevel_tensor(tensor, self.c["num_heads"], self.source_levels, self.num_levels)

    def convert_tensor(self, name, tensor):
        prefix, _, leaf = name.rpartition(".mixer.")
        if name == "lm_head.weight" and self.c["tie_word_embeddings"]:
            return
        if name in ("backbone.embedding.weight", "backbone.embeddings.weight"):
            yield "backbone.embeddings.weight", tensor
        elif name.endswith(".mixer_norm.weight"):
            yield name.replace(".mixer_norm.", ".norm."), tensor
        elif leaf in ("in_proj.weight", "in_proj.bias"):
            yield name, tensor[: self.inner_rows]
            if leaf == "in_proj.weight":
                yield f"{prefix}.mixer.level_proj.weight", self._relevel(tensor[self.inner_rows :])
        elif leaf == "L":
            yield f"{prefix}.mixer.level_weights.scale", self._relevel(tensor.float())
            bias = torch.zeros_like(tensor, dtype=torch.float32)
            if self.c["use_bias"]:  # softplus(L * (W x + b)) = softplus(L * W x + L * b)
                dl_bias = self.reader.get(f"{prefix}.mixer.in_proj.bias")[self.inner_rows :].float()
                bias = tensor.float() * dl_bias.view_as(tensor)
            yield f"{prefix}.mixer.level_weights.bias", self._relevel(bias)
        else:
            yield name, tensor

    def source_logits(self):
        model = HAttentionReference(self.c, self.source_levels, self.width)
        rename = {"backbone.embedding.weight": "backbone.embeddings.weight"}  # the authors load either name
        model = load_reference(model, self.reader, self.c["tie_word_embeddings"], rename)
        return lambda input_ids: model(input_ids.cpu())


class HGatedDeltaNetConversion(Conversion):
    """model_type "h_gated_deltanet": fla Gated DeltaNet plus attn.l_proj [H * L, hidden] and attn.L [H, L]."""

    format = "h_gated_deltanet"
    family = "gated_deltanet"
    reference = "plain-torch reference of the authors' HGatedDeltaNet model (hf_loglinear.conversion.reference)"

    def __init__(self, folder, config, reader, num_levels):
        super().__init__(folder, config, reader, num_levels)
        self.c = fla_config(config)
        self.source_levels = reader.shape("model.layers.0.attn.L")[1]
        self.changes = [
            "attn.l_proj becomes level_proj, attn.L becomes level_weights.scale and level_weights.bias is 0: "
            "lambda = softplus(L * l_proj(x)) exactly as the source computed it",
            "no head_dim^-1/2 query scale (use_query_scale=False): as in the source, lambda absorbs it",
            *_levels_change(self.source_levels, num_levels),
        ]

    def target_config(self):
        fields = {k: self.c[k] for k in FLA_DEFAULTS}
        return LogLinearGatedDeltaNetConfig(
            **fields, num_levels=self.num_levels, level_bias_init=0.0, use_query_scale=False
        )

    def source_shapes(self):
        return gdn_shapes(self.c, self.reader.names(), level_rows=self.source_levels)

    def convert_tensor(self, name, tensor):
        heads = self.c["num_v_heads"]
        if name == "lm_head.weight" and self.c["tie_word_embeddings"]:
            return
        if name.endswith(".attn.l_proj.weight"):
            yield name.replace(".l_proj.", ".level_proj."), relevel_tensor(tensor, heads, self.source_levels, self.num_levels)
        elif name.endswith(".attn.L"):
            prefix = name[: -len(".L")]
            scale = relevel_tensor(tensor.float(), heads, self.source_levels, self.num_levels)
            yield f"{prefix}.level_weights.scale", scale
            yield f"{prefix}.level_weights.bias", torch.zeros_like(scale)
        else:
            yield name, tensor

    def source_logits(self):
        model = GatedDeltaNetReference(self.c, num_levels=self.source_levels)
        model = load_reference(model, self.reader, self.c["tie_word_embeddings"])
        return lambda input_ids: model(input_ids.cpu())
