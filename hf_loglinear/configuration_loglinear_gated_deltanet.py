"""Configuration of log-linear Gated DeltaNet (fla's ``GatedDeltaNetConfig`` fields plus level weights)."""
from __future__ import annotations

import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class LogLinearGatedDeltaNetConfig(PreTrainedConfig):
    r"""
    Field names and meanings follow fla's ``GatedDeltaNetConfig`` so that a converted config reads
    naturally; every layer is a log-linear Gated DeltaNet mixer followed by a SwiGLU MLP.

    hidden_size (`int`): width of the residual stream.
    expand_v (`float`): value head size = ``head_dim * expand_v``.
    head_dim (`int`): query/key head size.
    num_heads (`int`): query/key heads (the operator's groups G).
    num_v_heads (`int`, *optional*): value heads H (a multiple of ``num_heads``); ``None`` means ``num_heads``.
    use_gate (`bool`): output gate ``g_proj`` after the per-head RMSNorm (norm first, then ``* silu(g_proj(x))``).
    use_short_conv (`bool`): causal depthwise convolutions on q, k, v (must be True: the only layout supported).
    allow_neg_eigval (`bool`): beta = 2 * sigmoid(b_proj(x)), letting the transition have negative eigenvalues.
    conv_size (`int`): kernel size of the short convolutions.
    hidden_ratio (`int` or `float`), intermediate_size (`int`, *optional*): MLP width; when
        ``intermediate_size`` is None it is ``2/3 * hidden_size * hidden_ratio`` rounded up to a multiple of 256 (fla).
    hidden_act (`str`): MLP activation, "swish" (= "silu").
    norm_eps (`float`): epsilon of every RMSNorm.
    num_levels (`int`): number of level weights L; tokens at levels >= L - 1 share the top weight, so any length works.
    level_bias_init (`float`, *optional*): initial bias inside the level-weight softplus; None means
        softplus^-1(1) = ln(e - 1), so a zero level projection gives lambda = 1 (plain Gated DeltaNet).
    use_query_scale (`bool`): scale q by ``head_dim ** -0.5`` before the operator; the authors' h_gated_deltanet
        checkpoints use False and let lambda absorb the scale.

    Hybrid attention layers (fla's ``attn``) are not supported.
    """

    model_type = "loglinear_gated_deltanet"
    keys_to_ignore_at_inference = ["cache"]

    hidden_size: int = 2048
    expand_v: float | int = 2.0
    head_dim: int = 256
    num_heads: int = 6
    num_v_heads: int | None = None
    use_gate: bool = True
    use_short_conv: bool = True
    allow_neg_eigval: bool = False
    conv_size: int = 4
    max_position_embeddings: int = 2048
    hidden_ratio: int | float | None = 4
    intermediate_size: int | None = None
    hidden_act: str = "swish"
    num_hidden_layers: int = 21
    norm_eps: float = 1e-6
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    vocab_size: int = 32000
    num_levels: int = 15
    level_bias_init: float | int | None = None
    use_query_scale: bool = True

    def __post_init__(self, **kwargs):
        # fla's hybrid layout puts softmax attention in some layers; we only build the linear mixer.
        if kwargs.pop("attn", None) is not None:
            raise ValueError("hybrid attention layers (`attn`) are not supported by LogLinearGatedDeltaNetConfig")
        if self.num_v_heads is None:
            self.num_v_heads = self.num_heads
        if self.intermediate_size is None:
            ratio = 4 if self.hidden_ratio is None else self.hidden_ratio
            width = int(self.hidden_size * ratio * 2 / 3)
            self.intermediate_size = 256 * ((width + 255) // 256)
        self._check()
        super().__post_init__(**kwargs)

    def _check(self):
        """Plain ValueErrors at construction; ``validate_architecture`` re-runs them on ``.validate()``."""
        for name in ("hidden_size", "head_dim", "num_heads", "num_v_heads", "conv_size", "num_hidden_layers",
                     "vocab_size", "intermediate_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}")
        if self.num_v_heads % self.num_heads:
            raise ValueError(
                f"num_v_heads={self.num_v_heads} must be a multiple of num_heads={self.num_heads} "
                "(each query/key head serves num_v_heads // num_heads value heads)"
            )
        head_v_dim = self.head_dim * self.expand_v
        if head_v_dim < 1 or not math.isclose(head_v_dim, round(head_v_dim), rel_tol=0, abs_tol=1e-6):
            raise ValueError(
                f"head_dim * expand_v = {self.head_dim} * {self.expand_v} = {head_v_dim} is not a positive integer value head size"
            )
        if not self.use_short_conv:
            raise ValueError("use_short_conv=False is not supported: the log-linear Gated DeltaNet always uses short convolutions")
        if self.hidden_act not in ("swish", "silu"):
            raise ValueError(f"hidden_act must be 'swish' (or 'silu') for the SwiGLU MLP, got {self.hidden_act!r}")
        if self.norm_eps <= 0:
            raise ValueError(f"norm_eps must be > 0, got {self.norm_eps}")

    def validate_architecture(self):
        """Part of `@strict`-powered validation."""
        self._check()

    @property
    def head_v_dim(self) -> int:
        return round(self.head_dim * self.expand_v)

    @property
    def layer_types(self):
        return ["linear_attention"] * self.num_hidden_layers


__all__ = ["LogLinearGatedDeltaNetConfig"]
