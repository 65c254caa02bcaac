"""Fixtures shared by the model tests: one CPU thread, padded batches built from token rows, and
save / load checks that hold for every model."""
from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_loglinear.modules import LevelProjection, LevelWeights


@pytest.fixture(autouse=True)
def _one_thread_for_models(one_thread):
    """Every model test runs on one thread (the root conftest's ``one_thread``)."""


def _pad_rows(rows, width=None, starts=None):
    """``(batch, attention_mask)``: row i's tokens at columns ``starts[i]:`` of a ``width``-wide
    batch of pad id 0. Defaults: the longest row's width, every row left-padded."""
    width = max(len(row) for row in rows) if width is None else width
    starts = [width - len(row) for row in rows] if starts is None else starts
    batch = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, (row, start) in enumerate(zip(rows, starts)):
        batch[i, start : start + len(row)], mask[i, start : start + len(row)] = row, 1
    return batch, mask


@pytest.fixture
def pad_rows():
    return _pad_rows


def _round_trip(model, folder, input_ids):
    """``save_pretrained`` then ``from_pretrained`` of the same class: the tied head shares the
    embedding's memory and every tensor and the logits come back bit-exact. Returns the loaded model."""
    model.save_pretrained(folder)
    loaded = type(model).from_pretrained(folder).eval()
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    reference = model.state_dict()
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, reference[name]), name
    with torch.no_grad():
        assert torch.equal(loaded(input_ids, use_cache=False).logits, model(input_ids, use_cache=False).logits)
    return loaded


@pytest.fixture
def round_trip():
    return _round_trip


def _load_without_level_weights(model, folder):
    """Save ``model``, drop its level parameters from the checkpoint (as plain Mamba-2 / Gated
    DeltaNet weights lack them) and load it: from_pretrained builds on the meta device, so the
    level projection (0), scale (1) and bias (softplus^-1(1)) must come from _init_weights."""
    model.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in weights.items() if "level_" not in k}
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})
    loaded = type(model).from_pretrained(folder).eval()
    projections = [m for m in loaded.modules() if isinstance(m, LevelProjection)]
    tables = [m for m in loaded.modules() if isinstance(m, LevelWeights)]
    assert len(projections) == len(tables) == model.config.num_hidden_layers
    for projection, table in zip(projections, tables):
        assert torch.count_nonzero(projection.weight) == 0
        assert torch.equal(table.scale, torch.ones_like(table.scale))
        assert torch.allclose(table.bias, torch.full_like(table.bias, math.log(math.e - 1)))
    return loaded


@pytest.fixture
def load_without_level_weights():
    return _load_without_level_weights
