"""Log-linear Mamba-2 model: decode = full forward, generate, padding, parity with transformers'
Mamba-2, training, save/load, errors. Tiny float32 configs on CPU."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
from transformers import DynamicCache, Mamba2Config, Mamba2ForCausalLM
from transformers.models.mamba2 import modeling_mamba2

from hf_loglinear import HierarchicalCache, LogLinearMamba2Config, LogLinearMamba2ForCausalLM, LogLinearMamba2Model
from hf_loglinear.cache import GENERATE_CACHE_NAME

VOCAB = 64
# transformers 5.17 (the GPU image) names the cache `past_key_values` in generate() and `cache_params` in
# Mamba-2, and normalises over all of d_inner instead of per B/C group.
REFERENCE_CACHE = "cache" if "cache" in inspect.signature(Mamba2ForCausalLM.forward).parameters else "cache_params"
GROUPED_REFERENCE_NORM = "group_size" in inspect.signature(modeling_mamba2.MambaRMSNormGated).parameters


def tiny_config(**overrides):
    kw = dict(
        vocab_size=VOCAB, hidden_size=32, num_heads=8, head_dim=8, state_size=16, n_groups=2,
        num_hidden_layers=2, conv_kernel=4, num_levels=4, chunk_size=16, pad_token_id=0, bos_token_id=None,
        eos_token_id=None,
    )
    kw.update(overrides)
    return LogLinearMamba2Config(**kw)


def tiny_model(seed=0, **overrides):
    """A model whose level weights really differ per head, level and token."""
    torch.manual_seed(seed)
    model = LogLinearMamba2ForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.level_proj.weight.normal_(0, 0.3)
            layer.mixer.level_weights.scale.uniform_(0.5, 1.5)
            layer.mixer.level_weights.bias.normal_(0, 0.5)
    return model


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def tokens(*shape, seed=1):
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- decode = full forward
@pytest.mark.parametrize("num_levels", [4, 15])
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(num_levels):
    model = tiny_model(num_levels=num_levels)
    ids = tokens(2, 300)
    full = model(ids).logits

    # Prefill of one token, then decode steps through every position up to 300.
    out = model(ids[:, :1], use_cache=True)
    steps = [out.logits]
    for t in range(1, 300):
        steps.append(model(ids[:, t : t + 1], cache=out.cache).logits)
    assert rel_err(torch.cat(steps, 1), full) < 1e-4
    assert out.cache.get_seq_length() == 300
    assert out.cache.level_state(0).position.tolist() == [300, 300]

    # Prefill handover at lengths around powers of two (and past 2^(L-1) for L = 4).
    for n in (2, 7, 8, 9, 63, 64, 65, 127, 128, 129, 255, 256, 257, 299):
        out = model(ids[:, :n], use_cache=True)
        logits = [out.logits] + [model(ids[:, t : t + 1], cache=out.cache).logits for t in range(n, min(n + 2, 300))]
        got = torch.cat(logits, 1)
        assert rel_err(got, full[:, : got.shape[1]]) < 1e-4, n


@torch.no_grad()
def test_cached_forward_of_several_tokens():
    model = tiny_model()
    ids = tokens(3, 200)
    full = model(ids).logits
    out = model(ids[:, :10], use_cache=True)
    pieces = [out.logits]
    for a, b in ((10, 47), (47, 48), (48, 130), (130, 200)):
        pieces.append(model(ids[:, a:b], cache=out.cache).logits)
    assert rel_err(torch.cat(pieces, 1), full) < 1e-4


# --------------------------------------------------------------------------- generate
@torch.no_grad()
def test_greedy_and_sampling_with_and_without_cache():
    model = tiny_model()
    ids = tokens(2, 11)
    greedy = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert torch.equal(greedy, model.generate(ids, max_new_tokens=20, do_sample=False, use_cache=False))
    out = model.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True)
    cache = getattr(out, GENERATE_CACHE_NAME)
    assert isinstance(cache, HierarchicalCache) and cache.nbytes > 0

    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(5)
        sampled.append(model.generate(ids, max_new_tokens=12, do_sample=True, top_k=0, use_cache=use_cache))
    assert torch.equal(*sampled)


@torch.no_grad()
def test_beam_search_runs_and_is_deterministic():
    model = tiny_model()
    ids = tokens(2, 9)
    runs = [model.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False) for _ in range(2)]
    assert runs[0].shape == (2, 19) and torch.equal(*runs)
    assert torch.equal(runs[0], model.generate(ids, max_new_tokens=10, num_beams=3, do_sample=False, use_cache=False))


@torch.no_grad()
def test_generate_continues_from_returned_cache():
    model = tiny_model()
    ids = tokens(1, 13)
    whole = model.generate(ids, max_new_tokens=16, do_sample=False)
    first = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    cache = getattr(first, GENERATE_CACHE_NAME)
    assert cache.get_seq_length() == 13 + 6 - 1  # the last generated token has not been fed yet
    resumed = model.generate(first.sequences, max_new_tokens=10, do_sample=False, **{GENERATE_CACHE_NAME: cache})
    assert torch.equal(resumed, whole)
    assert cache.get_seq_length() == 13 + 16 - 1  # the prompt was not fed again


@torch.no_grad()
def test_left_padded_batch_equals_rows_alone(pad_rows):
    model = tiny_model()
    prompts = [tokens(n, seed=n) for n in (1, 7, 64, 65, 130)]
    batch, mask = pad_rows(prompts)
    width = batch.shape[1]
    generated = model.generate(batch, attention_mask=mask, max_new_tokens=8, do_sample=False)
    prefill = model(batch, attention_mask=mask).logits
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=8, do_sample=False)
        assert torch.equal(generated[i, width:], alone[0, len(p) :]), len(p)
        assert rel_err(prefill[i, width - len(p) :], model(p[None]).logits[0]) < 1e-4


@torch.no_grad()
def test_packed_documents_equal_separate_runs():
    model = tiny_model()
    docs = [tokens(n, seed=n) for n in (5, 70, 1, 33)]
    cu = torch.tensor([0, 5, 75, 76, 109])
    out = model(torch.cat(docs)[None], cu_seqlens=cu, use_cache=True)
    for i, d in enumerate(docs):
        assert rel_err(out.logits[0, cu[i] : cu[i + 1]], model(d[None]).logits[0]) < 1e-4
    # the cache holds one row per document and continues each of them
    nxt = tokens(4, 1, seed=9)
    step = model(nxt, cache=out.cache).logits
    for i, d in enumerate(docs):
        assert rel_err(step[i], model(torch.cat([d, nxt[i]])[None]).logits[0, -1:]) < 1e-4


# --------------------------------------------------------------------------- parity with transformers
def _torch_path(monkeypatch):
    """Pin transformers' Mamba-2 to its torch functions even where mamba_ssm / causal_conv1d exist."""
    for name in ("causal_conv1d_fn", "causal_conv1d_update", "mamba2_selective_state_update", "mamba2_chunk_scan"):
        fn = getattr(modeling_mamba2, name)
        while hasattr(fn, "__wrapped__"):
            fn = fn.__wrapped__
        monkeypatch.setattr(modeling_mamba2, name, fn)


@pytest.mark.parametrize("use_bias,residual_in_fp32", [(True, True), (False, False)])
@torch.no_grad()
def test_matches_transformers_mamba2(monkeypatch, use_bias, residual_in_fp32):
    _torch_path(monkeypatch)
    kw = dict(
        vocab_size=VOCAB, hidden_size=32, num_heads=8, head_dim=8, state_size=16, num_hidden_layers=2, conv_kernel=4,
        n_groups=2 if GROUPED_REFERENCE_NORM else 1, chunk_size=16, use_bias=use_bias,
        residual_in_fp32=residual_in_fp32, pad_token_id=0,
    )
    torch.manual_seed(0)
    reference = Mamba2ForCausalLM(Mamba2Config(**kw)).eval()
    for name, p in reference.named_parameters():  # move norms, D and biases off their trivial init
        if "norm" in name or name.endswith((".D", "bias")):
            p.add_(0.1 * torch.randn_like(p))
    model = LogLinearMamba2ForCausalLM(LogLinearMamba2Config(**kw, num_levels=6)).eval()
    missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected and all("level_" in k for k in missing)

    ids = tokens(2, 150)
    expected = reference(ids).logits
    assert (model(ids).logits - expected).abs().max().item() < 1e-5
    # and decoding (transformers' recurrent step vs our level-state step)
    ref_out, out = reference(ids[:, :40], use_cache=True), model(ids[:, :40], use_cache=True)
    ref_cache = getattr(ref_out, REFERENCE_CACHE)
    for t in range(40, 60):
        a = reference(ids[:, t : t + 1], use_cache=True, **{REFERENCE_CACHE: ref_cache}).logits
        b = model(ids[:, t : t + 1], cache=out.cache).logits
        assert (a - b).abs().max().item() < 1e-5


# --------------------------------------------------------------------------- training
def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_padded_training_step_equals_unpadded_rows(pad_rows):
    model = tiny_model(use_mlp=True, intermediate_size=48).train()
    rows = [tokens(n, seed=n) for n in (9, 40, 3)]
    # left padding, right padding, pads on both sides
    batch, mask = pad_rows(rows, width=44, starts=(44 - 9, 0, 20))
    loss = model(batch, attention_mask=mask, labels=batch).loss
    loss.backward()
    padded = _grads(model)
    model.zero_grad()

    targets = sum(len(r) - 1 for r in rows)
    total = sum(model(r[None], labels=r[None]).loss * (len(r) - 1) for r in rows) / targets
    total.backward()
    assert abs(loss.item() - total.item()) < 1e-6
    for name, grad in _grads(model).items():
        assert rel_err(padded[name], grad) < 1e-5, name


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model().train()
    ids = tokens(2, 70)
    model(ids, labels=ids).loss.backward()
    plain = _grads(model)
    model.zero_grad()
    # transformers 5.24 renamed it; the GPU image's 5.17 only has the old name
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert model.backbone.layers[0].gradient_checkpointing
    out = model(ids, labels=ids, use_cache=True)
    out.loss.backward()
    assert out.cache is None
    for name, grad in _grads(model).items():
        assert rel_err(grad, plain[name]) < 1e-6, name


def test_level_parameters_train():
    model = tiny_model().train()
    ids = tokens(1, 40)
    model(ids, labels=ids).loss.backward()
    mixer = model.backbone.layers[0].mixer
    for p in (mixer.level_proj.weight, mixer.level_weights.scale, mixer.level_weights.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


@torch.no_grad()
def test_lora_on_every_projection_is_honoured():
    """Projections are called as modules, so LoRA on any of them changes the output."""
    from peft import LoraConfig, get_peft_model

    model = tiny_model()
    ids = tokens(2, 20)
    base = model(ids).logits
    targets = ["in_proj", "out_proj", "level_proj"]
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets, modules_to_save=["level_weights"]))
    assert any("level_weights.modules_to_save" in n for n, p in peft_model.named_parameters() if p.requires_grad)
    for target in targets:
        lora_b = [m.lora_B["default"].weight for n, m in peft_model.named_modules() if n.endswith(target) and hasattr(m, "lora_B")]
        for w in lora_b:
            w.normal_(0, 0.1)
        assert (peft_model(ids).logits - base).abs().max() > 1e-4, target
        for w in lora_b:
            w.zero_()
    assert torch.equal(peft_model(ids).logits, base)


# --------------------------------------------------------------------------- init, save / load
def test_fresh_model_is_plain_mamba2_and_logits_to_keep():
    model = LogLinearMamba2ForCausalLM(tiny_config(level_bias_init=None)).eval()
    mixer = model.backbone.layers[1].mixer
    assert torch.count_nonzero(mixer.level_proj.weight) == 0
    assert torch.equal(mixer.level_weights.scale, torch.ones(8, 4))
    assert torch.allclose(mixer.level_weights.bias, torch.full((8, 4), math.log(math.e - 1)))
    lam = mixer.level_weights(mixer.level_proj(torch.randn(3, 32)))
    assert lam.shape == (3, 8, 4) and (lam - 1).abs().max() < 1e-6
    assert LogLinearMamba2ForCausalLM(tiny_config(level_bias_init=0.0)).backbone.layers[0].mixer.level_weights.bias.abs().max() == 0
    ids = tokens(2, 12)
    with torch.no_grad():
        last = model(ids, logits_to_keep=1).logits
        assert last.shape == (2, 1, VOCAB) and torch.allclose(last, model(ids).logits[:, -1:], atol=1e-6)


def test_save_load_round_trip_is_bit_exact(tmp_path, round_trip):
    round_trip(tiny_model(use_mlp=True, intermediate_size=48, tie_word_embeddings=True), tmp_path, tokens(2, 30))
    assert isinstance(LogLinearMamba2Model.from_pretrained(tmp_path), LogLinearMamba2Model)


def test_missing_level_weights_are_initialised_on_load(tmp_path, load_without_level_weights):
    """A checkpoint without level parameters (plain Mamba-2 weights) loads as plain Mamba-2."""
    model = tiny_model()
    loaded = load_without_level_weights(model, tmp_path)
    assert torch.equal(loaded.backbone.layers[0].mixer.A_log, model.backbone.layers[0].mixer.A_log)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(num_levels=0), "num_levels"),
        (dict(num_heads=6), "hidden_size \\* expand"),
        (dict(n_groups=3), "n_groups"),
        (dict(hidden_act="nope"), "hidden_act"),
        (dict(mlp_hidden_act="nope"), "mlp_hidden_act"),
        (dict(time_step_limit=(0.5, 0.1)), "time_step_limit"),
        (dict(conv_kernel=0), "conv_kernel"),
    ],
)
def test_bad_config_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@torch.no_grad()
def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    ids = tokens(2, 10)
    cases = [
        (dict(), "exactly one of input_ids or inputs_embeds"),
        (dict(input_ids=ids, inputs_embeds=torch.zeros(2, 10, 32)), "exactly one"),
        (dict(input_ids=ids[0]), "input_ids must be"),
        (dict(input_ids=ids, attention_mask=torch.ones(2, 9)), "attention_mask must be"),
        (dict(input_ids=ids, cu_seqlens=torch.tensor([0, 10])), "batch size 1"),
        (dict(input_ids=ids[:1], cu_seqlens=torch.tensor([0, 4, 9])), "cu_seqlens must rise"),
        (dict(input_ids=ids[:1], cu_seqlens=torch.tensor([0, 10]), attention_mask=torch.ones(1, 10)), "not both"),
        (dict(input_ids=ids, labels=ids[:, :5]), "labels must have shape"),
        (dict(input_ids=ids, cache=DynamicCache()), "HierarchicalCache"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model(**kwargs)

    cache = model(ids, use_cache=True).cache
    with pytest.raises(ValueError, match="holds 2 sequences but the input has 3"):
        model(tokens(3, 1), cache=cache)

    class OtherConfig:
        num_hidden_layers, model_type = 2, "loglinear_gated_deltanet"

    with pytest.raises(ValueError, match="built for model_type 'loglinear_gated_deltanet'"):
        model(ids, cache=HierarchicalCache(OtherConfig()))
    deeper = tiny_model(num_hidden_layers=3)
    with pytest.raises(ValueError, match="the cache has 2 layers, the model 3"):
        deeper(ids, cache=cache)
    wider = tiny_model(num_levels=5)
    with pytest.raises(ValueError, match="levels has shape"):
        wider(ids[:, :1], cache=cache)
