"""Triton backward of log-linear Gated DeltaNet (``chunk_bwd_delta_triton``) under TRITON_INTERPRET=1
against autograd through the torch chunked form in float64.

As for Mamba-2 (``test_chunk_triton_backward``), the torch recomputation is patched out
(``triton_only``), so a test fails unless the Triton backward ran. Shapes cross
chunk (64) and power-of-two boundaries; L = 9 at 260 tokens makes the capped top level close a
window of two chunks, L = 3 caps every inter-chunk level into the top.
"""

import pytest
import torch

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.chunk_triton import chunk_loglinear_attention_triton

NAMES = ("dq", "dk", "dv", "dg", "dlambda", "dbeta")
# float64 runs the same algebra as the reference in another order: only rounding separates them.
F64_TOL = 1e-10
# float32 accumulates in fp32 (ieee dots) through chains of products (UT inverse, its gradient
# -A^-T dX A^-T, the reverse level scans): measured errors stay below 1e-6 relative to max |ref|;
# 2e-5, the Mamba-2 backward's bound, leaves room for other seeds and shapes.
F32_TOL = 2e-5


@pytest.fixture
def triton_only(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the torch recomputation ran instead of the Triton backward")

    monkeypatch.setattr(chunk_triton, "chunk_loglinear_attention", fail)


def _case(make, length, groups, heads, num_levels, dtype, seed, key_dim=16, value_dim=16, batch=2):
    x = make(batch, length, groups, heads, key_dim, value_dim, num_levels, delta=True, dtype=dtype, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    do = torch.randn(batch, length, heads, value_dim, generator=gen, dtype=torch.float64)
    return [x[name] for name in ("q", "k", "v", "g", "level_weights", "beta")], do


def _grads(fn, x, do, wanted=(True,) * 6, **kwargs):
    leaves = [a.detach().clone().requires_grad_(need) for a, need in zip(x, wanted)]
    (fn(*leaves, **kwargs)[0].double() * do).sum().backward()
    return [a.grad for a in leaves]


def _errors(got, want):
    """Max |got - want| / max(max |want|, 1) per gradient (the floor: dg of one token is 0)."""
    errors = {}
    for name, a, b in zip(NAMES, got, want, strict=True):
        assert (a is None) == (b is None), name
        if b is not None:
            errors[name] = ((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0)).item()
    return errors


def _compare(x, do, tol, wanted=(True,) * 6, **kwargs):
    ref = _grads(chunk_loglinear_attention, [a.double() for a in x], do, wanted, **kwargs)
    got = _grads(chunk_loglinear_attention_triton, x, do, wanted, **kwargs)
    assert all(a is None or a.dtype == b.dtype for a, b in zip(got, x))
    errors = _errors(got, ref)
    assert max(errors.values()) < tol, errors


@pytest.mark.parametrize(
    "length, groups, heads, num_levels", [(1, 1, 2, 3), (65, 2, 4, 12), (130, 1, 2, 3), (260, 1, 2, 9)]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_autograd(triton_only, inputs, length, groups, heads, num_levels, dtype):
    x, do = _case(inputs, length, groups, heads, num_levels, dtype, seed=length + num_levels)
    _compare(x, do, F64_TOL if dtype == torch.float64 else F32_TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_documents(triton_only, inputs, dtype):
    """Documents packed with cu_seqlens (lengths 1, 64, 65, 140: one token, a full chunk, a chunk
    plus one, past 128); G = 2 over 4 heads; the levels restart per document."""
    x, do = _case(inputs, 270, 2, 4, 10, dtype, seed=5, batch=1)
    cu = torch.tensor([0, 1, 65, 130, 270], dtype=torch.int32)
    _compare(x, do, F64_TOL if dtype == torch.float64 else F32_TOL, cu_seqlens=cu)


@pytest.mark.parametrize("key_dim, value_dim", [(48, 32), (160, 40)])
def test_bf16_inputs(triton_only, inputs, key_dim, value_dim):
    """q, k, v in bf16 (decay, level weights, beta fp32), as the models run on GPUs: the chunk
    factors W, U, Qt, Pw and the recorded states are bf16 and the scans' and the output's products
    take bf16 operands (the GPU's rounding emulated under the interpreter), the UT inverse stays
    fp32. Tolerance 2e-2 relative to the largest reference value (as for Mamba-2, about five
    roundings of 2^-9). 200 tokens, G = 2 over 4 heads, K = 48 (a masked key tile), and K = 160
    with V = 40 (the reverse scan's value tiles of 32 for half operands above K = 128, the last
    one masked)."""
    x, do = _case(inputs, 200, 2, 4, 10, torch.float64, seed=3, key_dim=key_dim, value_dim=value_dim, batch=1)
    x = [a.to(torch.bfloat16) if i < 3 else a.float() for i, a in enumerate(x)]
    o_ref = chunk_loglinear_attention(*[a.double() for a in x])[0]
    o = chunk_loglinear_attention_triton(*x)[0]
    assert o.dtype == torch.bfloat16
    assert ((o.double() - o_ref).abs().max() / o_ref.abs().max()).item() < 2e-2
    _compare(x, do, 2e-2)


@pytest.mark.parametrize("key_dim, value_dim", [(24, 80), (96, 80), (160, 40)])
def test_masked_tiles_and_partial_gradients(triton_only, inputs, key_dim, value_dim):
    """Heads that fill neither their tiles nor their last value tile (64 wide): K = 24 (one key
    tile), 96 (two key tiles of 64), 160 (three, and the reverse scan's narrow value tiles of
    K > 128); V = 80 (two value tiles), 40. Only some inputs need gradients."""
    x, do = _case(inputs, 100, 1, 2, 10, torch.float64, seed=11, key_dim=key_dim, value_dim=value_dim, batch=1)
    _compare(x, do, F64_TOL, wanted=(False, True, False, True, False, True))


def test_switch_routes_to_recomputation(monkeypatch, inputs):
    """HF_LOGLINEAR_TRITON_BACKWARD=0 sends the delta rule through the recomputation too."""
    monkeypatch.setenv("HF_LOGLINEAR_TRITON_BACKWARD", "0")

    def fail(*args, **kwargs):
        raise AssertionError("the Triton backward ran although it is switched off")

    monkeypatch.setattr(chunk_triton, "_backward_delta", fail)
    x, do = _case(inputs, 70, 1, 2, 5, torch.float64, seed=3, batch=1)
    errors = _errors(_grads(chunk_loglinear_attention_triton, x, do), _grads(chunk_loglinear_attention, x, do))
    assert max(errors.values()) < F64_TOL, errors
