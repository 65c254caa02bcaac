"""Does the converted model compute what the source computed? Logits on random token batches.

The source runs first and is freed before the converted model loads, so verification holds one
model at a time (in float32, on the CPU).
"""
from __future__ import annotations

import gc

import torch
from tqdm.auto import tqdm

from .plan import Conversion, our_model_logits

__all__ = ["DEFAULT_LENGTHS", "verify_conversion"]

# Lengths crossing the 64-token chunk boundary and a power of two (128).
DEFAULT_LENGTHS = (65, 140)


def _logits(fn, batches, desc, progress):
    return [fn(ids) for ids in tqdm(batches, desc=desc, disable=not progress, leave=False)]


def verify_conversion(
    conversion: Conversion, folder, config, *, lengths=DEFAULT_LENGTHS, batch: int = 2, seed: int = 0,
    progress: bool = True,
) -> dict:
    """Max absolute logit difference and its ratio to the largest source logit (``max_rel_diff``)."""
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, conversion.vocab_size, (batch, n), generator=gen) for n in lengths]
    source = conversion.source_logits()
    expected = _logits(source, batches, "source model", progress)
    del source
    gc.collect()
    got = _logits(our_model_logits(folder, config), batches, "converted model", progress)
    max_abs = max((a - b).abs().max().item() for a, b in zip(expected, got))
    largest = max(a.abs().max().item() for a in expected)
    return {
        "max_abs_diff": max_abs,
        "max_rel_diff": max_abs / largest if largest > 0 else max_abs,
        "max_abs_logit": largest,
        "lengths": list(lengths),
        "batch": batch,
        "seed": seed,
        "dtype": "float32",
        "device": "cpu",
        "reference": conversion.reference,
    }
