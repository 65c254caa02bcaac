"""Long delta-rule inputs in segments (``kernels/segments.py``) under TRITON_INTERPRET=1, against
the float64 torch chunked form run in one pass: a budget forced down cuts tiny inputs the way
1M tokens are cut on a GPU."""
import pytest
import torch

from hf_loglinear.kernels import chunk_triton, segments
from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.chunk_triton import chunk_loglinear_attention_triton
from hf_loglinear.ops import LevelState

NAMES = ("q", "k", "v", "g", "level_weights", "beta")


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _segment_inputs(inputs, start, batch=2, groups=1, heads=2, num_levels=10):
    """T = 300 delta-rule inputs in float64 (K = 24, V = 16: three inter-chunk scans at L = 10),
    and None or level states at positions ``start`` from each row's own prefix."""
    x = [inputs(batch, 300, groups, heads, 24, 16, num_levels, delta=True, seed=40)[n] for n in NAMES]
    if start is None:
        return x, None
    prefixes = [inputs(1, n, groups, heads, 24, 16, num_levels, delta=True, seed=41 + n) for n in start]
    levels = [chunk_loglinear_attention(**p, output_final_state=True)[1].levels for p in prefixes]
    return x, LevelState(torch.cat(levels), torch.tensor(start))


def _count_segments(monkeypatch, budget):
    """Set ``DELTA_STATE_BUDGET`` and record the length of every Triton forward."""
    forward, seen = chunk_triton._forward, []

    def spy(q, *args):
        seen.append(q.shape[1])
        return forward(q, *args)

    monkeypatch.setattr(chunk_triton, "_forward", spy)
    monkeypatch.setattr(segments, "DELTA_STATE_BUDGET", budget)
    return seen


def _grads(fn, x, init, final, seed=7):
    """Output, final state (if ``final``) and the gradients of every input and initial level
    state of a random loss."""
    gen = torch.Generator().manual_seed(seed)
    leaves = [a.clone().requires_grad_() for a in x]
    state = None if init is None else LevelState(init.levels.clone().requires_grad_(), init.position)
    o, last = fn(*leaves, initial_state=state, output_final_state=final)
    outs = [o] + ([last.levels] if final else [])
    wrt = leaves + ([] if state is None else [state.levels])
    cotangents = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in outs]
    return [*outs, *torch.autograd.grad(outs, wrt, cotangents)]


@pytest.mark.parametrize("start, cut", [
    (None, [128, 128, 44]),
    ((90, 200), [128, 128, 44]),  # rows from different positions: plain cuts
    ((90, 90), [2, 4, 32, 128, 128, 6]),  # one position: pieces aligned to their power-of-two size
])
def test_forward_in_segments(start, cut, inputs, monkeypatch):
    """Without gradients, a budget of two chunks' recorded states (3 scans x 2 x 2 x 24 x 16
    float64 values) cuts T = 300 into segments of at most 128 tokens (crossing 256; the last not a
    multiple of the chunk), from nothing and from initial states at unaligned positions. Output
    and final state equal one pass and the float64 reference within 1e-10."""
    x, init = _segment_inputs(inputs, start)
    whole, whole_state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True)
    ref, ref_state = chunk_loglinear_attention(*x, initial_state=init, output_final_state=True)
    seen = _count_segments(monkeypatch, 2 * (3 * 2 * 2 * 24 * 16 * 8))
    o, state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True)
    assert seen == cut
    assert _rel(o, whole) < 1e-10 and _rel(o, ref) < 1e-10
    assert _rel(state.levels, whole_state.levels) < 1e-10 and _rel(state.levels, ref_state.levels) < 1e-10
    assert torch.equal(state.position, ref_state.position)
    assert chunk_loglinear_attention_triton(*x, initial_state=init)[1] is None


def test_forward_in_segments_bf16(inputs, monkeypatch):
    """The same cut from states at 90 / 200 with bf16 q, k, v (decay, level weights, beta and the
    level states fp32), as a model's prefill runs it: the recorded states bf16 (a budget of two
    chunks' is 3 x 2 x 2 x 24 x 16 x 2 bytes each), the level state handed between segments fp32.
    Output and final state within 2e-2 of the float64 form on the same rounded inputs (the delta
    rule's other bf16 tests' tolerance; measured 1.1e-2 / 3.3e-3, one pass 1.1e-2 / 4.1e-3: the
    cut adds no error)."""
    x, init = _segment_inputs(inputs, (90, 200))
    x = [a.to(torch.bfloat16) if i < 3 else a.float() for i, a in enumerate(x)]
    init = LevelState(init.levels.float(), init.position)
    seen = _count_segments(monkeypatch, 2 * (3 * 2 * 2 * 24 * 16 * 2))
    o, state = chunk_loglinear_attention_triton(*x, initial_state=init, output_final_state=True)
    ref, ref_state = chunk_loglinear_attention(*[a.double() for a in x], initial_state=LevelState(init.levels.double(), init.position),
                                               output_final_state=True)
    assert seen == [128, 128, 44] and o.dtype == torch.bfloat16
    assert _rel(o.double(), ref) < 2e-2 and _rel(state.levels.double(), ref_state.levels) < 2e-2


def test_gradients_through_recomputed_segments(inputs, monkeypatch):
    """With gradients from initial states at different positions (90, 200), segments run through
    the differentiable Triton forward from the last one's state and recompute through torch in
    the backward: sized for that (``RECOMPUTE_STATES_PER_CHUNK`` level states of 10 levels a
    chunk, over a budget of 2 chunks' recorded states: one chunk a segment, 4 x 64 + 44). Output,
    final state and the gradients of every input and of the initial levels, through the chain of
    segment states, equal the float64 torch form's within 1e-10."""
    x, init = _segment_inputs(inputs, (90, 200))
    ref = _grads(chunk_loglinear_attention, x, init, True)
    seen = _count_segments(monkeypatch, 2 * (3 * 2 * 2 * 24 * 16 * 8))
    got = _grads(chunk_loglinear_attention_triton, x, init, True)
    assert seen == [64, 64, 64, 64, 44]
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("start", [None, (90, 90), (200, 200)])
def test_training_segments_with_states(start, inputs, monkeypatch):
    """Gradients with the final state asked for, from nothing or from initial states that every
    row shares: pieces aligned to their power-of-two lengths (of at most 64 tokens here, growing
    from an unaligned start) run fresh through the Triton kernels plus ``_carried``, up to the last
    64 tokens, which run from the carried state through the differentiable Triton forward (their
    backward recomputing that chunk through torch). Output, final state and the gradients of
    every input and of the initial levels equal the float64 torch form's within 1e-10."""
    x, init = _segment_inputs(inputs, start)
    ref = _grads(chunk_loglinear_attention, x, init, True)
    seen = _count_segments(monkeypatch, 2 * (3 * 2 * 2 * 24 * 16 * 8))
    got = _grads(chunk_loglinear_attention_triton, x, init, True)
    first = 0 if start is None else start[0]
    ends = [first + sum(seen[: i + 1]) for i in range(len(seen))]
    assert sum(seen) == 300 and seen[-1] == 64
    for n, end in zip(seen[:-1], ends[:-1]):  # every piece but the recomputed tail: aligned
        assert n & (n - 1) == 0 and (end - n) % n == 0 and n <= 64
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("num_levels, groups, budget_chunks, block, cut", [
    (10, 1, 2, 8, [128, 128, 44]),  # levels 8, 9 carried above the segments' own 0 .. 7
    (10, 1, 4, 2, [256, 44]),  # two blocks of two chunks a segment: both tiers of the products
    (4, 2, 2, 8, [128, 128, 44]),  # capped: the carried states share the top level with the segment's own
    (10, 1, 1, 8, [64, 64, 64, 64, 44]),
])
def test_training_segments(num_levels, groups, budget_chunks, block, cut, inputs, monkeypatch):
    """Training from position 0 (gradients, no initial or final state): each power-of-two segment
    runs through the fresh Triton forward and backward, plus the readout and hand-on of the
    carried level states in torch (``segments._carried``, its transition products in blocks of
    ``block`` chunks; run once per segment forward and once more in the backward). B = 2, T = 300
    cut at ``cut`` by a budget of ``budget_chunks`` chunks of the Triton states (``_carried``'s
    own sizing set to nothing), G = 1 and 2 (q / k shared by two heads), L = 10 and L = 4 (capped
    below the segment's own levels). Output and every input's gradient equal the float64 torch
    form in one pass within 1e-10."""
    x, _ = _segment_inputs(inputs, None, groups=groups, heads=2 * groups, num_levels=num_levels)
    ref = _grads(chunk_loglinear_attention, x, None, False)
    monkeypatch.setattr(segments, "_carried_bytes", lambda q, v, n, chunk, acc: 0)
    monkeypatch.setattr(segments, "BLOCK", block)
    carried, calls = segments._carried, []
    monkeypatch.setattr(segments, "_carried", lambda *a: calls.append(a[-5]) or carried(*a))
    seen = _count_segments(monkeypatch, segments.state_bytes(x[0], x[2], num_levels, None, True, budget_chunks, 64))
    got = _grads(chunk_loglinear_attention_triton, x, None, False)
    assert seen == cut
    starts = [sum(cut[:i]) for i in range(len(cut))]
    assert sorted(calls) == sorted(starts * 2)
    for a, b in zip(got, ref):
        assert _rel(a, b) < 1e-10


@pytest.mark.parametrize("n", [1, 2, 5, 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_transition_products(n, reverse):
    """``_products`` (log-depth) and ``_exclusive`` equal the products taken one by one, in the
    order the transitions act, for counts that are and are not powers of two."""
    m = torch.randn(2, n, 3, 3, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    order = range(n - 1, -1, -1) if reverse else range(n)
    inclusive, exclusive, p = [None] * n, [None] * n, eye.expand(2, 3, 3)
    for c in order:
        exclusive[c] = p
        p = p @ m[:, c] if reverse else m[:, c] @ p
        inclusive[c] = p
    got = segments._products(m, reverse=reverse)
    assert torch.allclose(got, torch.stack(inclusive, 1), rtol=1e-12, atol=1e-12)
    assert torch.allclose(segments._exclusive(got, eye, reverse), torch.stack(exclusive, 1), rtol=1e-12, atol=1e-12)


def test_torch_recompute_memory_per_chunk(inputs):
    """What ``RECOMPUTE_STATES_PER_CHUNK`` sizes segments with: the bytes autograd keeps for the
    torch chunked form's backward (the recomputation a segment's backward runs, from a state and
    with the final state out), counted with saved-tensor hooks (each storage once), grow by at most
    that many fp32 level states ([L, K, V] per row and head) per chunk: 512 -> 1024 tokens at
    L = 10, K = 64, V = 128, one head, where the states dominate (7.3 measured; 5.6 before the
    form read every level from a differentiable state)."""

    def saved(length):
        x = {n: t.float().requires_grad_() for n, t in inputs(1, length, 1, 1, 64, 128, 10, delta=True, seed=3).items()}
        init = LevelState(torch.zeros(1, 1, 10, 64, 128, requires_grad=True), torch.tensor([5000]))
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            chunk_loglinear_attention(**x, initial_state=init, output_final_state=True)
        return sum(storages.values())

    per_chunk = (saved(1024) - saved(512)) / 8 / (10 * 64 * 128 * 4)
    assert 6 < per_chunk <= segments.RECOMPUTE_STATES_PER_CHUNK
