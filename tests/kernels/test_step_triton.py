"""Triton decode step under TRITON_INTERPRET=1 against the torch recurrence."""
import pytest
import torch

from hf_loglinear import levels as levels_mod
from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.recurrent import recurrent_step
from hf_loglinear.ops import loglinear_attention, loglinear_attention_step


@pytest.mark.parametrize("delta", [False, True])
@pytest.mark.parametrize("num_levels", [1, 4, 12])
def test_step_matches_recurrence(delta, num_levels):
    gen = torch.Generator().manual_seed(num_levels)
    rows, heads, groups, key_dim, value_dim = 3, 4, 2, 24, 20
    rand = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    unit = lambda *s: torch.nn.functional.normalize(rand(*s), dim=-1)  # noqa: E731
    decay = lambda *s: -torch.rand(*s, generator=gen) * 0.2  # noqa: E731
    uniform = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    length = 127  # rows start at different positions: 127 (merges many levels), 0, and 127
    prefix = [rand(rows, length, groups, key_dim), unit(rows, length, groups, key_dim), rand(rows, length, heads, value_dim),
              decay(rows, length, heads), uniform(rows, length, heads, num_levels), uniform(rows, length, heads) if delta else None]
    _, state = chunk_loglinear_attention(*prefix, output_final_state=True)
    state.levels[1] = 0
    state.position[1] = 0
    ref_levels, ref_pos = state.levels.double(), state.position.clone()  # the recurrence in float64
    for _ in range(20):  # 127 -> 147 crosses 128, where levels up to 8 merge
        x = [rand(rows, groups, key_dim), unit(rows, groups, key_dim), rand(rows, heads, value_dim), decay(rows, heads),
             uniform(rows, heads, num_levels), uniform(rows, heads) if delta else None]
        before = state.levels.clone()
        o, state = loglinear_attention_step(state, *x[:5], beta=x[5], backend="triton")
        o_ref, ref_levels = recurrent_step(ref_levels, ref_pos, *[a if a is None else a.double() for a in x[:5]],
                                           beta=None if x[5] is None else x[5].double())
        # fp32 kernel vs float64: 20 steps of fp32 rounding of states of O(10) entries
        assert (o - o_ref).abs().max() <= 1e-5 * o_ref.abs().max()
        levels = state.materialized().levels.double()
        assert (levels - ref_levels).abs().max() <= 1e-5 * ref_levels.abs().max()
        if not delta:  # scalar decay writes level 0 and the merge level only; the rest keep their bytes
            merge = levels_mod.bit_length((ref_pos ^ (ref_pos - 1)).clamp_min(0)).clamp_max(num_levels - 1)
            merge = torch.where(ref_pos > 0, merge, 0)
            lvl = torch.arange(num_levels)[None, :]
            kept = (lvl != 0) & (lvl != merge[:, None])  # [rows, L]
            assert torch.equal(state.levels.transpose(1, 2)[kept], before.transpose(1, 2)[kept])
        ref_pos = ref_pos + 1
        assert torch.equal(state.position, ref_pos)


@pytest.mark.parametrize("delta", [False, True])
def test_prefill_continues_from_stepped_state(delta):
    """Triton steps leave a scaled state (LevelState.log_scale); a chunked forward continuing from
    it, and a torch step after it, equal the same run without the Triton steps."""
    gen = torch.Generator().manual_seed(3)
    rand = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    unit = lambda *s: torch.nn.functional.normalize(rand(*s), dim=-1)  # noqa: E731
    rows, heads, groups, dim, num_levels = 2, 2, 1, 16, 6

    def tokens(length):
        return [rand(rows, length, groups, dim), unit(rows, length, groups, dim), rand(rows, length, heads, dim),
                -torch.rand(rows, length, heads, generator=gen) * 0.3, torch.rand(rows, length, heads, num_levels, generator=gen),
                torch.rand(rows, length, heads, generator=gen) if delta else None]

    prefix, steps, rest = tokens(61), tokens(9), tokens(70)
    _, state = chunk_loglinear_attention(*prefix, output_final_state=True)
    reference = state.clone()
    for i in range(9):
        x = [None if a is None else a[:, i] for a in steps]
        loglinear_attention_step(state, *x[:5], beta=x[5], backend="triton")
        loglinear_attention_step(reference, *x[:5], beta=x[5], backend="torch")
    assert state.log_scale is not None and reference.log_scale is None
    o, final = loglinear_attention(*rest[:5], beta=rest[5], initial_state=state, output_final_state=True, backend="triton")
    o_ref, final_ref = chunk_loglinear_attention(*rest, initial_state=reference, output_final_state=True)
    assert (o - o_ref).abs().max() <= 1e-5 * o_ref.abs().max()
    assert (final.levels - final_ref.levels).abs().max() <= 1e-5 * final_ref.levels.abs().max()
    x = [None if a is None else a[:, 0] for a in rest]
    o, _ = loglinear_attention_step(state, *x[:5], beta=x[5], backend="torch")  # folds the scale in first
    o_ref, _ = loglinear_attention_step(reference, *x[:5], beta=x[5], backend="torch")
    assert (o - o_ref).abs().max() <= 1e-5 * o_ref.abs().max() and not state.log_scale.any()
