"""The decode cache of the log-linear models: per layer conv state(s), level states and positions.

API (read by both models):

- ``HierarchicalCache(config, num_conv_states=1)``: one ``HierarchicalCacheLayer`` per
  ``config.num_hidden_layers``; remembers ``config.model_type``. Tensors are allocated by the
  first write, so one cache object serves any batch size until then.
- ``cache.check(model_type, batch_size)``: ValueError for a cache built for another model type or
  holding another number of rows (call it at the top of a forward; ``batch_size`` = number of
  sequences, i.e. cache rows).
- ``cache.has_state(layer_idx)``: whether the layer holds states from an earlier forward.
- ``cache.get_conv_state(layer_idx, state_idx=0)`` -> ``[B, D, K - 1]`` or None;
  ``cache.update_conv_state(state, layer_idx, state_idx=0)`` stores a conv state as returned by
  ``modules.ShortConvolution(..., output_state=True)`` (copied into the existing buffer). Both are
  defined here: transformers 5.17 lacks ``Cache.get_conv_state``.
- ``cache.level_state(layer_idx)`` -> ``ops.LevelState`` sharing the cache's memory (levels
  ``[B, H, L, K, V]`` fp32, position ``[B]`` int64, log_scale ``[B, H, 2, L]``) or None:
  ``loglinear_attention_step`` updates it in place. ``cache.update_level_state(layer_idx, state)`` stores a prefill's final state.
- ``cache.advance(num_columns)``: the model calls it once per forward with the number of input
  columns consumed (pads included); ``get_seq_length()`` reports their total, which is what
  ``generate()`` compares with the attention mask when it continues from a returned cache.
- ``cache_from_kwargs(cache, kwargs)``: the cache a forward received as ``cache`` or under the
  older names ``past_key_values`` / ``cache_params`` (popped from ``kwargs``).
  ``GENERATE_CACHE_NAME`` is the name this transformers' generate() uses for the cache in its
  kwargs and outputs: "cache" (5.2x) or "past_key_values" (5.17, the GPU image); model outputs
  fill a ``past_key_values`` field too when it is the latter.
- Batch surgery: ``reorder_cache(beam_idx)`` (beam search), ``batch_repeat_interleave(n)``,
  ``batch_select_indices(idx)``, ``reset()``; ``nbytes``; ``batch_size`` (-1 before any write).
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, LinearAttentionLayer
from transformers.generation import utils as _generation_utils

from .ops import LevelState

__all__ = ["HierarchicalCache", "HierarchicalCacheLayer", "GENERATE_CACHE_NAME", "cache_from_kwargs"]

GENERATE_CACHE_NAME = "cache" if "cache" in getattr(_generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"
_LEGACY_CACHE_NAMES = ("past_key_values", "cache_params")


def cache_from_kwargs(cache, kwargs: dict):
    """``cache``, or the cache passed under an older name (removed from ``kwargs``)."""
    for name in _LEGACY_CACHE_NAMES:
        legacy = kwargs.pop(name, None)
        if legacy is not None:
            if cache is not None and cache is not legacy:
                raise ValueError(f"two different caches were passed (`cache` and `{name}`); pass one")
            cache = legacy
    return cache


class HierarchicalCacheLayer(LinearAttentionLayer):
    """``conv_states[i]`` ``[B, D_i, K - 1]``, ``recurrent_states[0]`` the level states
    ``[B, H, L, K, V]`` fp32 and ``position`` ``[B]`` int64 (tokens each row has consumed).

    All tensors have the batch first, so the inherited reorder / reset / offload act on them; the
    position is handled next to them.
    """

    def __init__(self, num_conv_states: int = 1):
        super().__init__(number_of_states=max(1, num_conv_states))
        self.num_conv_states = num_conv_states
        self.position: torch.Tensor | None = None
        self.level_scale: torch.Tensor | None = None  # LevelState.log_scale of the level states

    # Decode steps go through the torch planner or kernels that are not capture-safe.
    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def batch_size(self) -> int:
        return -1 if self.position is None else self.position.shape[0]

    def _tensors(self):
        tensors = [t for t in self.conv_states.values() if t is not None]
        tensors += [t for t in self.recurrent_states.values() if t is not None]
        return tensors + [t for t in (self.position, self.level_scale) if t is not None]

    @staticmethod
    def _store(old, new, what):
        """Copy ``new`` into the cache's buffer (allocated on first use); states never carry autograd history."""
        if old is None:
            return new.detach().clone()
        if old.shape != new.shape:
            raise ValueError(f"cannot store a {what} of shape {tuple(new.shape)} in a cache holding {tuple(old.shape)}")
        if old.dtype != new.dtype:
            raise ValueError(f"cannot store a {what} of dtype {new.dtype} in a cache holding {old.dtype}")
        if old.data_ptr() != new.data_ptr():  # an in-place decode step already wrote the cache's memory
            old.copy_(new.detach())
        return old

    def update_conv_state(self, conv_states: torch.Tensor, state_idx: int = 0, **kwargs) -> torch.Tensor:
        if not 0 <= state_idx < self.num_conv_states:
            raise ValueError(f"conv state index {state_idx} out of range: this cache has {self.num_conv_states}")
        self.conv_states[state_idx] = self._store(self.conv_states[state_idx], conv_states, "conv state")
        self.is_conv_states_initialized[state_idx] = True
        self.has_previous_state[state_idx] = True
        self.device = conv_states.device
        return self.conv_states[state_idx]

    def update_level_state(self, state: LevelState) -> LevelState:
        if state.levels.dtype not in (torch.float32, torch.float64):  # float64 only for float64 models
            raise ValueError(f"level states are cached in float32 (float64 for float64 models), got {state.levels.dtype}")
        self.recurrent_states[0] = self._store(self.recurrent_states[0], state.levels, "level state")
        self.position = self._store(self.position, state.position, "position")
        n, num_heads, num_levels = state.levels.shape[:3]
        scale = state.log_scale
        if scale is None:  # plain states (a prefill's): scale 0
            scale = torch.zeros(n, num_heads, 2, num_levels, dtype=torch.float32, device=state.levels.device)
        self.level_scale = self._store(self.level_scale, scale, "level scale")
        self.is_recurrent_states_initialized[0] = True
        self.has_previous_state = dict.fromkeys(self.has_previous_state, True)
        self.device = state.levels.device
        return self.level_state()

    def level_state(self) -> LevelState | None:
        if self.recurrent_states[0] is None or not self.has_previous_state[0]:
            return None
        return LevelState(self.recurrent_states[0], self.position, self.level_scale)

    def reset(self) -> None:
        super().reset()
        if self.position is not None:
            self.position.zero_()
        if self.level_scale is not None:
            self.level_scale.zero_()

    def _apply(self, fn):
        """Apply ``fn`` to every batch-first tensor (re-allocating: shapes may change)."""
        for i in self.conv_states:
            if self.conv_states[i] is not None:
                self.conv_states[i] = fn(self.conv_states[i])
            if self.recurrent_states[i] is not None:
                self.recurrent_states[i] = fn(self.recurrent_states[i])
        if self.position is not None:
            self.position = fn(self.position)
        if self.level_scale is not None:
            self.level_scale = fn(self.level_scale)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._apply(lambda t: t[indices.to(t.device) if isinstance(indices, torch.Tensor) else indices])

    def offload(self):
        super().offload()
        if self.position is not None:
            self.position = self.position.to("cpu", non_blocking=True)
        if self.level_scale is not None:
            self.level_scale = self.level_scale.to("cpu", non_blocking=True)

    def prefetch(self):
        super().prefetch()
        if self.position is not None and self.position.device != self.device:
            self.position = self.position.to(self.device, non_blocking=True)
        if self.level_scale is not None and self.level_scale.device != self.device:
            self.level_scale = self.level_scale.to(self.device, non_blocking=True)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._tensors())


class HierarchicalCache(Cache):
    """Cache of a log-linear model: every layer is a ``HierarchicalCacheLayer``.

    It reports a real sequence length (input columns consumed), and it does not present itself
    as "linear" to ``generate()``: that is what makes generate() slice a continued prompt to its
    new tokens instead of re-feeding it into the recurrent state.
    """

    def __init__(self, config, num_conv_states: int = 1):
        num_layers = getattr(config, "num_hidden_layers", None)
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"HierarchicalCache needs a config with num_hidden_layers >= 1, got {num_layers!r}")
        super().__init__(layers=[HierarchicalCacheLayer(num_conv_states) for _ in range(num_layers)])
        self.model_type = getattr(config, "model_type", None)
        self.seen_tokens = 0

    def check(self, model_type: str, batch_size: int) -> None:
        if self.model_type != model_type:
            raise ValueError(
                f"this cache was built for model_type {self.model_type!r}, the model is {model_type!r}; "
                "pass a cache returned by this model (or none)"
            )
        if self.batch_size not in (-1, batch_size):
            raise ValueError(
                f"the cache holds {self.batch_size} sequences but the input has {batch_size}; use "
                "batch_select_indices / batch_repeat_interleave or a fresh cache"
            )

    def _layer(self, layer_idx: int) -> HierarchicalCacheLayer:
        if not 0 <= layer_idx < len(self.layers):
            raise ValueError(f"layer index {layer_idx} out of range: this cache has {len(self.layers)} layers")
        return self.layers[layer_idx]

    def get_conv_state(self, layer_idx: int, state_idx: int = 0) -> torch.Tensor | None:
        layer = self._layer(layer_idx)
        return layer.conv_states[state_idx] if layer.has_previous_state[state_idx] else None

    def update_conv_state(self, conv_states: torch.Tensor, layer_idx: int, state_idx: int = 0, **kwargs) -> torch.Tensor:
        return self._layer(layer_idx).update_conv_state(conv_states, state_idx)

    def has_state(self, layer_idx: int) -> bool:
        return self._layer(layer_idx).level_state() is not None

    def level_state(self, layer_idx: int) -> LevelState | None:
        return self._layer(layer_idx).level_state()

    def update_level_state(self, layer_idx: int, state: LevelState) -> LevelState:
        return self._layer(layer_idx).update_level_state(state)

    def advance(self, num_columns: int) -> None:
        self.seen_tokens += num_columns

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def reset(self):
        super().reset()
        self.seen_tokens = 0

    @property
    def is_linear(self) -> list[bool]:
        return [False] * len(self.layers)

    @property
    def batch_size(self) -> int:
        return max((layer.batch_size for layer in self.layers), default=-1)

    @property
    def nbytes(self) -> int:
        """Bytes held by all states of all layers."""
        return sum(layer.nbytes for layer in self.layers)

    def __repr__(self):
        return (
            f"{type(self).__name__}(model_type={self.model_type!r}, layers={len(self.layers)}, "
            f"batch_size={self.batch_size}, seen_tokens={self.seen_tokens}, nbytes={self.nbytes})"
        )
