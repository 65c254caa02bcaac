"""Triton backward of log-linear Mamba-2 (``chunk_bwd_triton``) under TRITON_INTERPRET=1 against
autograd through the torch chunked form in float64.

The torch recomputation the backward falls back to is patched out, so these tests fail if the
Triton backward is not the one that ran. Shapes cross chunk (64) and power-of-two boundaries;
L = 9 at 260 tokens makes the capped top level close a window of two chunks (top_exp = 1).
"""
import pytest
import torch

from hf_loglinear.kernels import chunk_triton
from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.chunk_triton import chunk_loglinear_attention_triton

NAMES = ("dq", "dk", "dv", "dg", "dlambda")


def _inputs(length, groups, heads, num_levels, dtype, seed, key_dim=16, value_dim=16, batch=2):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q = rand(batch, length, groups, key_dim) * 0.3
    k = rand(batch, length, groups, key_dim) * 0.3
    v = rand(batch, length, heads, value_dim)
    g = -torch.rand(batch, length, heads, generator=gen, dtype=torch.float64) * 0.2
    lam = torch.rand(batch, length, heads, num_levels, generator=gen, dtype=torch.float64)
    do = rand(batch, length, heads, value_dim)
    return [x.to(dtype) for x in (q, k, v, g, lam)], do


def _grads(fn, x, do, wanted):
    leaves = [a.detach().clone().requires_grad_(need) for a, need in zip(x, wanted)]
    o, _ = fn(*leaves)
    (o.double() * do).sum().backward()
    return [a.grad for a in leaves]


def _no_recompute(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the torch recomputation ran instead of the Triton backward")

    monkeypatch.setattr(chunk_triton, "chunk_loglinear_attention", fail)


def _check(got, want, tol):
    for name, a, b in zip(NAMES, got, want):
        if b is None:
            assert a is None, name
            continue
        # dg of a one-token sequence is exactly 0 in theory; compare with an absolute floor
        err = ((a.double() - b).abs().max() / b.abs().max().clamp_min(1.0)).item()
        assert err < tol, f"{name}: {err:.2e}"


@pytest.mark.parametrize(
    "length, groups, heads, num_levels",
    [(1, 1, 2, 3), (65, 2, 4, 12), (130, 1, 3, 1), (130, 2, 2, 3), (130, 1, 2, 12), (260, 1, 2, 9)],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradients_match_autograd(monkeypatch, length, groups, heads, num_levels, dtype):
    x, do = _inputs(length, groups, heads, num_levels, dtype, seed=length + num_levels)
    ref = _grads(chunk_loglinear_attention, [a.double() for a in x], do, [True] * 5)
    _no_recompute(monkeypatch)
    got = _grads(chunk_loglinear_attention_triton, x, do, [True] * 5)
    assert all(a.dtype == dtype for a in got)
    _check(got, ref, 1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_packed_documents(monkeypatch, dtype):
    """Documents packed with cu_seqlens (lengths 1, 64, 65, 140: one token, a full chunk, a chunk
    plus one, past 128); G = 2 over 4 heads; every gradient, dg restarting per document."""
    x, do = _inputs(270, 2, 4, 10, dtype, seed=5, batch=1)
    cu = torch.tensor([0, 1, 65, 130, 270], dtype=torch.int32)
    ref = _grads(lambda *a: chunk_loglinear_attention(*a, cu_seqlens=cu), [a.double() for a in x], do, [True] * 5)
    _no_recompute(monkeypatch)
    got = _grads(lambda *a: chunk_loglinear_attention_triton(*a, cu_seqlens=cu), x, do, [True] * 5)
    _check(got, ref, 1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize(
    "docs, num_levels",
    [((256,), 9), ((513,), 10), ((513,), 11), ((600,), 14), ((100, 513), 10)],
)
def test_bucket_edges(monkeypatch, docs, num_levels):
    """The reverse scan's one gradient per sum of source chunks (``levels.tl_scan_source``) at the
    bucket edges: 4 chunks with top_exp = 1 (the row ends on a full top bucket, nothing reads its
    sum); 9 chunks, one past a power of two, with the top capped at windows of 4 and 8 (a last top
    bucket of one chunk; level buckets whose sources end the row and have no reader); 10 chunks
    with 14 levels (four scans below a top no chunk reads) and a length not a multiple of 64; a
    short and a long document packed. float64, G = 1, 2 heads."""
    x, do = _inputs(sum(docs), 1, 2, num_levels, torch.float64, seed=sum(docs) + num_levels, batch=1)
    cu = torch.tensor([0, *torch.tensor(docs).cumsum(0).tolist()], dtype=torch.int32) if len(docs) > 1 else None
    ref = _grads(lambda *a: chunk_loglinear_attention(*a, cu_seqlens=cu), x, do, [True] * 5)
    _no_recompute(monkeypatch)
    got = _grads(lambda *a: chunk_loglinear_attention_triton(*a, cu_seqlens=cu), x, do, [True] * 5)
    _check(got, ref, 1e-12)


def test_masked_tiles_and_partial_gradients(monkeypatch):
    """K and V not powers of two, V over two value tiles; only some inputs need gradients."""
    x, do = _inputs(100, 1, 2, 10, torch.float64, seed=11, key_dim=24, value_dim=80, batch=1)
    wanted = [False, True, True, False, True]
    ref = _grads(chunk_loglinear_attention, x, do, wanted)
    _no_recompute(monkeypatch)
    got = _grads(chunk_loglinear_attention_triton, x, do, wanted)
    _check(got, ref, 1e-12)


@pytest.mark.parametrize("value_tile", [16, 32])
def test_chunk_gradient_takes_its_own_value_tile(monkeypatch, value_tile):
    """``chunk_triton._grad_tiles`` (what ``benchmarks/sweep_tiles.py grad`` varies): the chunk
    gradient kernel walks the value head in its own tile (16 or 32 over V = 48, the last tile
    masked), the reverse scan, which takes the readout's gradient, in its one masked tile of 64."""
    x, do = _inputs(150, 1, 2, 10, torch.float64, seed=12, value_dim=48, batch=1)
    ref = _grads(chunk_loglinear_attention, x, do, [True] * 5)
    _no_recompute(monkeypatch)
    monkeypatch.setattr(chunk_triton, "_grad_tiles", lambda value_dim, dot: (value_tile, dict(num_warps=4)))
    got = _grads(chunk_loglinear_attention_triton, x, do, [True] * 5)
    _check(got, ref, 1e-12)


def test_reverse_scan_in_value_tiles(monkeypatch):
    """The reverse level scan (and the recomputing forward scan) in value tiles of 16 over V = 24
    (the last one masked), K = 40 on a 64-wide key tile: ``chunk_triton._scan_tiles``."""
    x, do = _inputs(300, 1, 2, 11, torch.float64, seed=13, key_dim=40, value_dim=24, batch=1)
    ref = _grads(chunk_loglinear_attention, x, do, [True] * 5)
    _no_recompute(monkeypatch)
    monkeypatch.setattr(chunk_triton, "_scan_tiles", lambda value_dim: (16, {}))
    got = _grads(chunk_loglinear_attention_triton, x, do, [True] * 5)
    _check(got, ref, 1e-12)


def test_readout_gradient_from_value_tiles_in_packed_rows(monkeypatch):
    """The readout's share of dq, dlambda and dg, which every program of the reverse scan (level,
    value tile) adds atomically: documents of 70, 131 and 65 tokens packed (rows of unequal
    length, none a multiple of 64), G = 1 over 2 heads (dq shared by the group), K = 24 on a
    32-wide key tile and V = 24 in tiles of 16 (the last one masked)."""
    x, do = _inputs(266, 1, 2, 10, torch.float64, seed=14, key_dim=24, value_dim=24, batch=1)
    cu = torch.tensor([0, 70, 201, 266], dtype=torch.int32)
    ref = _grads(lambda *a: chunk_loglinear_attention(*a, cu_seqlens=cu), x, do, [True] * 5)
    _no_recompute(monkeypatch)
    monkeypatch.setattr(chunk_triton, "_scan_tiles", lambda value_dim: (16, {}))
    got = _grads(lambda *a: chunk_loglinear_attention_triton(*a, cu_seqlens=cu), x, do, [True] * 5)
    _check(got, ref, 1e-12)


def test_bf16_inputs(monkeypatch):
    """q, k, v in bf16 (decay and level weights fp32), as the models run on GPUs: products take
    bf16 operands (``scan_triton.mma``, the GPU's rounding emulated under the interpreter) and
    the recorded states and o are bf16. Tolerance 2e-2 relative to the largest reference value:
    about five roundings of 2^-9; dg, a reverse sum along the row of q.dq - k.dk, is the largest
    on the H200 (1.2e-2 at T = 2048), dv here (7e-3). G = 2 over 4 heads, 200 tokens."""
    x, do = _inputs(200, 2, 4, 10, torch.float64, seed=7, key_dim=32, value_dim=32, batch=1)
    x = [a.to(torch.bfloat16) if i < 3 else a.float() for i, a in enumerate(x)]
    outs = []
    for fn, cast in ((chunk_loglinear_attention, lambda a: a.double()), (chunk_loglinear_attention_triton, lambda a: a)):
        leaves = [cast(a).detach().requires_grad_() for a in x]
        o, _ = fn(*leaves)
        (o.double() * do).sum().backward()
        outs.append([o] + [a.grad for a in leaves])
        _no_recompute(monkeypatch)
    (o_ref, *ref), (o, *got) = outs
    assert o.dtype == torch.bfloat16 and [a.dtype for a in got] == [a.dtype for a in x]
    assert ((o.double() - o_ref).abs().max() / o_ref.abs().max()).item() < 2e-2
    _check(got, ref, 2e-2)


def test_other_cases_still_recompute():
    """Final-state output takes the recomputation path and stays correct (with a final-state cotangent)."""
    x, do = _inputs(70, 1, 2, 5, torch.float64, seed=2)
    grads = []
    for fn in (chunk_loglinear_attention_triton, chunk_loglinear_attention):
        leaves = [a.clone().requires_grad_() for a in x]
        o, state = fn(*leaves, output_final_state=True)
        ((o * do).sum() + state.levels.square().sum()).backward()
        grads.append([a.grad for a in leaves])
    _check(grads[0], grads[1], 1e-12)


def test_switch_routes_the_dense_case_to_recomputation(monkeypatch):
    """HF_LOGLINEAR_TRITON_BACKWARD=0 routes even the dense case through the recomputation, with
    the same gradients; unset, the Triton backward is the default."""
    monkeypatch.setenv("HF_LOGLINEAR_TRITON_BACKWARD", "0")

    def fail(*args, **kwargs):
        raise AssertionError("the Triton backward ran although it is switched off")

    monkeypatch.setattr(chunk_triton, "_backward_scalar", fail)
    x, do = _inputs(70, 1, 2, 5, torch.float64, seed=3)
    wanted = [True] * 5
    _check(_grads(chunk_loglinear_attention_triton, x, do, wanted), _grads(chunk_loglinear_attention, x, do, wanted), 1e-12)
    monkeypatch.delenv("HF_LOGLINEAR_TRITON_BACKWARD")
    assert chunk_triton._triton_backward_enabled()
