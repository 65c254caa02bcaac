"""The chunk-local cumulative log decay kernel (``decay_triton``) under TRITON_INTERPRET=1, against
its torch reference and a float64 cumsum, on slots as ``chunk_triton._Rows`` lays them out.

Tolerance. Any order of summing n terms in floating point (sequential, as torch and the
interpreter's numpy do, or the tree of ``tl.cumsum`` on a GPU) is off by at most
(n - 1) u sum |x_i| to first order, u the unit roundoff. So each G_t of an fp32 chunk of C = 64
slots is within 63 u sum_{s<=t} |g_s| (3.8e-6 of it; u = 2^-24) of the exact sum, the bound
checked here, elementwise, with 1% slack for the second-order term. Log decays are <= 0, so
sum |g_s| is |G_t| itself: the bound is 3.8e-6 relative to the chunk's largest |partial sum|. A
tree's depth over 64 terms is about log2(64) = 6, so on a GPU the error is nearer 6 u; the
sequential bound covers both orders, which is all downstream relies on (the reference cumsum
rounds in its own order too). float64 slots use the float64 bound likewise (63 u, u = 2^-53).
The totals must equal G at each chunk's last slot bit for bit: ``chunk_g`` and G are read together.
"""
import pytest
import torch

from hf_loglinear.kernels.chunk_triton import CHUNK, _Rows
from hf_loglinear.kernels.decay_triton import chunk_decay, chunk_decay_torch


def _slots(batch, length, heads, dtype, cu_seqlens=None, seed=0):
    """Log decays in [-0.5, 0) as ``_Rows`` lays them out: [N, NC * C, H], null slots zero."""
    gen = torch.Generator().manual_seed(seed)
    g = (-0.5 * torch.rand(batch, length, heads, generator=gen, dtype=torch.float64)).to(dtype)
    return _Rows(g, g, g, g, g, None, cu_seqlens, None, CHUNK).g


def _check(g, acc_dtype):
    g_cum, totals = chunk_decay(g, CHUNK, acc_dtype)
    n, slots, heads = g.shape
    assert g_cum.shape == g.shape and totals.shape == (n, slots // CHUNK, heads)
    assert g_cum.dtype == totals.dtype == acc_dtype and g_cum.is_contiguous() and totals.is_contiguous()
    assert torch.equal(totals, g_cum.view(n, -1, CHUNK, heads)[:, :, -1])

    chunks = lambda x: x.double().view(n, -1, CHUNK, heads)  # noqa: E731
    bound = 1.01 * (CHUNK - 1) * torch.finfo(acc_dtype).eps / 2 * chunks(g).abs().cumsum(2)
    exact = chunks(g).cumsum(2)
    ref_cum, ref_totals = chunk_decay_torch(g, CHUNK, acc_dtype)
    assert ref_cum.dtype == ref_totals.dtype == acc_dtype
    assert ((chunks(g_cum) - exact).abs() <= bound).all()
    assert ((chunks(ref_cum) - exact).abs() <= bound).all()
    # Two roundings of the same sum, each within the bound of the exact one.
    assert ((chunks(g_cum) - chunks(ref_cum)).abs() <= 2 * bound).all()
    assert ((ref_totals.double() - exact[:, :, -1]).abs() <= bound[:, :, -1]).all()


@pytest.mark.parametrize("heads", [1, 4, 48, 80])  # one tile of 16; one of 64 (48 masked); two (the second masked)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_rows(dtype, heads):
    """Two rows of 200 tokens: four chunks each, the last one 8 tokens and 56 zero null slots."""
    _check(_slots(2, 200, heads, dtype, seed=heads), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_rows(dtype):
    """Documents packed with ``cu_seqlens`` (an empty one, one shorter than a chunk, one across
    chunks), each on its own position-aligned row."""
    g = _slots(1, 300, 6, dtype, cu_seqlens=torch.tensor([0, 100, 100, 130, 300]), seed=1)
    assert g.shape[0] == 4
    _check(g, dtype)


def test_half_inputs_accumulate_in_fp32():
    """bf16 log decays are cast to the fp32 accumulator before the first sum, as the reference does."""
    _check(_slots(2, 130, 4, torch.bfloat16, seed=2), torch.float32)
