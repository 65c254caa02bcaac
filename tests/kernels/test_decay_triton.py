"""The chunk-local cumulative sum kernel (``decay_triton``) under TRITON_INTERPRET=1, against its
torch references and float64 sums, on slots as ``chunk_triton._Rows`` lays them out, in its three
modes: ``decay`` (G and the chunk totals), ``chunk`` (the delta rule's reverse sum within each
chunk) and ``row`` (the scalar backward's reverse sum along a whole row, from heads-major input);
and ``chunk_offsets``, the float64 running sums of chunk totals (its tolerance at its test).

Tolerance. Any order of summing n terms in floating point (sequential, as torch and the
interpreter's numpy do, or the tree of ``tl.cumsum`` on a GPU) is off by at most
(n - 1) u sum |x_i| to first order, u the unit roundoff of the accumulation dtype (2^-24 fp32,
2^-53 float64). The within-chunk sums have n <= C = 64 terms: each is within 63 u times the sum
of the |x| it adds (3.8e-6 of it in fp32) of the exact sum, the bound checked here, elementwise,
with 1% slack for the second-order term. Log decays are <= 0, so for G that mass is |G_t| itself.
A tree's depth over 64 terms is about log2(64) = 6, so on a GPU the error is nearer 6 u; the
sequential bound covers both orders, which is all downstream relies on.
``row``: a slot's sum is its chunk's within-chunk sum (63 u of its mass) plus the float64 sum of
the later chunks' totals (each 63 u of its chunk's mass, then NC float64 additions), rounded once
to the accumulation dtype: within (63 u + NC 2^-53) m_t + u |s_t|, m_t = sum_{s >= t} |x_s|, s_t
the exact sum. The torch reference (and the code before the kernel: torch's fp32 cumsum along
the row) is only bounded by (S - 1) u m_t, S the row's slots; checked too. So the kernel is at
least as accurate as what it replaces, by a factor ~S / 64 in the bound at long rows.
The totals must equal G at each chunk's last slot bit for bit: ``chunk_g`` and G are read together.
"""
import pytest
import torch

from hf_loglinear.kernels.chunk_triton import CHUNK, _Rows
from hf_loglinear.kernels.decay_triton import (
    chunk_decay,
    chunk_decay_torch,
    chunk_offsets,
    chunk_offsets_torch,
    chunk_reverse_cumsum,
    chunk_reverse_cumsum_torch,
    row_reverse_cumsum,
    row_reverse_cumsum_torch,
)

MODES = ("decay", "chunk", "row")
U64 = 2.0**-53


def _slots(batch, length, heads, dtype, cu_seqlens=None, seed=0, signed=False):
    """Slots as ``_Rows`` lays them out, [N, NC * C, H], null slots zero: log decays in [-0.5, 0),
    or (``signed``) per-token gradients like q.dq - k.dk in [-1, 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, length, heads, generator=gen, dtype=torch.float64)
    x = (2 * x - 1 if signed else -0.5 * x).to(dtype)
    return _Rows(x, x, x, x, x, None, cu_seqlens, None, CHUNK).g


def _check_decay(g, acc_dtype):
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


def _check_reverse(mode, x):
    """``chunk`` / ``row`` reverse sums of slots x [N, S, H] (``row`` takes them heads-major)."""
    n, slots, heads = x.shape
    u = torch.finfo(x.dtype).eps / 2

    def rev(y):  # exact (float64) reverse sums of y [N, S, H] in the mode's span
        if mode == "row":
            return y.flip(1).cumsum(1).flip(1)
        return chunk_reverse_cumsum_torch(y, CHUNK)

    if mode == "row":
        arg = x.transpose(1, 2).contiguous()
        out, ref = row_reverse_cumsum(arg, CHUNK), row_reverse_cumsum_torch(arg, CHUNK)
        exact, mass = rev(x.double()), rev(x.double().abs())
        bound = ((CHUNK - 1) * u + slots // CHUNK * U64) * mass + u * exact.abs()
        ref_bound = (slots - 1) * u * mass
    else:
        out, ref = chunk_reverse_cumsum(x, CHUNK), chunk_reverse_cumsum_torch(x, CHUNK)
        exact, mass = rev(x.double()), rev(x.double().abs())
        bound = ref_bound = (CHUNK - 1) * u * mass
    for y in (out, ref):
        assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert ((out.double() - exact).abs() <= 1.01 * bound).all()
    assert ((ref.double() - exact).abs() <= 1.01 * ref_bound).all()


def _check(mode, x):
    if mode == "decay":
        _check_decay(x, x.dtype)
    else:
        _check_reverse(mode, x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("heads", [1, 4, 48, 80])  # one tile of 16; one of 64 (48 masked); two (the second masked)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_rows(mode, dtype, heads):
    """Two rows of 200 tokens: four chunks each, the last one 8 tokens and 56 zero null slots."""
    _check(mode, _slots(2, 200, heads, dtype, seed=heads, signed=mode != "decay"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_rows(mode, dtype):
    """Documents packed with ``cu_seqlens`` (an empty one, one shorter than a chunk, one across
    chunks), each on its own position-aligned row."""
    g = _slots(1, 300, 6, dtype, cu_seqlens=torch.tensor([0, 100, 100, 130, 300]), seed=1, signed=mode != "decay")
    assert g.shape[0] == 4
    _check(mode, g)


@pytest.mark.parametrize("mode", ["chunk", "row"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_long_rows(mode, dtype):
    """41 chunks a row (2577 tokens), 3 heads: the row sum's float64 offsets across many chunks."""
    _check(mode, _slots(2, 40 * CHUNK + 17, 3, dtype, seed=3, signed=True))


def test_half_inputs_accumulate_in_fp32():
    """bf16 log decays are cast to the fp32 accumulator before the first sum, as the reference does."""
    _check_decay(_slots(2, 130, 4, torch.bfloat16, seed=2), torch.float32)


@pytest.mark.parametrize("exclusive", [True, False])
@pytest.mark.parametrize("num_chunks,heads", [(1, 1), (5, 3), (130, 17), (300, 48)])  # 130 / 300: 2 / 3 steps of 128 chunks; 17: two head blocks
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunk_offsets(exclusive, num_chunks, heads, dtype):
    """Float64 running sums of chunk totals [N, NC, H] across the chunks: the scalar forward's
    chunk_g (exclusive) and the row sum's offsets (inclusive). Summing NC terms in float64 in
    any order is within (NC - 1) 2^-53 of their absolute sum of the exact value; the exclusive
    form's subtraction adds one rounding of the result. So kernel and reference are within twice
    (NC + 1) 2^-53 of that mass of each other; a missing carry or a shifted chunk is off by a
    whole total."""
    gen = torch.Generator().manual_seed(num_chunks)
    totals = (-8 * torch.rand(3, num_chunks, heads, generator=gen, dtype=torch.float64)).to(dtype)
    out, ref = chunk_offsets(totals, exclusive), chunk_offsets_torch(totals, exclusive)
    assert out.dtype == ref.dtype == torch.float64 and out.shape == totals.shape and out.is_contiguous()
    mass = totals.double().abs().cumsum(1)
    assert ((out - ref).abs() <= 2 * (num_chunks + 1) * U64 * mass).all()
    if exclusive:
        assert (out[:, 0] == 0).all()
