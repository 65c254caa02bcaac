"""Triton whole-sequence kernels under TRITON_INTERPRET=1 against the torch forms (both variants)."""
import pytest
import torch

from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.chunk_triton import chunk_loglinear_attention_triton
from hf_loglinear.kernels.scan_triton import key_split
from hf_loglinear.ops import LevelState, loglinear_attention


def _inputs(batch, length, groups, heads, key_dim, value_dim, num_levels, delta, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    q = rand(batch, length, groups, key_dim)
    k = torch.nn.functional.normalize(rand(batch, length, groups, key_dim), dim=-1)
    v = rand(batch, length, heads, value_dim)
    g = -torch.rand(batch, length, heads, generator=gen, dtype=dtype) * 0.2
    lam = torch.rand(batch, length, heads, num_levels, generator=gen, dtype=dtype)
    beta = torch.rand(batch, length, heads, generator=gen, dtype=dtype) if delta else None
    return [q, k, v, g, lam, beta]


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize(
    "length, groups, num_levels, dtype",
    [(1, 1, 4, torch.float64), (65, 2, 12, torch.float64), (200, 1, 3, torch.float32), (128, 2, 1, torch.float32)],
)
def test_dense_matches_torch(delta, length, groups, num_levels, dtype):
    x = _inputs(2, length, groups, 4, 16, 24, num_levels, delta, dtype, seed=length)
    o, state = chunk_loglinear_attention_triton(*x, output_final_state=True)
    ref = [a if a is None else a.double() for a in x]
    o_ref, state_ref = chunk_loglinear_attention(*ref, output_final_state=True)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert o.dtype == dtype and state.levels.dtype == dtype
    assert _rel(o.double(), o_ref) < tol
    assert _rel(state.levels.double(), state_ref.levels) < tol
    assert torch.equal(state.position, state_ref.position)


@pytest.mark.parametrize("delta", [False, True])
def test_varlen_with_initial_state(delta):
    """Packed sequences continuing from prefixes (aligned, unaligned, empty, far positions)."""
    num_levels, heads = 20, 4
    starts = torch.tensor([0, 64, 77, (1 << 40) + 3])
    prefix = [_inputs(1, max(1, int(s) % 4096), 2, heads, 16, 16, num_levels, delta, torch.float64, seed=i) for i, s in enumerate(starts)]
    levels = []
    for s, p in zip(starts.tolist(), prefix):
        init = LevelState.zeros(1, heads, num_levels, 16, 16)
        init.levels = init.levels.double()
        init.position = torch.tensor([s - p[0].shape[1]]) if s else torch.tensor([0])
        _, st = chunk_loglinear_attention(*p, initial_state=init, output_final_state=True)
        levels.append(st.levels if s else torch.zeros_like(st.levels))
    init = LevelState(torch.cat(levels), starts)
    x = _inputs(1, 300, 2, heads, 16, 16, num_levels, delta, torch.float64, seed=7)
    cu = torch.tensor([0, 100, 100, 230, 300])
    o, state = chunk_loglinear_attention_triton(*x, cu_seqlens=cu, initial_state=init, output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*x, cu_seqlens=cu, initial_state=init, output_final_state=True)
    assert _rel(o, o_ref) < 1e-10
    assert _rel(state.levels, state_ref.levels) < 1e-10
    assert torch.equal(state.position, state_ref.position)


def test_scalar_scans_in_value_tiles(monkeypatch):
    """The scalar-decay level scans over value tiles of 16 across V = 24 (the last one masked) and
    K = 40 on a 64-wide key tile, from an initial state, with a far position and packed rows."""
    from hf_loglinear.kernels import chunk_triton

    monkeypatch.setattr(chunk_triton, "_scan_tiles", lambda value_dim: (16, {}))
    x = _inputs(1, 300, 1, 2, 40, 24, 14, False, torch.float64, seed=13)
    _, init = chunk_loglinear_attention(*_inputs(2, 77, 1, 2, 40, 24, 14, False, torch.float64, seed=14),
                                        output_final_state=True)
    init.position[1] += 1 << 30
    cu = torch.tensor([0, 130, 300])
    o, state = chunk_loglinear_attention_triton(*x, cu_seqlens=cu, initial_state=init, output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*x, cu_seqlens=cu, initial_state=init, output_final_state=True)
    assert _rel(o, o_ref) < 1e-10 and _rel(state.levels, state_ref.levels) < 1e-10


def test_delta_scan_key_tiles():
    """K = 192 (the authors' key size): the delta rule's scan and readout on a 256-wide key tile
    a quarter masked, from an initial state."""
    x = _inputs(1, 150, 1, 2, 192, 16, 8, True, torch.float64, seed=11)
    _, init = chunk_loglinear_attention(*_inputs(1, 90, 1, 2, 192, 16, 8, True, torch.float64, seed=12), output_final_state=True)
    o, state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*x, initial_state=init, output_final_state=True)
    assert _rel(o, o_ref) < 1e-10 and _rel(state.levels, state_ref.levels) < 1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("key_dim", [192, 100])
def test_delta_scan_padded(key_dim, dtype, monkeypatch):
    """The delta rule's scans on a state held as two key tiles (``key_split``), k and W read
    as wide as both, zero-padded there by ``ut_factors_kernel``: K = 192 as 128 + 64 (no pad, the
    inputs' keys) and K = 100 as 64 + 64, G = 1 over 2 heads, V = 24 (a masked
    value tile). Three documents packed in a row, continuing from initial states at an unaligned
    far position (5000: 290 tokens over 5 chunks), an unaligned (90) and an aligned one (128);
    L = 9 caps the top at windows of 2 chunks (the bucket scan). Then the same 390 tokens as a
    dense row without one (prefix states). bf16 inputs (q, k, v; decay, level weights, beta fp32)
    within 2e-2 of the largest reference value, as the delta rule's other bf16 test; fp32 within
    1e-5. The padded keys must equal the inputs' and the pads of k and W be zero."""
    from hf_loglinear.kernels import chunk_triton

    compute, padded = chunk_triton._DeltaFactors.compute, []

    def spy(rows, *args):
        f = compute(rows, *args)
        padded.append((f.k.shape[-1], f.w.shape[-1], torch.equal(f.k[..., :key_dim], rows.k),
                       bool((f.k[..., key_dim:] == 0).all() and (f.w[..., key_dim:] == 0).all())))
        return f

    monkeypatch.setattr(chunk_triton._DeltaFactors, "compute", spy)
    num_levels, heads, value_dim = 9, 2, 24
    levels, starts = [], []
    for seed, (start, length) in enumerate([(4700, 300), (0, 90), (0, 128)]):
        init = LevelState(torch.zeros(1, heads, num_levels, key_dim, value_dim, dtype=torch.float64), torch.tensor([start]))
        prefix = _inputs(1, length, 1, heads, key_dim, value_dim, num_levels, True, torch.float64, seed=30 + seed)
        _, init = chunk_loglinear_attention(*prefix, initial_state=init, output_final_state=True)
        levels.append(init.levels)
        starts.append(start + length)
    levels, starts = torch.cat(levels).float(), torch.tensor(starts)  # a model's state: fp32
    x = _inputs(1, 390, 1, heads, key_dim, value_dim, num_levels, True, torch.float64, seed=key_dim)
    x = [a.to(dtype) if i < 3 else a.float() for i, a in enumerate(x)]
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    packed = dict(cu_seqlens=torch.tensor([0, 290, 360, 390]))
    for init, init_ref, kwargs in [(LevelState(levels, starts), LevelState(levels.double(), starts), packed), (None, None, {})]:
        o, state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True, **kwargs)
        o_ref, state_ref = chunk_loglinear_attention(*[a.double() for a in x], initial_state=init_ref,
                                                     output_final_state=True, **kwargs)
        assert o.dtype == dtype
        assert _rel(o.double(), o_ref) < tol and _rel(state.levels.double(), state_ref.levels) < tol
    width = sum(key_split(key_dim))  # 128 + 64: no pad at 192; 64 + 64 at 100
    assert width == {192: 192, 100: 128}[key_dim]
    assert padded == [(width, width, True, True)] * 2


def test_delta_prefix_output_wide_value_tiles():
    """The delta rule's prefix path with half operands reads values in tiles of 128 at 4 warps
    (``_output_tiles``): V = 200 is one whole tile and a masked one. Two rows of 150 tokens (past
    128, ending mid-chunk), bf16 inputs within 2e-2 of the largest float64 reference value."""
    import triton.language as tl

    from hf_loglinear.kernels import chunk_triton

    assert chunk_triton._output_tiles(tl.bfloat16, {"V": 200, "num_warps": 8}, True) == (128, 4)
    x = _inputs(2, 150, 1, 2, 64, 200, 9, True, torch.float64, seed=11)
    o, state = chunk_loglinear_attention_triton(*[a.to(torch.bfloat16) if i < 3 else a.float() for i, a in enumerate(x)],
                                               output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*x, output_final_state=True)
    assert _rel(o.double(), o_ref) < 2e-2 and _rel(state.levels.double(), state_ref.levels) < 2e-2


@pytest.mark.parametrize("delta", [False, True])
def test_gradients_match_reference(delta):
    x = _inputs(1, 70, 1, 2, 16, 16, 9, delta, torch.float64, seed=3)
    init = LevelState(torch.zeros(1, 2, 9, 16, 16, dtype=torch.float64), torch.tensor([0]))
    _, init = chunk_loglinear_attention(*_inputs(1, 130, 1, 2, 16, 16, 9, delta, torch.float64, seed=4), output_final_state=True)
    grads = []
    for fn in (chunk_loglinear_attention_triton, chunk_loglinear_attention):
        leaves = [a if a is None else a.clone().requires_grad_() for a in x]
        start = LevelState(init.levels.clone().requires_grad_(), init.position.clone())
        o, st = fn(*leaves, initial_state=start, output_final_state=True)
        (o.square().sum() + st.levels.square().sum()).backward()
        grads.append([a.grad for a in leaves if a is not None] + [start.levels.grad])
    for got, want in zip(*grads):
        assert _rel(got, want) < 1e-10


@pytest.mark.parametrize("delta", [False, True])
def test_ops_backend_triton(delta):
    x = _inputs(2, 70, 1, 2, 16, 16, 5, delta, torch.float32, seed=5)
    o, _ = loglinear_attention(*x[:5], beta=x[5], backend="triton")
    o_ref, _ = loglinear_attention(*[a if a is None else a.double() for a in x[:5]], beta=None if x[5] is None else x[5].double(), backend="reference")
    assert _rel(o.double(), o_ref) < 1e-5


@pytest.mark.parametrize("num_levels", [9, 10])
def test_delta_top_windows(num_levels):
    """The delta rule over 7 chunks with the top's windows of 2 (L = 9) and 4 chunks (L = 10): the
    top's closed part is empty until its first window closes and is read after it; its pending
    sum restarts with every window. Fresh, and from an initial state at position 5000, where the
    closed part starts full."""
    x = _inputs(1, 64 * 6 + 5, 1, 2, 16, 16, num_levels, True, torch.float64, seed=num_levels)
    prefix = _inputs(1, 300, 1, 2, 16, 16, num_levels, True, torch.float64, seed=2)
    init = LevelState(torch.zeros(1, 2, num_levels, 16, 16, dtype=torch.float64), torch.tensor([4700]))
    _, init = chunk_loglinear_attention(*prefix, initial_state=init, output_final_state=True)
    for start in (None, init):
        o, state = chunk_loglinear_attention_triton(*x, initial_state=start, output_final_state=True)
        o_ref, state_ref = chunk_loglinear_attention(*x, initial_state=start, output_final_state=True)
        assert _rel(o, o_ref) < 1e-10 and _rel(state.levels, state_ref.levels) < 1e-10


@pytest.mark.parametrize("num_levels", [9, 14])
def test_long_rows_share_recorded_states(num_levels):
    """Scalar decay over 38 chunks, where one recorded state serves a whole run of reading chunks
    (decayed to each): continuing from a prefix that ends mid-run at position 5000 with the
    final state, and the Triton backward of a fresh dense run. L = 9 caps the top at 2-chunk
    buckets; L = 14 leaves 7 inter-chunk scans."""
    length = 64 * 37 + 5
    x = _inputs(1, length, 1, 2, 8, 8, num_levels, False, torch.float64, seed=num_levels)
    prefix = _inputs(1, 300, 1, 2, 8, 8, num_levels, False, torch.float64, seed=1)
    init = LevelState(torch.zeros(1, 2, num_levels, 8, 8, dtype=torch.float64), torch.tensor([4700]))
    _, init = chunk_loglinear_attention(*prefix, initial_state=init, output_final_state=True)
    o, state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*x, initial_state=init, output_final_state=True)
    assert _rel(o, o_ref) < 1e-10 and _rel(state.levels, state_ref.levels) < 1e-10

    grads = []
    for fn in (chunk_loglinear_attention_triton, chunk_loglinear_attention):
        leaves = [a.clone().requires_grad_() for a in x[:5]]
        fn(*leaves)[0].square().sum().backward()
        grads.append([a.grad for a in leaves])
    for got, want in zip(*grads):
        assert _rel(got, want) < 1e-10


@pytest.mark.parametrize("delta", [False, True])
def test_fp32_products_follow_torch_matmul_precision(delta, monkeypatch):
    """fp32 inputs multiply in IEEE fp32 by default and in tf32 once torch's float32 matmul
    precision is "high" (what torch.set_float32_matmul_precision / Trainer(tf32=True) set); the
    kernels compile and run either way (the interpreter computes tf32 products exactly)."""
    from hf_loglinear.kernels import chunk_triton

    assert chunk_triton._consts(torch.float32, 4, 1, 16, 24, 64)["PREC"] == "ieee"
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert chunk_triton._consts(torch.float32, 4, 1, 16, 24, 64)["PREC"] == "tf32"
    assert chunk_triton._consts(torch.float64, 4, 1, 16, 24, 64)["PREC"] == "ieee"
    x = _inputs(1, 70, 1, 4, 16, 24, 5, delta, torch.float32, seed=3)
    o, _ = chunk_loglinear_attention_triton(*x)
    o_ref, _ = chunk_loglinear_attention(*[a if a is None else a.double() for a in x])
    assert _rel(o.double(), o_ref) < 1e-5


def _spy_prefix(monkeypatch):
    """Count the calls of the delta rule's prefix-state scan (``chunk_triton._prefix_delta_scan``)."""
    from hf_loglinear.kernels import chunk_triton

    calls, prefix = [], chunk_triton._prefix_delta_scan
    monkeypatch.setattr(chunk_triton, "_prefix_delta_scan", lambda *a: calls.append(1) or prefix(*a))
    return calls


@pytest.mark.parametrize(
    "length, num_levels, groups",
    [(1, 4, 1), (65, 12, 2), (128, 1, 1), (64 * 7 + 5, 9, 1), (64 * 7 + 5, 10, 1), (64 * 13 + 7, 14, 1), (64 * 37 + 5, 9, 1)],
)
def test_delta_prefix_states(length, num_levels, groups, monkeypatch):
    """The delta rule's forward without an initial state records prefix states (plain
    recurrence, then each boundary pushed to its readers), weights them by level differences
    and takes the final level states as their differences: one chunk, a non-multiple length,
    L = 1 (the plain recurrence alone), the top capped at windows of 2 and 4 chunks over 8
    chunks, 14 chunks uncapped, 38 chunks capped (windows closing mid-row), G = 2; float64
    against the torch chunked form, with and without the final state (the interpreter runs
    programs in order, so no boundary ever waits for its recurrence)."""
    calls = _spy_prefix(monkeypatch)
    x = _inputs(2, length, groups, 4, 16, 24, num_levels, True, torch.float64, seed=length + num_levels)
    o_ref, state_ref = chunk_loglinear_attention(*x, output_final_state=True)
    o, state = chunk_loglinear_attention_triton(*x, output_final_state=True)
    assert _rel(o, o_ref) < 1e-10 and _rel(state.levels, state_ref.levels) < 1e-10
    assert torch.equal(state.position, state_ref.position)
    o, state = chunk_loglinear_attention_triton(*x)
    assert state is None and calls == [1, 1] and _rel(o, o_ref) < 1e-10


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_delta_prefix_states_packed_wide_keys(dtype, monkeypatch):
    """Prefix states at K = 192 (k and W padded to 256) over packed documents of unequal lengths
    (an empty one, one crossing 128 and 256 tokens), L = 11, V = 24, output and final states;
    bf16 within 2e-2 of the
    largest reference value (the delta rule's bf16 tolerance), fp32 within 1e-5."""
    calls = _spy_prefix(monkeypatch)
    x = _inputs(1, 500, 1, 2, 192, 24, 11, True, torch.float64, seed=17)
    x = [a.to(dtype) if i < 3 else a.float() for i, a in enumerate(x)]
    cu = torch.tensor([0, 70, 70, 330, 500])
    o, state = chunk_loglinear_attention_triton(*x, cu_seqlens=cu, output_final_state=True)
    o_ref, state_ref = chunk_loglinear_attention(*[a.double() for a in x], cu_seqlens=cu, output_final_state=True)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert calls == [1] and o.dtype == dtype
    assert _rel(o.double(), o_ref) < tol and _rel(state.levels.double(), state_ref.levels) < tol
