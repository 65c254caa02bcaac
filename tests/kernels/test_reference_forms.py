"""The three torch forms of the operator agree: quadratic (reference), recurrent, chunked.

Tolerances: float64 inputs, the forms differ only by summation order, so agreement is at
rounding level; 1e-10 relative to the output scale leaves ~4 orders of margin at T = 1000.
float32 chunked against the float64 reference: 1e-5 relative (float32 eps is 1.2e-7, the
chunk algebra sums ~C + L*log2(T) terms of similar size, plus a 64x64 triangular solve).
"""
from __future__ import annotations

import itertools

import pytest
import torch

from hf_loglinear import levels
from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.naive import naive_loglinear_attention
from hf_loglinear.kernels.recurrent import recurrent_loglinear_attention

LENGTHS = [1, 2, 63, 64, 65, 127, 128, 129, 300, 1000]
HEADS = 4


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def configs(length):
    """(num_levels, groups) pairs: L capped at 3 and 4 and uncapped, G in {1, 2, H}; the longest
    lengths get a rotating subset to keep the suite fast."""
    full = list(itertools.product([3, 4, levels.levels_for_length(length) + 1], [1, 2, HEADS]))
    return full if length <= 300 else full[::4]


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
@pytest.mark.parametrize("length", LENGTHS)
def test_forms_agree_float64(inputs, length, delta):
    for num_levels, groups in configs(length):
        x = inputs(2, length, groups, HEADS, 8, 6, num_levels, delta=delta, seed=length + groups)
        o_ref, s_ref = naive_loglinear_attention(**x, output_final_state=True)
        o_rec, s_rec = recurrent_loglinear_attention(**x, output_final_state=True)
        o_chk, s_chk = chunk_loglinear_attention(**x, output_final_state=True)
        assert rel_err(o_rec, o_ref) < 1e-10 and rel_err(o_chk, o_ref) < 1e-10, (num_levels, groups)
        assert rel_err(s_chk.levels, s_rec.levels) < 1e-10 and rel_err(s_ref.levels, s_rec.levels) < 1e-10
        assert s_chk.position.tolist() == s_rec.position.tolist() == [length, length]


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
@pytest.mark.parametrize("length", [65, 300, 1000])
def test_chunked_float32(inputs, length, delta):
    x = inputs(1, length, 2, HEADS, 16, 16, 15, delta=delta, seed=7)
    o_ref, s_ref = naive_loglinear_attention(**x, output_final_state=True)
    x32 = {n: None if t is None else t.float() for n, t in x.items()}
    o32, s32 = chunk_loglinear_attention(**x32, output_final_state=True)
    assert o32.dtype == torch.float32 and s32.levels.dtype == torch.float32
    assert rel_err(o32.double(), o_ref) < 1e-5
    assert rel_err(s32.levels.double(), s_ref.levels) < 1e-5


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_varlen_equals_one_by_one(inputs, delta):
    lengths = [1, 64, 5, 130, 0, 129, 63]
    cu = torch.tensor([0] + lengths).cumsum(0)
    x = inputs(1, int(cu[-1]), 2, HEADS, 8, 4, 5, delta=delta, seed=3)
    o, state = chunk_loglinear_attention(**x, cu_seqlens=cu, output_final_state=True)
    o_ref, s_ref = naive_loglinear_attention(**x, cu_seqlens=cu, output_final_state=True)
    assert rel_err(o, o_ref) < 1e-10
    for n, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        if a == b:
            assert state.levels[n].abs().max() == 0 and state.position[n] == 0
            continue
        part = {k: None if t is None else t[:, a:b] for k, t in x.items()}
        o_n, s_n = recurrent_loglinear_attention(**part, output_final_state=True)
        assert rel_err(o[:, a:b], o_n) < 1e-10
        assert rel_err(state.levels[n : n + 1], s_n.levels) < 1e-10
        assert state.position[n] == b - a


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
@pytest.mark.parametrize("fn", [chunk_loglinear_attention, naive_loglinear_attention], ids=["chunk", "naive"])
def test_continuation_equals_one_pass(inputs, delta, fn):
    length = 400
    x = inputs(2, length, 1, HEADS, 8, 4, 6, delta=delta, seed=11)
    o_full, s_full = recurrent_loglinear_attention(**x, output_final_state=True)
    for split in [1, 37, 64, 128, 129, 255, 256, 399]:
        head = {k: None if t is None else t[:, :split] for k, t in x.items()}
        tail = {k: None if t is None else t[:, split:] for k, t in x.items()}
        o1, s1 = fn(**head, output_final_state=True)
        o2, s2 = fn(**tail, initial_state=s1, output_final_state=True)
        assert rel_err(torch.cat([o1, o2], 1), o_full) < 1e-10, split
        assert rel_err(s2.levels, s_full.levels) < 1e-10 and s2.position.tolist() == [length] * 2


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_varlen_continuation_with_unequal_positions(inputs, state_from_prefix, delta):
    """Packed sequences each continue from their own position (mid-chunk, aligned, zero)."""
    positions, lengths = [70, 0, 128, 3], [100, 65, 1, 200]
    state = state_from_prefix(4, HEADS, 5, 8, 4, positions)
    cu = torch.tensor([0] + lengths).cumsum(0)
    x = inputs(1, int(cu[-1]), 2, HEADS, 8, 4, 5, delta=delta, seed=5)
    o, final = chunk_loglinear_attention(**x, cu_seqlens=cu, initial_state=state.clone(), output_final_state=True)
    o_rec, f_rec = recurrent_loglinear_attention(**x, cu_seqlens=cu, initial_state=state, output_final_state=True)
    assert rel_err(o, o_rec) < 1e-10 and rel_err(final.levels, f_rec.levels) < 1e-10
    assert final.position.tolist() == [p + n for p, n in zip(positions, lengths)]


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_decode_steps_equal_one_pass(inputs, delta):
    from hf_loglinear import loglinear_attention_step

    length = 140
    x = inputs(2, length, 2, HEADS, 8, 4, 6, delta=delta, seed=13)
    o_full, _ = chunk_loglinear_attention(**x)
    for prefix in [0, 1, 63, 64, 100]:
        head = {k: None if t is None else t[:, :prefix] for k, t in x.items()}
        _, state = chunk_loglinear_attention(**head, output_final_state=True)
        outs = []
        for t in range(prefix, length):
            token = {k: None if v is None else v[:, t] for k, v in x.items()}
            o, state = loglinear_attention_step(state, **token)
            outs.append(o)
        assert rel_err(torch.stack(outs, 1), o_full[:, prefix:]) < 1e-10, prefix
        assert state.position.tolist() == [length, length]


def plain_recurrence(q, k, v, g, beta):
    """Mamba-2 / gated delta rule with ONE state, written from the textbook update:
    S_t = a_t S_{t-1} + k v^T   or   S_t = a_t (I - b k k^T) S_{t-1} + b k v^T;  o_t = S_t^T q_t."""
    batch, length, heads = v.shape[:3]
    rep = heads // q.shape[2]
    q, k = q.repeat_interleave(rep, 2), k.repeat_interleave(rep, 2)
    out = torch.zeros_like(v)
    for b in range(batch):
        for h in range(heads):
            S = torch.zeros(q.shape[-1], v.shape[-1], dtype=v.dtype)
            for t in range(length):
                kt, vt, a = k[b, t, h], v[b, t, h], g[b, t, h].exp()
                if beta is None:
                    S = a * S + torch.outer(kt, vt)
                else:
                    bt = beta[b, t, h]
                    S = a * (S - bt * torch.outer(kt, kt @ S)) + bt * torch.outer(kt, vt)
                out[b, t, h] = S.T @ q[b, t, h]
    return out


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_unit_level_weights_give_the_linear_model(inputs, delta):
    x = inputs(2, 150, 2, HEADS, 8, 4, 5, delta=delta, seed=17)
    x["level_weights"] = torch.ones_like(x["level_weights"])
    expected = plain_recurrence(x["q"], x["k"], x["v"], x["g"], x["beta"])
    for fn in (chunk_loglinear_attention, naive_loglinear_attention):
        assert rel_err(fn(**x)[0], expected) < 1e-10
    # a per-query constant c_t scales the output by c_t
    c = torch.rand(2, 150, HEADS, 1, dtype=torch.float64) + 0.5
    x["level_weights"] = c.expand(-1, -1, -1, 5).contiguous()
    assert rel_err(chunk_loglinear_attention(**x)[0], expected * c) < 1e-10


@pytest.mark.parametrize("num_levels, positions", [(5, [0, 77]), (10, [90, 100])])
@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_gradients_match_reference(inputs, state_from_prefix, delta, num_levels, positions):
    """Gradients of every input (and of the initial state) through the chunked form equal those
    through the quadratic form and through the token recurrence. At L = 10 from positions 90 and
    100 the top level is empty and no prefix could fill it: the recurrence still reads it, so its
    entries' gradients are not zero, and the chunked form must read it too after the first chunk
    (it skips empty levels only without a differentiable state)."""
    length = 150
    x = inputs(2, length, 2, HEADS, 8, 4, num_levels, delta=delta, seed=19)
    state = state_from_prefix(2, HEADS, num_levels, 8, 4, positions)
    grads = {}
    for name, fn in [("chunk", chunk_loglinear_attention), ("naive", naive_loglinear_attention),
                     ("recurrent", recurrent_loglinear_attention)]:
        leaves = {k: None if t is None else t.clone().requires_grad_() for k, t in x.items()}
        init = state.clone()
        init.levels.requires_grad_()
        o, final = fn(**leaves, initial_state=init, output_final_state=True)
        w = torch.randn(o.shape, generator=torch.Generator().manual_seed(0), dtype=o.dtype)
        ws = torch.randn(final.levels.shape, generator=torch.Generator().manual_seed(1), dtype=o.dtype)
        ((o * w).sum() + (final.levels * ws).sum()).backward()
        grads[name] = {k: t.grad for k, t in leaves.items() if t is not None} | {"initial_state": init.levels.grad}
    for other in ("naive", "recurrent"):
        for key, ref in grads[other].items():
            assert rel_err(grads["chunk"][key], ref) < 1e-9, (other, key)


def test_float32_with_mamba2_decays():
    """Mamba-2's dt * A reaches -1.6 per token, so cumulative decays pass -50 within a chunk;
    their differences must not be taken in float32 (that alone cost 8e-7 here, 3x the 2.4e-7
    float32 rounding of everything else)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 512, 1, 64, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 512, 8, 32, generator=gen, dtype=torch.float64)
    dt = torch.rand(1, 512, 8, generator=gen, dtype=torch.float64) * 0.099 + 0.001
    g = -dt * (torch.rand(8, generator=gen, dtype=torch.float64) * 15 + 1)
    lam = torch.rand(1, 512, 8, 15, generator=gen, dtype=torch.float64) + 0.5
    ref, _ = chunk_loglinear_attention(q, k, v, g, lam)
    o32, _ = chunk_loglinear_attention(*(x.float() for x in (q, k, v, g, lam)))
    assert rel_err(o32.double(), ref) < 5e-7
