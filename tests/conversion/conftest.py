"""Source checkpoints in their real on-disk formats, tiny, with every parameter randomised (norm
weights, D, dt_bias, level tables too) so that a wrongly mapped tensor changes the logits.

- transformers Mamba-2: ``Mamba2ForCausalLM(...).save_pretrained`` (sharded via max_shard_size).
- state-spaces / mamba_ssm: what ``MambaLMHeadModel.save_pretrained`` writes: ``torch.save`` of the
  state dict (``backbone.embedding``, embedding padded to pad_vocab_size_multiple) to
  ``pytorch_model.bin`` and ``json.dump`` of its MambaConfig fields to ``config.json``.
- fla Gated DeltaNet and the authors' layouts: fla and the authors' code need CUDA, so their
  checkpoints are written as their ``save_pretrained`` does (config.json from their config class
  fields + safetensors) from the parameter tables in ``FLA_GDN_LAYOUT`` / ``HATTENTION_LAYOUT``,
  which restate the published module definitions (checked in test_layouts.py).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import Mamba2Config, Mamba2ForCausalLM

VOCAB = 97


# --------------------------------------------------------------------------- helpers
def randomise(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random values at sensible scales for every tensor of a state dict (by role, from its name)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        shape = t.shape
        if name.endswith(("A_log",)):
            value = torch.rand(shape, generator=gen) * 2 - 1  # decay rates exp(A_log) in (e^-1, e)
        elif name.endswith(("dt_bias",)):
            value = torch.rand(shape, generator=gen) * 2 - 3  # dt = softplus(dt_raw + dt_bias) around 0.05-0.3
        elif name.endswith(".L") or name.endswith("level_weights.scale"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("level_weights.bias"):
            value = 0.3 * torch.randn(shape, generator=gen)
        elif name.endswith(("norm.weight", "norm_f.weight", ".D")) or "_norm." in name:
            value = 1 + 0.3 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # biases
            value = 0.1 * torch.randn(shape, generator=gen)
        elif "conv1d" in name:
            value = 0.4 * torch.randn(shape, generator=gen)
        else:  # projections and embeddings, small enough that activations stay O(1) through the layers
            value = 0.5 * torch.randn(shape, generator=gen) / math.sqrt(shape[-1])
        out[name] = value.to(t.dtype)
    return out


def write_safetensors(folder: Path, state: dict[str, torch.Tensor], config: dict):
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


# --------------------------------------------------------------------------- transformers Mamba-2
def mamba2_config(n_groups=1, tied=False, vocab=VOCAB, **overrides) -> Mamba2Config:
    fields = dict(vocab_size=vocab, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=n_groups,
                  num_hidden_layers=2, expand=2, conv_kernel=4, chunk_size=16, tie_word_embeddings=tied,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Mamba2Config(**{**fields, **overrides})


def mamba2_model(seed=0, **config) -> Mamba2ForCausalLM:
    model = Mamba2ForCausalLM(mamba2_config(**config))
    state = randomise(model.state_dict(), seed)
    if model.config.tie_word_embeddings:
        state["lm_head.weight"] = state["backbone.embeddings.weight"]
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture
def transformers_mamba2(tmp_path):
    """make(n_groups=1, tied=False, dtype=torch.float32, shard=None) -> folder saved by save_pretrained."""

    def make(n_groups=1, tied=False, dtype=torch.float32, shard=None, seed=0, name="mamba2"):
        model = mamba2_model(seed, n_groups=n_groups, tied=tied).to(dtype)
        folder = tmp_path / name
        model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
        return folder

    return make


# --------------------------------------------------------------------------- state-spaces
@pytest.fixture
def mamba_ssm_checkpoint(tmp_path):
    """make(tied=True, n_groups=1) -> folder in the state-spaces layout (pytorch_model.bin)."""

    def make(tied=True, n_groups=1, seed=0):
        padded = 8 * math.ceil(VOCAB / 8)  # pad_vocab_size_multiple = 8
        model = mamba2_model(seed, n_groups=n_groups, tied=tied, vocab=padded)
        state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in model.state_dict().items()}
        folder = tmp_path / "mamba_ssm"
        folder.mkdir()
        torch.save(state, folder / "pytorch_model.bin")
        config = {
            "d_model": 32, "d_intermediate": 0, "n_layer": 2, "vocab_size": VOCAB,
            "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "headdim": 16, "ngroups": n_groups, "expand": 2,
                        "d_conv": 4, "chunk_size": 16},
            "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
            "fused_add_norm": True, "pad_vocab_size_multiple": 8, "tie_embeddings": tied,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        return folder, model

    return make


# --------------------------------------------------------------------------- fla Gated DeltaNet
GDN_CONFIG = dict(
    model_type="gated_deltanet", architectures=["GatedDeltaNetForCausalLM"], attn_mode="chunk", hidden_size=32,
    expand_v=2.0, use_gate=True, use_short_conv=True, allow_neg_eigval=False, conv_size=4, head_dim=8,
    num_heads=2, num_v_heads=None, max_position_embeddings=2048, hidden_ratio=4, intermediate_size=None,
    hidden_act="swish", num_hidden_layers=2, norm_eps=1e-6, attn=None, use_cache=True, pad_token_id=None,
    bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, initializer_range=0.02, fuse_norm=True,
    fuse_swiglu=True, fuse_cross_entropy=True, fuse_linear_cross_entropy=False, use_l2warp=False,
    vocab_size=VOCAB, transformers_version="4.53.0",
)


def fla_gdn_layout(c: dict, level_rows: int = 0) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of fla's GatedDeltaNetForCausalLM (fla/layers/gated_deltanet.py,
    fla/models/gated_deltanet/modeling_gated_deltanet.py), plus the authors' HGatedDeltaNet
    ``l_proj`` / ``L`` (hattention/modeling_h_gated_deltanet.py) when ``level_rows`` > 0."""
    d, hk, dk = c["hidden_size"], c["num_heads"], c["head_dim"]
    hv = c["num_v_heads"] or hk
    dv = int(dk * c["expand_v"])
    mlp = c["intermediate_size"] or 256 * math.ceil(int(d * c["hidden_ratio"] * 2 / 3) / 256)
    layout = {"model.embeddings.weight": (c["vocab_size"], d)}
    for i in range(c["num_hidden_layers"]):
        a = f"model.layers.{i}.attn."
        layout.update({
            f"model.layers.{i}.attn_norm.weight": (d,),
            a + "q_proj.weight": (hk * dk, d), a + "k_proj.weight": (hk * dk, d), a + "v_proj.weight": (hv * dv, d),
            a + "a_proj.weight": (hv, d), a + "b_proj.weight": (hv, d), a + "A_log": (hv,), a + "dt_bias": (hv,),
            a + "q_conv1d.weight": (hk * dk, 1, c["conv_size"]), a + "k_conv1d.weight": (hk * dk, 1, c["conv_size"]),
            a + "v_conv1d.weight": (hv * dv, 1, c["conv_size"]),
            a + "g_proj.weight": (hv * dv, d), a + "o_norm.weight": (dv,), a + "o_proj.weight": (d, hv * dv),
            f"model.layers.{i}.mlp_norm.weight": (d,),
            f"model.layers.{i}.mlp.gate_proj.weight": (mlp, d), f"model.layers.{i}.mlp.up_proj.weight": (mlp, d),
            f"model.layers.{i}.mlp.down_proj.weight": (d, mlp),
        })
        if level_rows:
            layout[a + "l_proj.weight"] = (hv * level_rows, d)
            layout[a + "L"] = (hv, level_rows)
    layout["model.norm.weight"] = (d,)
    if not c["tie_word_embeddings"]:
        layout["lm_head.weight"] = (c["vocab_size"], d)
    return layout


@pytest.fixture
def gdn_checkpoint(tmp_path):
    """make(authors=False, tied=False, num_v_heads=None, dtype) -> fla gated_deltanet or the authors'
    h_gated_deltanet folder (15 levels)."""

    def make(authors=False, tied=False, num_v_heads=None, dtype=torch.float32, seed=0, levels=15):
        config = {**GDN_CONFIG, "tie_word_embeddings": tied, "num_v_heads": num_v_heads}
        if authors:
            config.update(model_type="h_gated_deltanet", architectures=["HGatedDeltaNetForCausalLM"],
                          matrix_router=False)
        layout = fla_gdn_layout(config, level_rows=levels if authors else 0)
        state = randomise({k: torch.empty(s, dtype=dtype) for k, s in layout.items()}, seed)
        return write_safetensors(tmp_path / config["model_type"], state, config)

    return make


# --------------------------------------------------------------------------- authors' hattention
def hattention_layout(c: dict, levels: int, mlp_width: int) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of the authors' HAttentionForCausalLM (hattention/modeling_hattention.py):
    in_proj rows z | xBC | dt | dl (H * levels); mixer.L [H, levels]; fla GatedMLP per block."""
    d, h, g, n = c["hidden_size"], c["num_heads"], c["n_groups"], c["state_size"]
    inner = c["expand"] * d
    conv_dim = inner + 2 * g * n
    layout = {"backbone.embeddings.weight": (c["vocab_size"], d)}
    for i in range(c["num_hidden_layers"]):
        p = f"backbone.layers.{i}."
        layout.update({
            p + "mixer_norm.weight": (d,), p + "mlp_norm.weight": (d,),
            p + "mixer.conv1d.weight": (conv_dim, 1, c["conv_kernel"]), p + "mixer.conv1d.bias": (conv_dim,),
            p + "mixer.in_proj.weight": (inner + conv_dim + h * (levels + 1), d),
            p + "mixer.dt_bias": (h,), p + "mixer.A_log": (h,), p + "mixer.L": (h, levels), p + "mixer.D": (h,),
            p + "mixer.norm.weight": (inner,), p + "mixer.out_proj.weight": (d, inner),
            p + "mlp.gate_proj.weight": (mlp_width, d), p + "mlp.up_proj.weight": (mlp_width, d),
            p + "mlp.down_proj.weight": (d, mlp_width),
        })
    layout["backbone.norm_f.weight"] = (d,)
    layout["lm_head.weight"] = (c["vocab_size"], d)
    return layout


@pytest.fixture
def hattention_checkpoint(tmp_path):
    def make(dtype=torch.float32, seed=0, levels=15):
        config = {**mamba2_config(num_heads=4, n_groups=1).to_dict(), "model_type": "hattention",
                  "architectures": ["HAttentionForCausalLM"], "fuse_norm": True, "residual_in_fp32": False}
        config.pop("transformers_version", None)
        layout = hattention_layout(config, levels, mlp_width=256)
        state = randomise({k: torch.empty(s, dtype=dtype) for k, s in layout.items()}, seed)
        return write_safetensors(tmp_path / "hattention", state, config)

    return make


@pytest.fixture
def layouts():
    """The published layouts and configs above, for tests that check against them."""
    return SimpleNamespace(
        GDN_CONFIG=GDN_CONFIG, fla_gdn_layout=fla_gdn_layout, hattention_layout=hattention_layout,
        mamba2_config=mamba2_config, mamba2_model=mamba2_model, randomise=randomise, VOCAB=VOCAB,
    )
