"""Terms of one block of consecutive tokens, shared by the quadratic and the chunked forms.

For a block with chunk-local cumulative log decay G (inclusive) and a state h entering it, the
recurrence of SPEC §2 unrolls to (o_t for query t, h_end after the block)::

    o_t   = sum_{s <= t} P[t, s] v_s  +  Qt_t^T h
    h_end = decay * h - Kd^T (W h)  +  sum_s R[:, s] v_s^T

- scalar decay (Mamba-2): P = (q k^T) * exp(G_t - G_s), Qt = exp(G) q, R = Kd^T, W = 0;
- delta rule (Gated DeltaNet): with the UT form A = I + strict_lower(beta_t (k_t.k_s) exp(G_t - G_s)),
  P = (q k^T * Gamma) A^-1 diag(beta), W = A^-1 diag(beta exp(G)) k, Qt = exp(G) q - (q k^T Gamma) W,
  R = Kd^T A^-1 diag(beta); Kd = k * exp(G_end - G) in both.
P[t, s] is the scalar coefficient of source s for query t, so level weights multiply it
elementwise; Qt is the query transported to the block start, R[:, s] the source pushed to
the block end. Everything is batched over leading dims ``[..., C, ...]``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class BlockTerms:
    P: torch.Tensor  # [..., C, C] composite coefficients, lower triangular with diagonal
    Qt: torch.Tensor  # [..., C, K]
    R: torch.Tensor  # [..., K, C]
    Kd: torch.Tensor  # [..., C, K]
    W: torch.Tensor | None  # [..., C, K], delta rule only
    decay: torch.Tensor  # [...] exp(G_end)

    def map(self, fn) -> "BlockTerms":
        """The same terms with ``fn`` applied to every tensor (e.g. to pick one chunk)."""
        return BlockTerms(*(None if x is None else fn(x) for x in (self.P, self.Qt, self.R, self.Kd, self.W, self.decay)))

    def transition(self, h: torch.Tensor) -> torch.Tensor:
        """Push states ``[..., L, K, V]`` through the block's transitions (all levels alike)."""
        out = self.decay[..., None, None, None] * h
        if self.W is not None:
            wh = torch.einsum("...ck,...lkv->...lcv", self.W, h)
            out = out - torch.einsum("...ck,...lcv->...lkv", self.Kd, wh)
        return out


def block_terms(q, k, g, beta=None) -> BlockTerms:
    """q, k ``[..., C, K]``, g ``[..., C]``, beta ``[..., C]`` or None, all one float dtype."""
    size = q.shape[-2]
    # Decay exponents are differences of cumulative sums that reach -100 and beyond within a
    # block (Mamba-2's dt * A); in float32 that difference would lose ~1e-5 absolute, so the
    # cumulative sums and their differences are taken in float64 and only the exps rounded.
    G = g.to(torch.float64).cumsum(-1)
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    diff = (G[..., :, None] - G[..., None, :]).masked_fill(~causal, float("-inf"))
    gamma = diff.exp().to(q.dtype)
    qk = (q @ k.transpose(-1, -2)) * gamma
    eG = G.exp().to(q.dtype)
    Kd = k * (G[..., -1:] - G).exp().to(q.dtype)[..., None]
    decay = eG[..., -1]
    if beta is None:
        return BlockTerms(P=qk, Qt=q * eG[..., None], R=Kd.transpose(-1, -2), Kd=Kd, W=None, decay=decay)
    strict = (k @ k.transpose(-1, -2)) * gamma.tril(-1) * beta[..., :, None]
    eye = torch.eye(size, dtype=q.dtype, device=q.device)
    a_inv = torch.linalg.solve_triangular(eye + strict, eye.expand_as(strict), upper=False, unitriangular=True)
    a_inv_b = a_inv * beta[..., None, :]
    W = a_inv_b @ (k * eG[..., None])
    return BlockTerms(
        P=qk @ a_inv_b,
        Qt=q * eG[..., None] - qk @ W,
        R=Kd.transpose(-1, -2) @ a_inv_b,
        Kd=Kd,
        W=W,
        decay=decay,
    )


def weighted_readout(Qt, states, weights):
    """sum_l weights[..., t, l] * Qt_t^T states[l]: Qt ``[..., C, K]``, states ``[..., L, K, V]``,
    weights ``[..., C, L]`` -> ``[..., C, V]``."""
    per_level = torch.einsum("...ck,...lkv->...clv", Qt, states)
    return torch.einsum("...clv,...cl->...cv", per_level, weights)


def level_split(R, v, levels, num_levels):
    """End-of-block contribution split by level: sum_s [levels_s == l] R[:, s] v_s^T.

    R ``[..., K, C]``, v ``[..., C, V]``, levels ``[..., C]`` int64 -> ``[..., L, K, V]``.
    """
    onehot = torch.nn.functional.one_hot(levels, num_levels).to(R.dtype)
    return torch.einsum("...kc,...cl,...cv->...lkv", R, onehot, v)
