"""Mamba-2 sources: transformers' Mamba2ForCausalLM, state-spaces / mamba_ssm originals, and our
own log-linear Mamba-2 (to change ``num_levels``).

Every mixer tensor copies 1:1 (our parameter names are transformers'); each layer gains a zero
``level_proj`` and level tables with lambda = 1, so the converted model is the source function.
The source runs through transformers' ``Mamba2ForCausalLM`` on its torch path.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager

import torch
from transformers import Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2

from ..configuration_loglinear_mamba2 import LogLinearMamba2Config
from .plan import Conversion, Relevel, neutral_level_tensors

__all__ = ["Mamba2Conversion", "MambaSsmConversion", "LogLinearMamba2Relevel", "mixer_shapes", "torch_mamba2_path"]

# transformers' Mamba2Config fields our config shares (contract: same names, same meaning).
MAMBA2_FIELDS = (
    "num_heads", "head_dim", "vocab_size", "hidden_size", "state_size", "num_hidden_layers", "layer_norm_epsilon",
    "pad_token_id", "bos_token_id", "eos_token_id", "expand", "conv_kernel", "n_groups", "use_bias", "use_conv_bias",
    "hidden_act", "initializer_range", "residual_in_fp32", "time_step_rank", "time_step_min", "time_step_max",
    "time_step_floor", "time_step_limit", "rescale_prenorm_residual", "use_cache", "chunk_size", "tie_word_embeddings",
)
# Functions transformers may swap for mamba_ssm / causal_conv1d / hub kernels at import.
_KERNELIZED = ("causal_conv1d_fn", "causal_conv1d_update", "mamba2_split_conv1d_scan_combined",
               "mamba2_selective_state_update", "mamba2_chunk_scan")


@contextmanager
def torch_mamba2_path():
    """Run transformers' Mamba-2 on its plain torch functions even where mamba_ssm is installed."""
    saved = {name: getattr(modeling_mamba2, name) for name in _KERNELIZED}
    try:
        for name, fn in saved.items():
            setattr(modeling_mamba2, name, inspect.unwrap(fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(modeling_mamba2, name, fn)


def normalized_mamba2_config(config: dict) -> dict:
    """config.json of a Mamba-2 style model with transformers' defaults filled in."""
    fields = {k: v for k, v in config.items() if k != "model_type"}
    return Mamba2Config.from_dict(fields).to_dict()


def mixer_shapes(c: dict, prefix: str, extra_in_proj_rows: int = 0) -> dict[str, tuple[int, ...]]:
    """Source tensor shapes of one Mamba-2 mixer under ``prefix`` (transformers' layout)."""
    hidden, heads = c["hidden_size"], c["num_heads"]
    inner = int(c["expand"] * hidden)
    if inner != heads * c["head_dim"]:
        raise ValueError(
            f"config.json is inconsistent: expand * hidden_size = {inner} but num_heads * head_dim = "
            f"{heads} * {c['head_dim']} = {heads * c['head_dim']}"
        )
    conv_dim = inner + 2 * c["n_groups"] * c["state_size"]
    rows = inner + conv_dim + heads + extra_in_proj_rows
    shapes = {
        f"{prefix}.in_proj.weight": (rows, hidden),
        f"{prefix}.conv1d.weight": (conv_dim, 1, c["conv_kernel"]),
        f"{prefix}.dt_bias": (heads,),
        f"{prefix}.A_log": (heads,),
        f"{prefix}.D": (heads,),
        f"{prefix}.norm.weight": (inner,),
        f"{prefix}.out_proj.weight": (hidden, inner),
    }
    if c["use_bias"]:
        shapes[f"{prefix}.in_proj.bias"] = (rows,)
        shapes[f"{prefix}.out_proj.bias"] = (hidden,)
    if c["use_conv_bias"]:
        shapes[f"{prefix}.conv1d.bias"] = (conv_dim,)
    return shapes


def backbone_shapes(c: dict, names: list[str], embedding: str, block_norms=("norm",)) -> dict[str, tuple[int, ...]]:
    """Embedding, per-block norms, final norm and lm_head; lm_head is optional when tied."""
    hidden, vocab = c["hidden_size"], c["vocab_size"]
    shapes = {embedding: (vocab, hidden), "backbone.norm_f.weight": (hidden,)}
    for i in range(c["num_hidden_layers"]):
        shapes.update({f"backbone.layers.{i}.{norm}.weight": (hidden,) for norm in block_norms})
    if not c["tie_word_embeddings"] or "lm_head.weight" in names:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


class Mamba2Conversion(Conversion):
    """transformers Mamba-2 -> log-linear Mamba-2: copy everything, add neutral level weights."""

    format = "mamba2"
    family = "mamba2"
    reference = "transformers Mamba2ForCausalLM (torch path)"
    embedding = "backbone.embeddings.weight"

    def __init__(self, folder, config, reader, num_levels):
        super().__init__(folder, config, reader, num_levels)
        self.c = self.mamba2_fields()
        self.changes = [
            f"every layer gains a level projection (level_proj, {self.c['num_heads']} heads x {num_levels} levels, "
            "initialised to zero) and level tables (scale 1, bias ln(e-1)), so lambda = 1 and the model starts "
            "as exactly the source Mamba-2",
            "all source tensors are copied unchanged",
        ]

    def mamba2_fields(self) -> dict:
        return normalized_mamba2_config(self.config)

    def target_config(self):
        fields = {k: self.c[k] for k in MAMBA2_FIELDS}
        return LogLinearMamba2Config(**fields, num_levels=self.num_levels, use_mlp=False)

    def source_shapes(self):
        shapes = backbone_shapes(self.c, self.reader.names(), self.embedding)
        for i in range(self.c["num_hidden_layers"]):
            shapes.update(mixer_shapes(self.c, f"backbone.layers.{i}.mixer"))
        return shapes

    def convert_tensor(self, name, tensor):
        if name == "lm_head.weight" and self.c["tie_word_embeddings"]:
            return  # tied: our model re-ties it to the embeddings
        yield ("backbone.embeddings.weight" if name == self.embedding else name), tensor

    def new_tensors(self):
        dtype = self.reader.dtype("backbone.layers.0.mixer.in_proj.weight")
        for i in range(self.c["num_hidden_layers"]):
            yield from neutral_level_tensors(
                f"backbone.layers.{i}.mixer", self.c["num_heads"], self.num_levels, self.c["hidden_size"], dtype
            )

    def _source_model(self) -> Mamba2ForCausalLM:
        return Mamba2ForCausalLM.from_pretrained(self.folder, dtype=torch.float32)

    def source_logits(self):
        if self.c["n_groups"] > 1 and "group_size" not in inspect.signature(modeling_mamba2.MambaRMSNormGated).parameters:
            # Older transformers normalise over all of d_inner; mamba_ssm (and we) normalise per group.
            raise ValueError(
                "this transformers version's Mamba-2 ignores n_groups in its gated RMSNorm, so it cannot verify an "
                f"n_groups={self.c['n_groups']} conversion; upgrade transformers or pass --no-verify"
            )
        model = self._source_model().eval()

        @torch.no_grad()
        def logits(input_ids):
            with torch_mamba2_path():
                return model(input_ids.to(model.device)).logits.float()

        return logits


class MambaSsmConversion(Mamba2Conversion):
    """state-spaces / mamba_ssm Mamba-2 (d_model / n_layer / ssm_cfg config, pytorch_model.bin)."""

    format = "mamba_ssm"
    reference = "transformers Mamba2ForCausalLM (torch path) with the state-spaces weights"
    embedding = "backbone.embedding.weight"

    def mamba2_fields(self) -> dict:
        cfg, ssm = self.config, dict(self.config.get("ssm_cfg") or {})
        hidden, expand = cfg["d_model"], ssm.get("expand", 2)
        unsupported = {
            "d_intermediate > 0 (MLP blocks)": cfg.get("d_intermediate", 0),
            "attn_layer_idx (hybrid attention layers)": cfg.get("attn_layer_idx") or None,
            "ssm_cfg.D_has_hdim": ssm.get("D_has_hdim", False),
            "ssm_cfg.norm_before_gate": ssm.get("norm_before_gate", False),
            "rms_norm = false (LayerNorm)": not cfg.get("rms_norm", True),
            "ssm_cfg.rmsnorm = false": not ssm.get("rmsnorm", True),
            "ssm_cfg.d_ssm != expand * d_model": ssm.get("d_ssm") not in (None, expand * hidden),
        }
        found = [what for what, value in unsupported.items() if value]
        if found:
            raise ValueError(f"this state-spaces checkpoint uses {', '.join(found)}, which transformers' Mamba-2 lacks")
        head_dim = ssm.get("headdim", 64)
        # The embedding is padded to pad_vocab_size_multiple: its row count is the model's vocab.
        vocab = self.reader.shape(self.embedding)[0] if self.embedding in self.reader.locations else cfg["vocab_size"]
        return normalized_mamba2_config({
            "hidden_size": hidden,
            "num_hidden_layers": cfg["n_layer"],
            "vocab_size": vocab,
            "state_size": ssm.get("d_state", 128),
            "expand": expand,
            "head_dim": head_dim,
            "num_heads": expand * hidden // head_dim,
            "n_groups": ssm.get("ngroups", 1),
            "conv_kernel": ssm.get("d_conv", 4),
            "use_bias": ssm.get("bias", False),
            "use_conv_bias": ssm.get("conv_bias", True),
            "chunk_size": ssm.get("chunk_size", 256),
            "time_step_min": ssm.get("dt_min", 0.001),
            "time_step_max": ssm.get("dt_max", 0.1),
            "time_step_floor": ssm.get("dt_init_floor", 1e-4),
            "time_step_limit": tuple(ssm.get("dt_limit", (0.0, math.inf))),
            "layer_norm_epsilon": cfg.get("norm_epsilon", 1e-5),
            "residual_in_fp32": cfg.get("residual_in_fp32", True),
            "tie_word_embeddings": cfg.get("tie_embeddings", True),
            # The family's GPT-NeoX tokenizer uses <|endoftext|> (id 0) for all three.
            "bos_token_id": cfg.get("bos_token_id", 0),
            "eos_token_id": cfg.get("eos_token_id", 0),
            "pad_token_id": cfg.get("pad_token_id", 0),
        })

    @property
    def vocab_size(self) -> int:
        return min(self.config.get("vocab_size", self.c["vocab_size"]), self.c["vocab_size"])

    def _source_model(self) -> Mamba2ForCausalLM:
        model = Mamba2ForCausalLM(Mamba2Config(**{k: self.c[k] for k in MAMBA2_FIELDS})).float()
        state = {}
        for name in self.reader.names():
            key = "backbone.embeddings.weight" if name == self.embedding else name
            state[key] = self.reader.get(name).float()
        if self.c["tie_word_embeddings"]:  # both names are the same tied parameter
            state.setdefault("lm_head.weight", state["backbone.embeddings.weight"])
        model.load_state_dict(state, strict=True)
        return model


class LogLinearMamba2Relevel(Relevel):
    format = "loglinear_mamba2"
    family = "mamba2"
    reference = "hf-loglinear LogLinearMamba2ForCausalLM (the source checkpoint)"
    config_class, mixer, heads_field = LogLinearMamba2Config, "mixer", "num_heads"
