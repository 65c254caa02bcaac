"""Log-linear Gated DeltaNet model: cache exactness, generation, padding, parity with plain
Gated DeltaNet (transformers' own torch functions), save/load, training with padding, errors.

Tiny configs on CPU, float32 unless stated.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM
from transformers.models.qwen3_next import modeling_qwen3_next as qwen3_next

from hf_loglinear import (
    HierarchicalCache,
    LogLinearGatedDeltaNetConfig,
    LogLinearGatedDeltaNetForCausalLM,
    LogLinearGatedDeltaNetModel,
    LogLinearMamba2Config,
)

# transformers swaps these for fla / hub kernels when importable: unwrap to the pure torch functions.
TORCH_CHUNK_GATED_DELTA_RULE = inspect.unwrap(qwen3_next.torch_chunk_gated_delta_rule)
TORCH_RECURRENT_GATED_DELTA_RULE = inspect.unwrap(qwen3_next.torch_recurrent_gated_delta_rule)

VOCAB = 64


def make_config(**overrides):
    kwargs = dict(
        hidden_size=32, head_dim=8, expand_v=1.5, num_heads=2, num_v_heads=4, conv_size=4, num_hidden_layers=2,
        intermediate_size=48, vocab_size=VOCAB, num_levels=4, initializer_range=0.2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    kwargs.update(overrides)
    return LogLinearGatedDeltaNetConfig(**kwargs)


def make_model(seed=0, neutral_levels=False, **overrides):
    """A model with O(1) logits, slow decays (A in [0.05, 0.5]) so that far levels matter, and
    level weights that differ per token, head and level.

    ``neutral_levels``: level projection 0 and scale, bias as initialised (lambda = softplus(bias))."""
    torch.manual_seed(seed)
    model = LogLinearGatedDeltaNetForCausalLM(make_config(**overrides)).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.empty(p.shape).uniform_(0.05, 0.5, generator=gen).log())
            elif name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("level_weights.bias") and not neutral_levels:
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
            elif name.endswith("level_weights.scale") and not neutral_levels:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("level_proj.weight"):  # starts at zero: make lambda depend on the token
                p.copy_(torch.zeros(p.shape) if neutral_levels else 0.3 * torch.randn(p.shape, generator=gen))
    return model


def tokens(batch, length, seed=0):
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


# --------------------------------------------------------------------------- plain Gated DeltaNet reference
def plain_gated_deltanet_logits(model, input_ids, chunked=True):
    """Logits of a plain (linear) Gated DeltaNet with ``model``'s weights, built from
    transformers' Qwen3-Next torch functions; every other piece is written out here."""
    cfg, sd = model.config, model.state_dict()
    gdr = TORCH_CHUNK_GATED_DELTA_RULE if chunked else TORCH_RECURRENT_GATED_DELTA_RULE
    length = input_ids.shape[1]

    def rms(x, weight):
        return F.rms_norm(x, (x.shape[-1],), weight, cfg.norm_eps)

    def short_conv(x, weight):  # causal depthwise conv + SiLU, x [B, T, D], weight [D, 1, K]
        y = F.conv1d(x.transpose(1, 2), weight, padding=weight.shape[-1] - 1, groups=x.shape[-1])
        return F.silu(y[..., :length]).transpose(1, 2)

    x = F.embedding(input_ids, sd["model.embeddings.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        a = p + "attn."
        h = rms(x, sd[p + "attn_norm.weight"])
        q = short_conv(h @ sd[a + "q_proj.weight"].T, sd[a + "q_conv1d.weight"]).unflatten(-1, (cfg.num_heads, -1))
        k = short_conv(h @ sd[a + "k_proj.weight"].T, sd[a + "k_conv1d.weight"]).unflatten(-1, (cfg.num_heads, -1))
        v = short_conv(h @ sd[a + "v_proj.weight"].T, sd[a + "v_conv1d.weight"]).unflatten(-1, (cfg.num_v_heads, -1))
        g = -sd[a + "A_log"].exp() * F.softplus(h @ sd[a + "a_proj.weight"].T + sd[a + "dt_bias"])
        beta = torch.sigmoid(h @ sd[a + "b_proj.weight"].T) * (2 if cfg.allow_neg_eigval else 1)
        # Value head h reads key head h // (H / G), as Qwen3-Next's layer repeats them (older
        # transformers' functions need equal head counts).
        q, k = (x.repeat_interleave(cfg.num_v_heads // cfg.num_heads, dim=2) for x in (q, k))
        o, _ = gdr(q, k, v, g=g, beta=beta, use_qk_l2norm_in_kernel=True)
        if cfg.use_gate:
            norm = qwen3_next.Qwen3NextRMSNormGated(cfg.head_v_dim, eps=cfg.norm_eps).to(o.device)
            norm.weight.data.copy_(sd[a + "o_norm.weight"])
            o = norm(o, (h @ sd[a + "g_proj.weight"].T).unflatten(-1, (cfg.num_v_heads, -1)))
        else:
            o = rms(o, sd[a + "o_norm.weight"])
        x = x + o.flatten(-2) @ sd[a + "o_proj.weight"].T
        h = rms(x, sd[p + "mlp_norm.weight"])
        m = p + "mlp."
        x = x + (F.silu(h @ sd[m + "gate_proj.weight"].T) * (h @ sd[m + "up_proj.weight"].T)) @ sd[m + "down_proj.weight"].T
    return rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


@pytest.mark.parametrize(
    "overrides",
    [
        dict(),  # GVA (4 value heads on 2 key heads), output gate
        dict(num_v_heads=2, use_gate=False, allow_neg_eigval=True, expand_v=2.0),
        # The authors' convention: no query scale, lambda = head_dim ** -0.5 carries it.
        dict(use_query_scale=False, level_bias_init=math.log(math.expm1(8**-0.5))),
    ],
    ids=["gva_gate", "no_gate_neg_eigval", "scale_in_lambda"],
)
def test_neutral_levels_match_plain_gated_deltanet(overrides):
    model = make_model(neutral_levels=True, **overrides)
    ids = tokens(2, 150, seed=3)
    with torch.no_grad():
        ours = model(ids, use_cache=False).logits
        ref_chunk = plain_gated_deltanet_logits(model, ids, chunked=True)
        ref_recurrent = plain_gated_deltanet_logits(model, ids[:, :40], chunked=False)
        # The cached path (prefill then decode steps) against the same reference.
        out = model(ids[:, :100], use_cache=True)
        steps = [out.logits]
        for t in range(100, 110):
            steps.append(model(ids[:, t : t + 1], cache=out.cache, use_cache=True).logits)
        cached = torch.cat(steps, 1)
    # Both sides round in float32 (the reference casts to it internally): relative to max |logit| > 1.
    assert ref_chunk.abs().max() > 1
    assert rel_err(ours, ref_chunk) < 1e-5
    assert rel_err(ours[:, :40], ref_recurrent) < 1e-5
    assert rel_err(cached, ref_chunk[:, :110]) < 1e-5


def test_level_weights_change_the_function():
    """Guards the parity test: with a live level projection the model is not plain GDN."""
    model = make_model()
    ids = tokens(1, 80, seed=4)
    with torch.no_grad():
        diff = (model(ids, use_cache=False).logits - plain_gated_deltanet_logits(model, ids)).abs().max()
    assert diff > 1e-2


# --------------------------------------------------------------------------- cache exactness
@pytest.mark.parametrize("num_levels", [4, 15])
def test_prefill_then_decode_equals_full_forward(num_levels):
    """prefill(n) + cached steps reproduce the full forward at every position, for prefills on and
    around powers of two (and past 2^(L-1) = 8 for L = 4). Every other prefill continues with a
    5-token cached forward before the one-token steps."""
    length = 300
    model = make_model(num_levels=num_levels)
    ids = tokens(2, length, seed=5)
    sampled = torch.randint(1, length, (4,), generator=torch.Generator().manual_seed(num_levels)).tolist()
    prefills = sorted({1, 2, 3, 8, 9, 63, 64, 65, 127, 128, 129, 255, 256, 257, 299, *sampled})
    worst = 0.0
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        for i, n in enumerate(prefills):
            out = model(ids[:, :n], use_cache=True)
            cache, pieces, t = out.cache, [out.logits], n
            end = length if n == 1 else min(length, n + 9)
            if i % 2 and t + 5 <= end:
                pieces.append(model(ids[:, t : t + 5], cache=cache, use_cache=True).logits)
                t += 5
            for t in range(t, end):
                pieces.append(model(ids[:, t : t + 1], cache=cache, use_cache=True).logits)
            assert cache.get_seq_length() == end
            worst = max(worst, rel_err(torch.cat(pieces, 1), full[:, :end]))
    assert worst < 1e-4


@torch.no_grad()
def test_generate_with_and_without_cache():
    """Greedy, beam search (num_beams=3: deterministic, reorders the cache) and seeded sampling."""
    model = make_model()
    ids = tokens(2, 12, seed=6)
    kw = dict(max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    cached = model.generate(ids, **kw)
    uncached = model.generate(ids, use_cache=False, **kw)
    assert torch.equal(cached, uncached)
    beams = [model.generate(ids, num_beams=3, **kw) for _ in range(2)]
    assert torch.equal(beams[0], beams[1])
    assert torch.equal(beams[0], model.generate(ids, num_beams=3, use_cache=False, **kw))
    sampled = []
    for use_cache in (True, False):
        torch.manual_seed(5)
        sampled.append(model.generate(ids, max_new_tokens=12, do_sample=True, top_k=0, use_cache=use_cache,
                                      eos_token_id=None, pad_token_id=0))
    assert torch.equal(*sampled)


def test_generate_continues_from_returned_cache():
    """Passing the returned cache back feeds only the new tokens (no re-prefill) and gives the
    same continuation as generating from scratch."""
    model = make_model()
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    first = model.generate(tokens(2, 10, seed=7), max_new_tokens=5, return_dict_in_generate=True, **kw)
    prompt = torch.cat([first.sequences, tokens(2, 4, seed=8)], 1)
    seen = []
    hook = model.model.register_forward_pre_hook(lambda m, a, k: seen.append(k["input_ids"].shape[1]), with_kwargs=True)
    continued = model.generate(prompt, cache=first.cache, max_new_tokens=5, **kw)
    hook.remove()
    assert seen[0] == prompt.shape[1] - 14  # the cache consumed 10 prompt + 4 generated columns
    assert torch.equal(continued, model.generate(prompt, max_new_tokens=5, **kw))


def test_left_padded_batch_equals_rows_alone(pad_rows):
    model = make_model()
    lengths, new = (1, 7, 64, 65, 130), 6
    rows = [tokens(1, n, seed=10 + n)[0] for n in lengths]
    batch, mask = pad_rows(rows)
    width = batch.shape[1]
    kw = dict(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
              return_dict_in_generate=True, output_logits=True)
    together = model.generate(batch, attention_mask=mask, **kw)
    with torch.no_grad():
        prefill = model(batch, attention_mask=mask, use_cache=False).logits
    worst = 0.0
    for i, row in enumerate(rows):
        alone = model.generate(row[None], **kw)
        assert torch.equal(together.sequences[i, width:], alone.sequences[0, len(row) :])
        with torch.no_grad():
            single = model(row[None], use_cache=False).logits[0]
        worst = max(worst, rel_err(prefill[i, width - len(row) :], single))
        for step_together, step_alone in zip(together.logits, alone.logits):
            worst = max(worst, rel_err(step_together[i], step_alone[0]))
    assert worst < 1e-4
    assert bool((prefill[mask == 0] == 0).all())  # pads carry no logits (hidden state repadded with zeros)


def test_packed_documents_equal_separate_documents():
    model = make_model()
    docs = [tokens(1, n, seed=20 + n) for n in (5, 70, 33)]
    packed = torch.cat(docs, 1)
    cu = torch.tensor([0, 5, 75, 108], dtype=torch.int32)
    with torch.no_grad():
        out = model(packed, cu_seqlens=cu, use_cache=True)
        alone = [model(doc, use_cache=False).logits for doc in docs]
        # Each document continues from its own cached state.
        nxt = tokens(1, 3, seed=30)
        step = model(nxt, cu_seqlens=torch.tensor([0, 1, 2, 3]), cache=out.cache, use_cache=True).logits
        cont = [model(torch.cat([doc, nxt[:, j : j + 1]], 1), use_cache=False).logits[:, -1] for j, doc in enumerate(docs)]
    assert rel_err(out.logits, torch.cat(alone, 1)) < 1e-5
    assert rel_err(step[0], torch.cat(cont)) < 1e-5


# --------------------------------------------------------------------------- training
def _row_losses_and_grads(model, rows):
    """Token-weighted mean loss over rows run one by one, and its gradients."""
    model.zero_grad()
    total = sum(len(r) - 1 for r in rows)
    loss = sum(model(r[None], labels=r[None], use_cache=False).loss * (len(r) - 1) / total for r in rows)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient_checkpointing"])
def test_padded_training_step_equals_unpadded_rows(checkpointing, pad_rows):
    model = make_model().train()
    rows = [tokens(1, n, seed=40 + n)[0] for n in (5, 17, 70)]
    batch, mask = pad_rows(rows, width=72, starts=(0, 72 - 17, 1))  # right, left and both-sided padding
    ref_loss, ref_grads = _row_losses_and_grads(model, rows)

    if checkpointing:
        model.gradient_checkpointing_enable()
    model.zero_grad()
    loss = model(batch, attention_mask=mask, labels=batch).loss  # labels at pads are ignored by the model
    loss.backward()
    assert abs(loss.item() - ref_loss.item()) < 1e-5 * ref_loss.item()
    for name, p in model.named_parameters():
        scale = ref_grads[name].abs().max().clamp_min(1e-6)
        assert (p.grad - ref_grads[name]).abs().max() / scale < 1e-4, name
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()  # one full step runs (updates in place, including level weights)
    assert any(p.grad.abs().max() > 0 for n, p in model.named_parameters() if "level_weights" in n)


# --------------------------------------------------------------------------- init, save / load
def test_fresh_model_is_plain_gated_deltanet_and_logits_to_keep():
    torch.manual_seed(0)
    model = LogLinearGatedDeltaNetForCausalLM(make_config()).eval()
    attn = model.model.layers[1].attn
    assert torch.count_nonzero(attn.level_proj.weight) == 0
    assert torch.equal(attn.level_weights.scale, torch.ones(4, 4))
    assert torch.allclose(attn.level_weights.bias, torch.full((4, 4), math.log(math.e - 1)))
    ids = tokens(2, 20, seed=51)
    with torch.no_grad():
        full = model(ids).logits
        assert rel_err(full, plain_gated_deltanet_logits(model, ids)) < 1e-5
        last = model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, VOCAB) and torch.allclose(last, full[:, -1:], atol=1e-6)


def test_save_load_round_trip(tmp_path, round_trip):
    round_trip(make_model(tie_word_embeddings=True), tmp_path, tokens(2, 40, seed=50))
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), LogLinearGatedDeltaNetForCausalLM)
    assert isinstance(LogLinearGatedDeltaNetModel.from_pretrained(tmp_path), LogLinearGatedDeltaNetModel)


def test_missing_level_weights_are_initialised_on_load(tmp_path, load_without_level_weights):
    """A checkpoint without level parameters (plain fla Gated DeltaNet weights) loads as plain Gated DeltaNet."""
    model = make_model()
    loaded = load_without_level_weights(model, tmp_path)
    assert torch.equal(loaded.model.layers[0].attn.A_log, model.model.layers[0].attn.A_log)
    ids = tokens(1, 30, seed=52)
    with torch.no_grad():
        assert rel_err(loaded(ids).logits, plain_gated_deltanet_logits(loaded, ids)) < 1e-5


# Runs where importing hf_loglinear (and triton) fails: only torch, transformers and safetensors.
_REMOTE_LOAD = textwrap.dedent(
    """
    import importlib.abc, sys
    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("hf_loglinear", "triton"):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, Blocker())
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    folder = sys.argv[1]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__ == "LogLinearGatedDeltaNetModel"
    ids = torch.load(folder + "/ids.pt")
    with torch.no_grad():
        logits = model(ids, use_cache=False).logits
    tokens = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    torch.save({"logits": logits, "tokens": tokens}, folder + "/remote.pt")
    """
)


def test_remote_code_loads_without_the_package(tmp_path):
    model = make_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_loglinear_gated_deltanet.LogLinearGatedDeltaNetConfig",
        "AutoModel": "modeling_loglinear_gated_deltanet.LogLinearGatedDeltaNetModel",
        "AutoModelForCausalLM": "modeling_loglinear_gated_deltanet.LogLinearGatedDeltaNetForCausalLM",
    }
    assert (folder / "modeling_common.py").is_file()  # followed from the modeling file's imports
    ids = tokens(2, 25, seed=53)
    torch.save(ids, folder / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _REMOTE_LOAD, str(folder)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    remote = torch.load(folder / "remote.pt")
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(ids, use_cache=False).logits)
    expected = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(remote["tokens"], expected)


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_levels=0), "num_levels"),
        (dict(num_heads=3, num_v_heads=4), "multiple of num_heads"),
        (dict(head_dim=8, expand_v=0.3), "value head size"),
        (dict(attn={"layers": [0], "num_heads": 2}), "hybrid attention"),
        (dict(use_short_conv=False), "use_short_conv"),
        (dict(hidden_act="gelu"), "hidden_act"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_bad_inputs_raise():
    model = make_model()
    ids = tokens(2, 6)
    with torch.no_grad():
        cache = model(ids, use_cache=True).cache
        with pytest.raises(ValueError, match="holds 2 sequences"):
            model(tokens(3, 1), cache=cache, use_cache=True)
        other = HierarchicalCache(LogLinearMamba2Config(num_hidden_layers=2, hidden_size=32, num_heads=8, head_dim=8))
        with pytest.raises(ValueError, match="loglinear_mamba2"):
            model(ids, cache=other, use_cache=True)
        with pytest.raises(ValueError, match="HierarchicalCache"):
            model(ids, cache=object(), use_cache=True)
        with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
            model(ids, inputs_embeds=torch.zeros(2, 6, 32))
        with pytest.raises(ValueError, match="batch size 1"):
            model(ids, cu_seqlens=torch.tensor([0, 6]))
        with pytest.raises(ValueError, match="not both"):
            model(ids[:1], cu_seqlens=torch.tensor([0, 6]), attention_mask=torch.ones(1, 6))
        with pytest.raises(ValueError, match="attention_mask"):
            model(ids, attention_mask=torch.ones(3, 6))
        with pytest.raises(ValueError, match="cu_seqlens"):
            model(ids[:1], cu_seqlens=torch.tensor([0, 4]))
