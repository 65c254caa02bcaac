"""The source-model references the converter verifies against, checked against third parties:
transformers' own torch Mamba-2 scan and Gated DeltaNet recurrence, and the package's quadratic
log-linear operator (float64)."""
from __future__ import annotations

import inspect

import pytest
import torch
from transformers.models.mamba2 import modeling_mamba2
from transformers.models.qwen3_next.modeling_qwen3_next import torch_recurrent_gated_delta_rule

from hf_loglinear import loglinear_attention
from hf_loglinear.conversion.reference import level_recurrence

TOL = dict(atol=1e-10, rtol=1e-10)


def _inputs(batch=2, length=37, heads=4, key_dim=8, value_dim=6, levels=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return dict(
        q=rand(batch, length, heads, key_dim),
        k=torch.nn.functional.normalize(rand(batch, length, heads, key_dim), dim=-1),
        v=rand(batch, length, heads, value_dim),
        g=-0.3 * torch.rand(batch, length, heads, generator=gen, dtype=torch.float64),
        beta=torch.rand(batch, length, heads, generator=gen, dtype=torch.float64),
        lam=torch.rand(batch, length, heads, levels, generator=gen, dtype=torch.float64) + 0.5,
    )


def test_linear_mamba2_matches_transformers_torch_scan():
    x = _inputs()
    dt = torch.rand(2, 37, 4, dtype=torch.float64) + 0.1
    A = -torch.rand(4, dtype=torch.float64)
    scan = inspect.unwrap(modeling_mamba2.mamba2_chunk_scan)  # the torch path, never mamba_ssm
    expected = scan(x["v"], dt, A, x["k"], x["q"], chunk_size=16)  # B = k, C = q, one group per head
    got = level_recurrence(x["q"], x["k"], x["v"] * dt[..., None], A * dt)
    torch.testing.assert_close(got.float(), expected, atol=1e-5, rtol=1e-5)  # transformers computes in fp32


def test_linear_delta_rule_matches_transformers_recurrence():
    x = _inputs()
    recurrence = inspect.unwrap(torch_recurrent_gated_delta_rule)  # the torch path, never fla
    expected, _ = recurrence(x["q"], x["k"], x["v"], x["g"], x["beta"], use_qk_l2norm_in_kernel=False)
    got = level_recurrence(x["q"] * 8**-0.5, x["k"], x["v"], x["g"], beta=x["beta"])
    torch.testing.assert_close(got, expected.double(), atol=1e-5, rtol=1e-5)  # transformers computes in fp32


@pytest.mark.parametrize("delta", [False, True])
def test_levels_match_the_quadratic_operator(delta):
    x = _inputs(length=64, levels=7)  # 64 tokens use levels 0..6: uncapped and capped agree
    beta = x["beta"] if delta else None
    got = level_recurrence(x["q"], x["k"], x["v"], x["g"], beta=beta, level_weights=x["lam"])
    expected, _ = loglinear_attention(x["q"], x["k"], x["v"], x["g"], x["lam"], beta=beta, backend="reference")
    torch.testing.assert_close(got, expected, **TOL)


def test_constant_level_weights_scale_the_linear_model():
    x = _inputs()
    linear = level_recurrence(x["q"], x["k"], x["v"], x["g"], beta=x["beta"])
    scaled = level_recurrence(x["q"], x["k"], x["v"], x["g"], beta=x["beta"], level_weights=torch.full_like(x["lam"], 0.25))
    torch.testing.assert_close(scaled, 0.25 * linear, **TOL)


def test_the_authors_length_limit():
    x = _inputs(length=9, levels=4)  # 4 levels cover 2^3 = 8 tokens
    level_recurrence(x["q"][:, :8], x["k"][:, :8], x["v"][:, :8], x["g"][:, :8], level_weights=x["lam"][:, :8])
    with pytest.raises(ValueError, match="position 8 needs level 4"):
        level_recurrence(x["q"], x["k"], x["v"], x["g"], level_weights=x["lam"])
