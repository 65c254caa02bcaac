"""HierarchicalCache: storage, shared LevelState memory, batch surgery, reset, size, errors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.cache_utils import Cache, LinearAttentionCacheLayerMixin

from hf_loglinear import HierarchicalCache, LevelState, loglinear_attention_step

CONFIG = SimpleNamespace(num_hidden_layers=2, model_type="some_model")


def filled_cache(batch=3, conv_states=1):
    cache = HierarchicalCache(CONFIG, num_conv_states=conv_states)
    for layer in range(2):
        for i in range(conv_states):
            cache.update_conv_state(torch.randn(batch, 6, 3), layer, state_idx=i)
        levels = torch.randn(batch, 2, 4, 3, 5)
        cache.update_level_state(layer, LevelState(levels, torch.arange(batch, dtype=torch.int64) + 10))
    cache.advance(7)
    return cache


def test_is_a_transformers_cache_with_linear_layers():
    cache = HierarchicalCache(CONFIG)
    assert isinstance(cache, Cache) and all(isinstance(layer, LinearAttentionCacheLayerMixin) for layer in cache.layers)
    assert len(cache) == 2 and cache.batch_size == -1 and cache.nbytes == 0 and cache.get_seq_length() == 0
    assert not cache.is_compileable  # generate() must not auto-compile the decode step
    assert cache.is_linear == [False, False]  # so generate() slices a continued prompt by get_seq_length()
    assert cache.level_state(0) is None and cache.get_conv_state(0) is None and not cache.has_state(0)


def test_level_state_shares_memory_with_the_cache():
    cache = filled_cache()
    state = cache.level_state(1)
    assert state.levels.data_ptr() == cache.layers[1].recurrent_states[0].data_ptr()
    before = state.levels.clone()
    q, k = torch.randn(3, 1, 3), torch.randn(3, 1, 3)
    loglinear_attention_step(state, q, k, torch.randn(3, 2, 5), -torch.rand(3, 2), torch.rand(3, 2, 4))
    assert cache.level_state(1).position.tolist() == [11, 12, 13]
    assert not torch.equal(cache.level_state(1).levels, before)
    # storing a state copies into the existing buffers (static addresses) and drops autograd history
    new = LevelState(torch.randn(3, 2, 4, 3, 5, requires_grad=True), torch.tensor([1, 2, 3]))
    ptr = state.levels.data_ptr()
    stored = cache.update_level_state(1, new)
    assert stored.levels.data_ptr() == ptr and not stored.levels.requires_grad
    assert torch.equal(stored.levels, new.levels.detach())


def test_batch_surgery_moves_every_tensor_together():
    cache = filled_cache(batch=3, conv_states=3)
    rows = {name: t.clone() for name, t in _tensors(cache)}
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    for name, t in _tensors(cache):
        assert torch.equal(t, rows[name][[2, 2, 0]]), name
    cache.batch_repeat_interleave(2)
    assert cache.batch_size == 6
    for name, t in _tensors(cache):
        assert torch.equal(t, rows[name][[2, 2, 2, 2, 0, 0]]), name
    cache.batch_select_indices(torch.tensor([1, 4]))
    assert cache.batch_size == 2 and cache.level_state(0).position.tolist() == [12, 10]
    for name, t in _tensors(cache):
        assert torch.equal(t, rows[name][[2, 0]]), name


def _tensors(cache):
    for i, layer in enumerate(cache.layers):
        for j, conv in layer.conv_states.items():
            yield f"{i}.conv{j}", conv
        yield f"{i}.levels", layer.recurrent_states[0]
        yield f"{i}.position", layer.position


def test_reset_and_size():
    cache = filled_cache(batch=3)
    # conv state, level states, the levels' decode scale [B, H, 2, L] fp32, positions
    per_layer = 3 * 6 * 3 * 4 + 3 * 2 * 4 * 3 * 5 * 4 + 3 * 2 * 2 * 4 * 4 + 3 * 8
    assert cache.nbytes == 2 * per_layer
    assert cache.get_seq_length() == 7 and "seen_tokens=7" in repr(cache)
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.level_state(0) is None and cache.get_conv_state(0) is None
    assert cache.layers[0].position.tolist() == [0, 0, 0] and cache.nbytes == 2 * per_layer  # buffers kept


def test_errors():
    cache = filled_cache(batch=3)
    with pytest.raises(ValueError, match="built for model_type 'some_model'"):
        cache.check("other_model", 3)
    with pytest.raises(ValueError, match="holds 3 sequences but the input has 2"):
        cache.check("some_model", 2)
    cache.check("some_model", 3)
    with pytest.raises(ValueError, match="cannot store a level state of shape"):
        cache.update_level_state(0, LevelState(torch.zeros(3, 2, 5, 3, 5), torch.zeros(3, dtype=torch.int64)))
    with pytest.raises(ValueError, match="cached in float32"):
        cache.update_level_state(0, LevelState(torch.zeros(3, 2, 4, 3, 5, dtype=torch.bfloat16), torch.zeros(3, dtype=torch.int64)))
    with pytest.raises(ValueError, match="of dtype torch.float64 in a cache holding torch.float32"):
        cache.update_level_state(0, LevelState(torch.zeros(3, 2, 4, 3, 5, dtype=torch.float64), torch.zeros(3, dtype=torch.int64)))
    with pytest.raises(ValueError, match="conv state index 1 out of range"):
        cache.update_conv_state(torch.zeros(3, 6, 3), 0, state_idx=1)
    with pytest.raises(ValueError, match="layer index 5 out of range"):
        cache.level_state(5)
    with pytest.raises(ValueError, match="num_hidden_layers >= 1"):
        HierarchicalCache(SimpleNamespace(model_type="x"))


def test_float64_model_caches_and_decodes():
    """A float64 model (e.g. for a numerical check) keeps its level states in float64."""
    from hf_loglinear import LogLinearMamba2Config, LogLinearMamba2ForCausalLM

    config = LogLinearMamba2Config(vocab_size=64, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1,
                                   num_hidden_layers=1, num_levels=4)
    torch.manual_seed(0)
    model = LogLinearMamba2ForCausalLM(config).double().eval()
    ids = torch.randint(0, 64, (1, 20))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        prefill = model(ids[:, :12], use_cache=True)
        cache, steps = prefill.cache, []
        for t in range(12, 20):
            out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
            cache = out.cache
            steps.append(out.logits)
    assert cache.level_state(0).levels.dtype == torch.float64
    # the model hands out float32 logits; the float64 path itself agrees far below their rounding
    assert torch.allclose(torch.cat(steps, 1), full[:, 12:], rtol=0, atol=1e-6)
