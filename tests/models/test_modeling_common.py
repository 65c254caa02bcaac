"""The plumbing both models share (modeling_common): the cache under its older names, input
checks, tuple outputs. Each model's own behaviour is tested in its test file."""
from __future__ import annotations

import pytest
import torch

from hf_loglinear import (
    HierarchicalCache,
    LogLinearGatedDeltaNetConfig,
    LogLinearGatedDeltaNetForCausalLM,
    LogLinearMamba2Config,
    LogLinearMamba2ForCausalLM,
)

VOCAB = 32
CONFIGS = {
    "mamba2": lambda: LogLinearMamba2ForCausalLM(LogLinearMamba2Config(
        vocab_size=VOCAB, hidden_size=16, num_heads=4, head_dim=8, state_size=8, n_groups=2, num_hidden_layers=2,
        num_levels=3, pad_token_id=0,
    )),
    "gated_deltanet": lambda: LogLinearGatedDeltaNetForCausalLM(LogLinearGatedDeltaNetConfig(
        vocab_size=VOCAB, hidden_size=16, head_dim=8, num_heads=2, num_hidden_layers=2, num_levels=3, pad_token_id=0,
    )),
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    torch.manual_seed(0)
    model = CONFIGS[request.param]().eval()
    with torch.no_grad():  # level weights that depend on the token
        for name, p in model.named_parameters():
            if name.endswith("level_proj.weight"):
                p.normal_(0, 0.3)
    return model


def ids(batch=2, length=9):
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["cache", "past_key_values", "cache_params"])
@torch.no_grad()
def test_cache_under_every_name_continues_the_rows(model, name):
    """generate() of transformers 5.17 passes the cache as ``past_key_values``; Mamba-2 code as ``cache_params``."""
    tokens = ids()
    full = model(tokens).logits
    cache = model(tokens[:, :6], use_cache=True).cache
    continued = model(tokens[:, 6:], **{name: cache}).logits
    assert ((continued - full[:, 6:]).abs().max() / full.abs().max()).item() < 1e-5
    assert cache.get_seq_length() == 9


@torch.no_grad()
def test_decode_steps_never_read_the_mask(model, monkeypatch):
    """A left-padded prefill reads its mask; the one-token steps after it must not (reading it
    costs a host sync per step), and still equal the rows run alone."""
    import hf_loglinear.modeling_common as common

    tokens = ids(2, 12)
    mask = torch.ones_like(tokens)
    mask[0, :5] = 0  # row 0 is left-padded: its real tokens start at column 5
    cache = model(tokens[:, :8], attention_mask=mask[:, :8], use_cache=True).cache
    seen = []
    plan = common.plan_sequences
    monkeypatch.setattr(common, "plan_sequences", lambda b, n, m, *a: seen.append(m) or plan(b, n, m, *a))
    steps = [model(tokens[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits for t in range(8, 12)]
    assert seen == [None] * 4
    alone = model(tokens[:1, 5:]).logits
    assert ((torch.cat(steps, 1)[0] - alone[0, 3:]).abs().max() / alone.abs().max()).item() < 1e-5


@torch.no_grad()
def test_two_different_caches_are_refused(model):
    first, second = (model(ids(), use_cache=True).cache for _ in range(2))
    with pytest.raises(ValueError, match="two different caches"):
        model(ids(), cache=first, past_key_values=second)


@torch.no_grad()
def test_inputs_embeds_must_have_the_hidden_width(model):
    embeds = model.get_input_embeddings()(ids())
    assert torch.equal(model(inputs_embeds=embeds).logits, model(ids()).logits)
    with pytest.raises(ValueError, match=r"inputs_embeds must be \[batch, seq_len, 16\]"):
        model(inputs_embeds=embeds[..., :15])
    with pytest.raises(ValueError, match="inputs_embeds must be"):
        model(inputs_embeds=embeds[0])


@torch.no_grad()
def test_tuple_outputs_hold_the_fields_in_order(model):
    tokens = ids()
    out = model(tokens, labels=tokens, use_cache=True, output_hidden_states=True)
    loss, logits, cache, hidden = model(
        tokens, labels=tokens, use_cache=True, output_hidden_states=True, return_dict=False
    )
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits) and isinstance(cache, HierarchicalCache)
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert all(torch.equal(a, b) for a, b in zip(hidden, out.hidden_states))
    backbone = model.base_model(tokens, output_hidden_states=True)
    assert torch.equal(backbone.hidden_states[-1], backbone.last_hidden_state)  # the last entry is normed
    assert len(model(tokens, use_cache=False, return_dict=False)) == 1


def test_level_tables_stay_float32_in_a_bfloat16_model(tmp_path):
    """softplus(bias) with the neutral bias is 1 only in float32 (bf16 rounds it to 1.001)."""
    from hf_loglinear import LogLinearMamba2Config, LogLinearMamba2ForCausalLM

    config = LogLinearMamba2Config(vocab_size=64, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1,
                                   num_hidden_layers=1, num_levels=4)
    model = LogLinearMamba2ForCausalLM(config).to(torch.bfloat16)
    model.backbone.layers[0].mixer.level_weights.float().reset_parameters()  # as the converter writes them
    model.save_pretrained(tmp_path)
    loaded = LogLinearMamba2ForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    mixer = loaded.backbone.layers[0].mixer
    assert mixer.in_proj.weight.dtype == torch.bfloat16 and mixer.level_weights.bias.dtype == torch.float32
    lam = mixer.level_weights(torch.zeros(1, 16, dtype=torch.bfloat16))
    assert torch.equal(lam, torch.ones_like(lam))
