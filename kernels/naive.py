"""The materialised quadratic form: O = (P * Lambda) V over each whole sequence (SPEC §2).

It is the chunked code with one block per sequence: no scan, the T x T level-weighted
coefficient matrix formed outright. Memory O(T^2): for tests and small inputs.
"""
from __future__ import annotations

from .chunk import chunk_loglinear_attention


def naive_loglinear_attention(
    q, k, v, g, level_weights, beta=None, cu_seqlens=None, initial_state=None, output_final_state=False
):
    return chunk_loglinear_attention(
        q, k, v, g, level_weights, beta, cu_seqlens, initial_state, output_final_state, chunk_size=None
    )
