"""Shared model pieces: level weights, gated RMSNorm, restartable short convolution, packing."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.mamba2.modeling_mamba2 import MambaRMSNormGated

from hf_loglinear.modules import (
    GatedRMSNorm,
    LevelProjection,
    LevelWeights,
    SequenceLayout,
    ShortConvolution,
    next_token_labels,
    pack,
    plan_sequences,
    repad,
    unpad,
)


def test_level_weights_neutral_init_and_layout():
    lw = LevelWeights(3, 4)
    assert lw.bias_init == pytest.approx(math.log(math.e - 1))
    zero = LevelProjection(8, 3, 4)(torch.randn(2, 5, 8))
    assert torch.count_nonzero(zero) == 0
    lam = lw(zero)
    assert lam.shape == (2, 5, 3, 4) and lam.dtype == torch.float32
    assert (lam - 1).abs().max() < 1e-6
    # raw is head-major then level, scale and bias act per (head, level)
    with torch.no_grad():
        lw.scale.copy_(torch.arange(12.0).view(3, 4))
        lw.bias.zero_()
    raw = torch.ones(12)
    assert torch.allclose(lw(raw), F.softplus(torch.arange(12.0)).view(3, 4))
    with torch.no_grad():
        lw.bias.fill_(3.0)
    lw.reset_parameters()
    assert torch.equal(lw.scale, torch.ones(3, 4)) and torch.allclose(lw.bias, torch.full((3, 4), lw.bias_init))
    assert LevelWeights(2, 2, bias_init=0.0)(torch.zeros(4)).sub(math.log(2)).abs().max() < 1e-6
    with pytest.raises(ValueError, match="num_levels >= 1"):
        LevelWeights(2, 0)


def test_gated_rmsnorm_gate_first_matches_transformers():
    torch.manual_seed(0)
    x, z = torch.randn(2, 7, 24), torch.randn(2, 7, 24)
    if "group_size" in inspect.signature(MambaRMSNormGated).parameters:
        ours, ref = GatedRMSNorm(24, 6, eps=1e-5), MambaRMSNormGated(24, group_size=6, eps=1e-5)
    else:  # transformers 5.17 normalises over the whole width
        ours, ref = GatedRMSNorm(24, eps=1e-5), MambaRMSNormGated(24, eps=1e-5)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    assert torch.allclose(ours(x, z), ref(x, z), atol=1e-6, rtol=0)
    assert torch.allclose(ours(x), ref(x), atol=1e-6, rtol=0)


def test_gated_rmsnorm_norm_first():
    torch.manual_seed(0)
    x, z = torch.randn(3, 16, dtype=torch.float64), torch.randn(3, 16, dtype=torch.float64)
    norm = GatedRMSNorm(16, eps=1e-6, norm_before_gate=True).double()
    with torch.no_grad():
        norm.weight.normal_()
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight * F.silu(z)
    assert torch.allclose(norm(x, z), expected, atol=1e-12)
    with pytest.raises(ValueError, match="must divide"):
        GatedRMSNorm(16, 5)


def _conv(kernel=4, channels=5, bias=True):
    torch.manual_seed(0)
    conv = ShortConvolution(channels, kernel, bias=bias, activation=F.silu).double()
    with torch.no_grad():
        conv.weight.normal_()
    return conv


def _reference(conv, x):
    k = conv.kernel_size[0]
    y = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=k - 1, groups=x.shape[-1])[..., : x.shape[1]]
    return F.silu(y).transpose(1, 2)


@pytest.mark.parametrize("kernel", [1, 2, 4])
def test_short_conv_matches_conv1d_and_continues_from_state(kernel):
    conv = _conv(kernel)
    x = torch.randn(3, 13, 5, dtype=torch.float64)
    expected = _reference(conv, x)
    y, state = conv(x, output_state=True)
    assert torch.allclose(y, expected, atol=1e-12)
    assert torch.equal(state, x[:, x.shape[1] - (kernel - 1) :].transpose(1, 2))
    # any split into prefill + cached pieces (shorter than the kernel too) gives the same outputs
    for cuts in ((1, 2, 3), (6, 7), (2, 12)):
        state, pieces = None, []
        for a, b in zip((0,) + cuts, cuts + (13,)):
            y, state = conv(x[:, a:b], state=state, output_state=True)
            pieces.append(y)
        assert torch.allclose(torch.cat(pieces, 1), expected, atol=1e-12), cuts
    assert conv(x)[1] is None


def test_short_conv_restarts_at_packed_sequence_starts():
    conv = _conv()
    lengths = [3, 0, 7, 1, 2]
    docs = [torch.randn(1, n, 5, dtype=torch.float64) for n in lengths]
    cu = torch.tensor([0] + lengths).cumsum(0)
    layout = SequenceLayout.packed(cu, int(cu[-1]))
    old = torch.randn(len(lengths), 5, 3, dtype=torch.float64)
    for state in (None, old):
        y, new = conv(torch.cat(docs, 1), layout=layout, state=state, output_state=True)
        for i, d in enumerate(docs):
            yi, si = conv(d, state=None if state is None else state[i : i + 1], output_state=True)
            assert torch.allclose(y[:, cu[i] : cu[i + 1]], yi, atol=1e-12)
            assert torch.allclose(new[i], si[0], atol=1e-12), i
    with pytest.raises(ValueError, match="conv state has shape"):
        conv(torch.cat(docs, 1), layout=layout, state=old[:2])


def test_layouts():
    dense = SequenceLayout.dense(2, 3)
    assert dense.cu_seqlens is None and dense.num_sequences == 2
    assert dense.offset.tolist() == [[0, 1, 2]] * 2 and dense.starts.tolist() == [0, 3]
    packed = SequenceLayout.packed(torch.tensor([0, 2, 2, 5]), 5)
    assert packed.cu_seqlens.dtype == torch.int32
    assert packed.seq_index.tolist() == [[0, 0, 2, 2, 2]] and packed.offset.tolist() == [[0, 1, 0, 1, 2]]
    with pytest.raises(ValueError, match="must rise from 0"):
        SequenceLayout.packed(torch.tensor([0, 3, 2]), 2)
    with pytest.raises(ValueError, match="1-D integer"):
        SequenceLayout.packed(torch.tensor([0.0, 2.0]), 2)


def test_unpad_pack_repad_and_plan():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]])
    u = unpad(mask)
    assert u.cu_seqlens.tolist() == [0, 2, 6, 6, 8] and u.indices.tolist() == [2, 3, 4, 5, 6, 7, 12, 14]
    x = torch.randn(4, 4, 3)
    packed = pack(x, u)
    assert packed.shape == (1, 8, 3)
    assert torch.equal(repad(packed, u), x * mask[..., None])

    layout, unpadded = plan_sequences(4, 2, torch.cat([torch.ones(4, 3), mask[:, -2:]], 1))
    assert unpadded is not None and layout.lengths.tolist() == [2, 2, 0, 1]
    layout, unpadded = plan_sequences(2, 3, torch.ones(2, 9))
    assert unpadded is None and layout.cu_seqlens is None
    with pytest.raises(ValueError, match="attention_mask must be"):
        plan_sequences(2, 3, torch.ones(2, 2))
    with pytest.raises(ValueError, match="needs batch size 1"):
        plan_sequences(2, 3, cu_seqlens=torch.tensor([0, 3]))


def test_next_token_labels_stay_inside_sequences():
    labels = torch.tensor([[9, 9, 1, 2, 3], [4, 5, 6, 7, 8]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 0, 1, 1]])
    layout, unpadded = plan_sequences(2, 5, mask)
    # row 1 has a pad inside: its real tokens 4 5 7 8 are one sequence
    assert next_token_labels(labels, layout, unpadded).tolist() == [[-100, -100, 2, 3, -100], [5, 7, -100, 8, -100]]
    layout, _ = plan_sequences(1, 5, cu_seqlens=torch.tensor([0, 2, 5]))
    assert next_token_labels(labels[:1], layout).tolist() == [[9, -100, 2, 3, -100]]
    layout, _ = plan_sequences(2, 5)
    assert next_token_labels(labels, layout)[:, -1].tolist() == [-100, -100]
