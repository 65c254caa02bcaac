"""Triton decode step under TRITON_INTERPRET=1 against the torch recurrence."""
import pytest
import torch

from hf_loglinear.kernels.chunk import chunk_loglinear_attention
from hf_loglinear.kernels.recurrent import recurrent_step
from hf_loglinear.ops import loglinear_attention_step


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
    ref_levels, ref_pos = state.levels.clone(), state.position.clone()
    for _ in range(3):
        x = [rand(rows, groups, key_dim), unit(rows, groups, key_dim), rand(rows, heads, value_dim), decay(rows, heads),
             uniform(rows, heads, num_levels), uniform(rows, heads) if delta else None]
        o, state = loglinear_attention_step(state, *x[:5], beta=x[5], backend="triton")
        o_ref, ref_levels = recurrent_step(ref_levels, ref_pos, *x[:5], beta=x[5])
        ref_pos = ref_pos + 1
        assert (o - o_ref).abs().max() <= 1e-5 * o_ref.abs().max()
        assert (state.levels - ref_levels).abs().max() <= 1e-5 * ref_levels.abs().max()
        assert torch.equal(state.position, ref_pos)
