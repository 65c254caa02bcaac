"""Configuration of log-linear Mamba-2 (transformers' ``Mamba2Config`` fields plus level weights)."""
from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN


@strict
class LogLinearMamba2Config(PreTrainedConfig):
    r"""
    Field names and meanings follow transformers' ``Mamba2Config`` (so a converted config reads
    naturally); every layer is a log-linear Mamba-2 mixer, optionally followed by a SwiGLU MLP.

    num_heads, head_dim (`int`): value heads H and their size P; ``hidden_size * expand`` must equal ``H * P``.
    state_size (`int`): state size N (the key/query size of the operator).
    n_groups (`int`): B/C groups G; head h reads group h // (H / G).
    expand (`int`), conv_kernel (`int`), use_bias (`bool`), use_conv_bias (`bool`), hidden_act (`str`),
    layer_norm_epsilon (`float`), residual_in_fp32 (`bool`), time_step_rank, time_step_min, time_step_max,
    time_step_floor, time_step_limit (`(min, max)` clamp of dt), rescale_prenorm_residual, chunk_size,
    initializer_range, use_cache, tie_word_embeddings: as in ``Mamba2Config``.
    num_levels (`int`): number of level weights L; tokens at levels >= L - 1 share the top weight, so any length works.
    level_bias_init (`float`, *optional*): initial bias inside the level-weight softplus; None means
        softplus^-1(1) = ln(e - 1), so a zero level projection gives lambda = 1 (plain Mamba-2).
    use_mlp (`bool`): add a SwiGLU MLP after each mixer (the authors' block layout).
    intermediate_size (`int`, *optional*): MLP width; None means ``8/3 * hidden_size`` rounded up to a multiple of 256.
    mlp_hidden_act (`str`): activation of the MLP gate.
    """

    model_type = "loglinear_mamba2"
    keys_to_ignore_at_inference = ["cache"]

    num_heads: int = 128
    head_dim: int = 64
    vocab_size: int = 32768
    hidden_size: int = 4096
    state_size: int = 128
    num_hidden_layers: int = 64
    layer_norm_epsilon: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    expand: int = 2
    conv_kernel: int = 4
    n_groups: int = 8
    use_bias: bool = False
    use_conv_bias: bool = True
    hidden_act: str = "silu"
    initializer_range: float = 0.1
    residual_in_fp32: bool = True
    time_step_rank: str | int = "auto"
    time_step_min: float = 0.001
    time_step_max: float = 0.1
    time_step_floor: float = 1e-4
    time_step_limit: list[float] | tuple[float, ...] = (0.0, float("inf"))
    rescale_prenorm_residual: bool = False
    use_cache: bool = True
    chunk_size: int = 256
    tie_word_embeddings: bool = False
    num_levels: int = 15
    level_bias_init: float | int | None = None
    use_mlp: bool = False
    intermediate_size: int | None = None
    mlp_hidden_act: str = "silu"

    def __post_init__(self, **kwargs):
        if self.time_step_rank == "auto":
            self.time_step_rank = math.ceil(self.hidden_size / 16)
        if self.intermediate_size is None:
            self.intermediate_size = 256 * math.ceil(self.hidden_size * 8 / 3 / 256)
        self.time_step_limit = tuple(float(x) for x in self.time_step_limit)
        self._check()
        super().__post_init__(**kwargs)

    def _check(self):
        """Plain ValueErrors at construction; ``validate_architecture`` re-runs them on ``.validate()``."""
        for name in ("num_heads", "head_dim", "vocab_size", "hidden_size", "state_size", "num_hidden_layers",
                     "expand", "conv_kernel", "n_groups", "chunk_size", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}")
        if self.hidden_size * self.expand != self.num_heads * self.head_dim:
            raise ValueError(
                f"hidden_size * expand ({self.hidden_size} * {self.expand}) must equal num_heads * head_dim "
                f"({self.num_heads} * {self.head_dim})"
            )
        if self.num_heads % self.n_groups:
            raise ValueError(f"n_groups={self.n_groups} must divide num_heads={self.num_heads}")
        for name in ("hidden_act", "mlp_hidden_act"):
            if getattr(self, name) not in ACT2FN:
                raise ValueError(f"{name}={getattr(self, name)!r} is not a known activation (see transformers ACT2FN)")
        limit = self.time_step_limit
        if len(limit) != 2 or not 0 <= limit[0] <= limit[1]:
            raise ValueError(f"time_step_limit must be (min, max) with 0 <= min <= max, got {self.time_step_limit}")
        if self.layer_norm_epsilon <= 0:
            raise ValueError(f"layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon}")

    def validate_architecture(self):
        """Part of `@strict`-powered validation."""
        self._check()

    @property
    def layer_types(self):
        return ["linear_attention"] * self.num_hidden_layers


__all__ = ["LogLinearMamba2Config"]
