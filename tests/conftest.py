"""Shared fixtures: random operator inputs in the API's layout.

The suite runs the Triton kernels on CPU tensors through Triton's interpreter. TRITON_INTERPRET
must be set before any ``@triton.jit`` function is decorated, i.e. before anything imports
``hf_loglinear.levels`` or a kernel module, so it is set here, in the first file pytest loads.
Nothing else in the suite runs Triton, so the setting changes no other test.
"""
from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def make_inputs(batch, length, groups, heads, key_dim, value_dim, num_levels, *, delta, dtype=torch.float64, seed=0):
    """Random inputs of ``loglinear_attention``: keys unit-norm for the delta rule (as the models
    feed it), log decays in [-0.2, 0) so states neither vanish nor blow up over 1000 tokens."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)  # noqa: E731
    k = rand(batch, length, groups, key_dim)
    if delta:
        k = torch.nn.functional.normalize(k, dim=-1)
    return dict(
        q=rand(batch, length, groups, key_dim) * key_dim**-0.5,
        k=k,
        v=rand(batch, length, heads, value_dim),
        g=-0.2 * torch.rand(batch, length, heads, generator=gen, dtype=dtype),
        level_weights=torch.rand(batch, length, heads, num_levels, generator=gen, dtype=dtype) + 0.5,
        beta=torch.rand(batch, length, heads, generator=gen, dtype=dtype) if delta else None,
    )


def random_state(batch, heads, num_levels, key_dim, value_dim, position, *, dtype=torch.float64, seed=1):
    """A LevelState that a real prefix of ``position[n]`` tokens could have produced: built by
    running the recurrence, so empty levels stay empty."""
    from hf_loglinear import LevelState
    from hf_loglinear.kernels.recurrent import recurrent_loglinear_attention

    longest = max(position)
    x = make_inputs(batch, max(longest, 1), 1, heads, key_dim, value_dim, num_levels, delta=False, dtype=dtype, seed=seed)
    cu = torch.tensor([0] + list(position)).cumsum(0)
    packed = {name: None if t is None else t.reshape(1, -1, *t.shape[2:])[:, : cu[-1]] for name, t in x.items()}
    _, state = recurrent_loglinear_attention(**packed, cu_seqlens=cu, output_final_state=True)
    return LevelState(state.levels.to(dtype), state.position)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and steadiest on a shared 2-core CI box) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def inputs():
    return make_inputs


@pytest.fixture
def state_from_prefix():
    return random_state
