"""Public operator API of log-linear attention.

    o, state = loglinear_attention(q, k, v, g, level_weights, beta=None, cu_seqlens=None,
                                   initial_state=None, output_final_state=False, backend=None)
    o, state = loglinear_attention_step(state, q, k, v, g, level_weights, beta=None)

Shapes (SPEC §2): q, k ``[B, T, G, K]`` (value head h reads group h // (H // G)); v
``[B, T, H, V]``; g ``[B, T, H]`` log decay (<= 0); level_weights ``[B, T, H, L]`` (lambda of
the query; levels >= L - 1 use column L - 1); beta ``[B, T, H]`` or None. ``beta=None`` is
log-linear Mamba-2 / gated linear attention, a beta tensor the log-linear gated delta rule.
No query scale and no normalisation are applied here: callers do that.

Backends: "reference" (materialised quadratic form, for tests), "torch" (chunked form, the CPU
path), "triton" (GPU kernels, also runnable under TRITON_INTERPRET=1). ``None`` picks triton
for CUDA tensors when it is importable, otherwise torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LevelState", "loglinear_attention", "loglinear_attention_step", "BACKENDS"]

BACKENDS = ("reference", "torch", "triton")


@dataclass
class LevelState:
    """Level states of N sequences: ``levels`` ``[N, H, L, K, V]`` fp32, ``position`` ``[N]`` int64.

    ``position`` counts the tokens each sequence has consumed, so the next token sits there.

    ``log_scale`` (``[N, H, 2, L]`` fp32 or None) is what the Triton decode step keeps so that,
    under scalar decay, it rewrites only the levels that merge (SPEC §3): level l holds
    ``levels[:, :, l] * exp(log_scale[:, :, position % 2, l])`` (-inf: empty). The step reads one
    half and writes the other, so the programs of one launch never race on it. ``materialized()``
    gives the plain states; every other path takes them from there.
    """

    levels: torch.Tensor
    position: torch.Tensor
    log_scale: torch.Tensor | None = None

    @classmethod
    def zeros(cls, batch, num_heads, num_levels, key_dim, value_dim, device=None) -> "LevelState":
        levels = torch.zeros(batch, num_heads, num_levels, key_dim, value_dim, dtype=torch.float32, device=device)
        return cls(levels, torch.zeros(batch, dtype=torch.int64, device=device))

    def clone(self) -> "LevelState":
        scale = None if self.log_scale is None else self.log_scale.clone()
        return LevelState(self.levels.clone(), self.position.clone(), scale)

    def _factor(self) -> torch.Tensor:
        """exp of the active half of ``log_scale``, ``[N, H, L, 1, 1]``."""
        n, num_heads, _, num_levels = self.log_scale.shape
        half = (self.position % 2).view(n, 1, 1, 1).expand(n, num_heads, 1, num_levels)
        return self.log_scale.gather(2, half).squeeze(2).exp()[..., None, None].to(self.levels.dtype)

    def materialized(self) -> "LevelState":
        """The plain level states (a new state; this one when there is no scale)."""
        if self.log_scale is None:
            return self
        return LevelState(self.levels * self._factor(), self.position)

    def materialize_(self) -> "LevelState":
        """Fold the scale into ``levels`` in place (the scale becomes 0)."""
        if self.log_scale is not None:
            self.levels.mul_(self._factor())
            self.log_scale.zero_()
        return self

    @property
    def num_levels(self) -> int:
        return self.levels.shape[2]


# --------------------------------------------------------------------------- validation
def _shape_error(name, tensor, expected):
    return ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {expected}")


def _check_dtypes(q, k, v, g, level_weights, beta):
    # One pass over the inputs (this runs on every decode step of every layer).
    named = (("q", q), ("k", k), ("v", v), ("g", g), ("level_weights", level_weights), ("beta", beta))
    device = q.device
    for i, (name, x) in enumerate(named):
        if x is None:
            continue
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {x.dtype}")
        if i < 3 and x.dtype != q.dtype:
            raise ValueError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
        if i >= 3 and x.dtype not in (q.dtype, torch.float32, torch.float64):
            raise ValueError(f"{name} has dtype {x.dtype}; use q's dtype ({q.dtype}) or float32")
        if x.device != device:
            raise ValueError(f"all inputs must be on one device, got {name} on {x.device} and q on {device}")


def _check_common(q, k, v, g, level_weights, beta, token_dims):
    """Checks shared by the sequence and step forms; ``token_dims`` is 2 ([B, T]) or 1 ([B])."""
    lead = "[B, T" if token_dims == 2 else "[B"
    if q.dim() != token_dims + 2:
        raise _shape_error("q", q, f"{lead}, G, K]")
    if k.shape != q.shape:
        raise _shape_error("k", k, f"q's shape {tuple(q.shape)}")
    if v.dim() != token_dims + 2 or v.shape[:token_dims] != q.shape[:token_dims]:
        raise _shape_error("v", v, f"{lead}, H, V] with {lead}] = {tuple(q.shape[:token_dims])}")
    num_groups, num_heads = q.shape[-2], v.shape[-2]
    if num_groups < 1 or num_heads % num_groups:
        raise ValueError(
            f"the number of q/k groups G={num_groups} (q {tuple(q.shape)}) must divide the number "
            f"of value heads H={num_heads} (v {tuple(v.shape)})"
        )
    heads = tuple(v.shape[:-1])
    if g.shape != heads:
        raise _shape_error("g", g, f"{heads} (v's shape without V)")
    if beta is not None and beta.shape != heads:
        raise _shape_error("beta", beta, f"{heads} (v's shape without V)")
    if level_weights.dim() != token_dims + 2 or tuple(level_weights.shape[:-1]) != heads:
        raise _shape_error("level_weights", level_weights, f"{heads + ('L',)}")
    if level_weights.shape[-1] < 1:
        raise ValueError(f"level_weights needs L >= 1 levels, got shape {tuple(level_weights.shape)}")
    _check_dtypes(q, k, v, g, level_weights, beta)


def _check_state(state, name, n, num_heads, num_levels, key_dim, value_dim, device):
    if not isinstance(state, LevelState):
        raise ValueError(f"{name} must be a LevelState, got {type(state).__name__}")
    expected = (n, num_heads, num_levels, key_dim, value_dim)
    if tuple(state.levels.shape) != expected:
        raise _shape_error(f"{name}.levels", state.levels, f"{expected} [N, H, L, K, V]")
    if state.levels.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}.levels must be float32 (or float64), got {state.levels.dtype}")
    if tuple(state.position.shape) != (n,) or state.position.dtype != torch.int64:
        raise ValueError(
            f"{name}.position must be int64 of shape ({n},), got {state.position.dtype} {tuple(state.position.shape)}"
        )
    if state.levels.device != device or state.position.device != device:
        raise ValueError(f"{name} lives on {state.levels.device}, the inputs on {device}")
    scale = state.log_scale
    if scale is not None and (tuple(scale.shape) != (n, num_heads, 2, num_levels) or scale.dtype != torch.float32
                              or scale.device != device):
        raise ValueError(
            f"{name}.log_scale must be float32 [N, H, 2, L] = {(n, num_heads, 2, num_levels)} on {device}, "
            f"got {scale.dtype} {tuple(scale.shape)} on {scale.device}"
        )


def _check_cu_seqlens(cu_seqlens, q):
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"cu_seqlens must be a 1-D int32/int64 tensor [N+1], got {cu_seqlens.dtype} {tuple(cu_seqlens.shape)}"
        )
    if q.shape[0] != 1:
        raise ValueError(f"cu_seqlens packs sequences along T and needs B = 1, got q of shape {tuple(q.shape)}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens lives on {cu_seqlens.device}, the inputs on {q.device}")


def _pick_backend(backend, device):
    if backend is None:
        if device.type == "cuda":
            from .kernels.dispatch import triton_available

            return "triton" if triton_available() else "torch"
        return "torch"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    return backend


# --------------------------------------------------------------------------- API
def loglinear_attention(
    q,
    k,
    v,
    g,
    level_weights,
    beta=None,
    cu_seqlens=None,
    initial_state=None,
    output_final_state=False,
    backend=None,
):
    """Log-linear attention over whole sequences. Returns ``(o [B, T, H, V], LevelState | None)``.

    With ``cu_seqlens`` (B = 1) the sequences packed along T restart positions and levels at
    every start; states then have one row per sequence. ``initial_state`` continues each
    sequence exactly from its stored level states and position.
    """
    _check_common(q, k, v, g, level_weights, beta, token_dims=2)
    if cu_seqlens is not None:
        _check_cu_seqlens(cu_seqlens, q)
        n = cu_seqlens.numel() - 1
    else:
        n = q.shape[0]
    if initial_state is not None:
        _check_state(
            initial_state, "initial_state", n, v.shape[2], level_weights.shape[-1], q.shape[-1], v.shape[-1], q.device
        )
        initial_state = initial_state.materialized()
    from .kernels.dispatch import get_backend

    fn = get_backend(_pick_backend(backend, q.device))
    return fn(
        q,
        k,
        v,
        g,
        level_weights,
        beta=beta,
        cu_seqlens=cu_seqlens,
        initial_state=initial_state,
        output_final_state=output_final_state,
    )


def loglinear_attention_step(state, q, k, v, g, level_weights, beta=None, backend=None):
    """Consume one token per sequence: q, k ``[B, G, K]``, v ``[B, H, V]``, g ``[B, H]``,
    level_weights ``[B, H, L]``, beta ``[B, H]``. Each row uses its own ``state.position``.

    ``state`` is updated in place (levels and position) and returned with ``o [B, H, V]``.
    """
    _check_common(q, k, v, g, level_weights, beta, token_dims=1)
    _check_state(state, "state", q.shape[0], v.shape[1], level_weights.shape[-1], q.shape[-1], v.shape[-1], q.device)
    from .kernels.dispatch import get_step_backend

    name = _pick_backend(backend, q.device)
    if name != "triton":  # only the Triton step keeps a scale (see LevelState)
        state.materialize_()
    return get_step_backend(name)(state, q, k, v, g, level_weights, beta=beta)
