"""The layouts the converter expects are the published ones.

fla and the authors' code need CUDA and are not installed, so their layouts are restated in
conftest.py from their module definitions; here the converter's expectations, the references'
parameters and transformers' own Mamba2ForCausalLM are checked against them."""
from __future__ import annotations

import pytest
import torch
from transformers import Mamba2ForCausalLM

from hf_loglinear.conversion import FORMATS
from hf_loglinear.conversion.converter import CONVERSIONS
from hf_loglinear.conversion.gated_deltanet import fla_config, gdn_shapes
from hf_loglinear.conversion.mamba2 import backbone_shapes, mixer_shapes, normalized_mamba2_config
from hf_loglinear.conversion.reference import GatedDeltaNetReference, HAttentionReference


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_every_format_has_a_converter():
    assert CONVERSIONS.keys() == FORMATS.keys()


@pytest.mark.parametrize("overrides", [{}, {"num_v_heads": 4, "tie_word_embeddings": True}, {"intermediate_size": 96}])
@pytest.mark.parametrize("levels", [0, 15])
def test_fla_gated_deltanet_layout(layouts, overrides, levels):
    config = {**layouts.GDN_CONFIG, **overrides}
    published = layouts.fla_gdn_layout(config, level_rows=levels)
    c = fla_config(config)
    names = list(published)
    assert gdn_shapes(c, names, level_rows=levels) == published
    reference = _shapes(GatedDeltaNetReference(c, num_levels=levels or None))
    if config["tie_word_embeddings"]:
        reference.pop("lm_head.weight", None)
    assert reference == published


def test_transformers_mamba2_layout(layouts):
    for n_groups, tied in ((1, False), (2, True)):
        model = Mamba2ForCausalLM(layouts.mamba2_config(n_groups=n_groups, tied=tied))
        published = _shapes(model)
        c = normalized_mamba2_config(model.config.to_dict())
        names = list(published)
        expected = backbone_shapes(c, names, "backbone.embeddings.weight")
        for i in range(c["num_hidden_layers"]):
            expected.update(mixer_shapes(c, f"backbone.layers.{i}.mixer"))
        assert expected == published


def test_authors_hattention_layout(layouts):
    c = normalized_mamba2_config(layouts.mamba2_config().to_dict())
    published = layouts.hattention_layout(c, levels=15, mlp_width=256)
    assert _shapes(HAttentionReference(c, num_levels=15, intermediate_size=256)) == published
    # the dl rows sit after z | xBC | dt: in_proj has H * (L + 1) rows beyond z | xBC
    inner, conv_dim = 2 * 32, 2 * 32 + 2 * 8
    assert published["backbone.layers.0.mixer.in_proj.weight"] == (inner + conv_dim + 4 * 16, 32)


def test_reference_layout_rejects_a_wrong_checkpoint(layouts):
    c = fla_config(layouts.GDN_CONFIG)
    model = GatedDeltaNetReference(c)
    state = {k: torch.zeros(s) for k, s in layouts.fla_gdn_layout(layouts.GDN_CONFIG).items()}
    state["model.layers.0.attn.o_norm.weight"] = torch.zeros(7)
    with pytest.raises(RuntimeError, match="o_norm"):
        model.load_state_dict(state, strict=True)
