"""What every format's converter provides, and the tensor helpers they share.

A ``Conversion`` turns one source checkpoint into our model's checkpoint, tensor by tensor:

- ``target_config()``: our config (LogLinearMamba2Config / LogLinearGatedDeltaNetConfig);
- ``source_shapes()``: every tensor the source must have, with its shape from the source config
  (checked before anything is written, so a wrong file fails with a clear message);
- ``convert_tensor(name, tensor)``: the target tensors one source tensor becomes;
- ``new_tensors()``: tensors with no source (the level projection and tables of converted models);
- ``source_logits()``: a float32 function input_ids -> logits of the SOURCE model, from an
  implementation independent of ours (transformers' classes or ``reference.py``);
- ``reference`` (what ran the source), ``changes`` (for the card), ``vocab_size`` (real tokens).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch

from ..modeling_loglinear_gated_deltanet import LogLinearGatedDeltaNetForCausalLM
from ..modeling_loglinear_mamba2 import LogLinearMamba2ForCausalLM
from ..modules import NEUTRAL_LEVEL_BIAS
from .io import CheckpointReader

__all__ = [
    "Conversion",
    "Relevel",
    "level_index",
    "model_shapes",
    "neutral_level_tensors",
    "our_model_class",
    "our_model_logits",
    "relevel_tensor",
]

Tensors = Iterator[tuple[str, torch.Tensor]]


class Conversion(ABC):
    """One source format: its target config, the source layout it expects, and the tensor mapping."""

    format: str
    family: str  # "mamba2" or "gated_deltanet": which of our models and which card
    reference: str

    def __init__(self, folder, config: dict, reader: CheckpointReader, num_levels: int):
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.folder, self.config, self.reader, self.num_levels = folder, config, reader, num_levels
        self.changes: list[str] = []

    @abstractmethod
    def target_config(self):
        """The config of our model that the conversion produces."""

    @abstractmethod
    def source_shapes(self) -> dict[str, tuple[int, ...]]:
        """Expected tensor name -> shape of the source checkpoint."""

    def convert_tensor(self, name: str, tensor: torch.Tensor) -> Tensors:
        yield name, tensor

    def new_tensors(self) -> Tensors:
        return iter(())

    @abstractmethod
    def source_logits(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function running the source model (token ids -> logits) for verification."""

    @property
    def vocab_size(self) -> int:
        return self.target_config().vocab_size

    def check_source(self):
        """Missing, unexpected and mis-shaped source tensors, all reported in one ValueError."""
        expected, found = self.source_shapes(), self.reader.shapes()
        problems = []
        missing = [n for n in expected if n not in found]
        if missing:
            problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        unexpected = [n for n in found if n not in expected]
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        wrong = [(n, found[n], s) for n, s in expected.items() if n in found and tuple(found[n]) != tuple(s)]
        if wrong:
            n, got, want = wrong[0]
            problems.append(
                f"{len(wrong)} tensors with the wrong shape (e.g. {n} is {tuple(got)}, config.json implies {tuple(want)})"
            )
        if problems:
            raise ValueError(
                f"{self.folder} does not match its config.json as {self.format}: " + "; ".join(problems)
                + ". Check that config.json and the weights belong together"
            )


def level_index(old: int, new: int) -> torch.Tensor:
    """Which old level each new level copies: the same level, or the top one when adding levels.

    Adding levels copies the top level, which is exact: under capping, every level >= old - 1
    already used the top weight. Removing levels keeps the lowest ``new`` (exact for sequences of
    up to 2^(new - 1) tokens).
    """
    return torch.arange(new).clamp_max(old - 1)


def relevel_tensor(tensor: torch.Tensor, heads: int, old: int, new: int) -> torch.Tensor:
    """Re-level a level projection [heads * old, D] or a level table [heads, old]."""
    index = level_index(old, new)
    if tensor.dim() == 2 and tensor.shape == (heads, old):
        return tensor[:, index].contiguous()
    rows = tensor.reshape(heads, old, *tensor.shape[1:])
    return rows[:, index].reshape(heads * new, *tensor.shape[1:]).contiguous()


def neutral_level_tensors(prefix: str, heads: int, levels: int, hidden: int, dtype: torch.dtype) -> Tensors:
    """A zero level projection and tables with lambda = softplus(0 + ln(e - 1)) = 1: the model
    computes exactly what the linear model did."""
    yield f"{prefix}.level_proj.weight", torch.zeros(heads * levels, hidden, dtype=dtype)
    yield f"{prefix}.level_weights.scale", torch.ones(heads, levels, dtype=torch.float32)
    yield f"{prefix}.level_weights.bias", torch.full((heads, levels), NEUTRAL_LEVEL_BIAS, dtype=torch.float32)


def our_model_class(config):
    """Our causal-LM class for a target config."""
    classes = {cls.config_class.model_type: cls for cls in (LogLinearMamba2ForCausalLM, LogLinearGatedDeltaNetForCausalLM)}
    return classes[config.model_type]


def model_shapes(config, names=()) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of our model for ``config`` (built on the meta device: no memory).

    A tied ``lm_head.weight`` is left out unless ``names`` (a checkpoint's tensors) has it."""
    with torch.device("meta"):
        model = our_model_class(config)(config)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings and "lm_head.weight" not in names:
        shapes.pop("lm_head.weight", None)
    return shapes


def our_model_logits(folder, config) -> Callable[[torch.Tensor], torch.Tensor]:
    """input_ids -> float32 logits of our model saved in ``folder`` (every weight must load)."""
    model, info = our_model_class(config).from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        raise ValueError(f"{folder} does not load cleanly into {type(model).__name__}: {problems}")
    model.eval()

    @torch.no_grad()
    def logits(input_ids):
        return model(input_ids.to(model.device), use_cache=False).logits.float()

    return logits


class Relevel(Conversion):
    """Our own checkpoint with a different ``num_levels``; subclasses name the config class, the
    mixer module and the config field counting level heads."""

    config_class: type
    mixer: str
    heads_field: str

    def __init__(self, folder, config, reader, num_levels):
        super().__init__(folder, config, reader, num_levels)
        self.source_config = self.config_class.from_dict(config)
        self.old, self.heads = self.source_config.num_levels, getattr(self.source_config, self.heads_field)
        if num_levels >= self.old:
            what = "the new levels start equal to the top level, which is exact (levels past the top already used its weight)"
        else:
            what = f"levels {num_levels}..{self.old - 1} are dropped; exact for sequences of up to {1 << (num_levels - 1)} tokens"
        self.changes = [f"num_levels {self.old} -> {num_levels}: {what}"]

    def target_config(self):
        return self.config_class.from_dict({**self.source_config.to_dict(), "num_levels": self.num_levels})

    def source_shapes(self):
        return model_shapes(self.source_config, self.reader.names())

    def convert_tensor(self, name, tensor):
        level_tensors = tuple(f"{self.mixer}.{t}" for t in ("level_proj.weight", "level_weights.scale", "level_weights.bias"))
        if name.endswith(level_tensors):
            tensor = relevel_tensor(tensor, self.heads, self.old, self.num_levels)
        yield name, tensor

    def source_logits(self):
        return our_model_logits(self.folder, self.source_config)
