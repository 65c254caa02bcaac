"""Memory sizes are counted exactly as the code allocates them."""
from __future__ import annotations

import json

import pytest
import torch

from hf_loglinear import LogLinearGatedDeltaNetConfig, LogLinearGatedDeltaNetForCausalLM
from hf_loglinear import LogLinearMamba2Config, LogLinearMamba2ForCausalLM
from hf_loglinear.cli import main
from hf_loglinear.memory import decode_state_bytes, live_levels, prefill_buffer_bytes, shape_from_config


@pytest.mark.parametrize("family", ["mamba2", "gdn"])
def test_decode_state_bytes_equal_the_cache(family):
    if family == "mamba2":
        config = LogLinearMamba2Config(vocab_size=64, hidden_size=32, num_heads=4, head_dim=16, state_size=8,
                                       n_groups=2, num_hidden_layers=2, num_levels=5)
        model = LogLinearMamba2ForCausalLM(config).eval()
    else:
        config = LogLinearGatedDeltaNetConfig(vocab_size=64, hidden_size=32, num_heads=2, num_v_heads=4, head_dim=8,
                                              expand_v=2, num_hidden_layers=2, num_levels=5)
        model = LogLinearGatedDeltaNetForCausalLM(config).eval()
    with torch.no_grad():
        cache = model(torch.randint(0, 64, (3, 37)), use_cache=True).cache
    shape = shape_from_config(config.to_dict())
    assert decode_state_bytes(shape, 37, batch=3, dtype="float32") == cache.nbytes


def test_live_levels_count_the_non_empty_levels():
    from hf_loglinear.ops import LevelState
    from hf_loglinear.kernels.recurrent import step_loglinear_attention

    state = LevelState.zeros(1, 1, 6, 1, 1)
    ones = torch.ones(1, 1, 1)
    for position in range(1, 200):
        step_loglinear_attention(state, ones, ones, ones, torch.zeros(1, 1), torch.ones(1, 1, 6))
        assert live_levels(position, 6) == int((state.levels[0, 0, :, 0, 0] != 0).sum())


def test_prefill_buffer_is_linear_under_scalar_decay_and_t_log_t_under_the_delta_rule():
    mamba2 = shape_from_config(dict(model_type="loglinear_mamba2", hidden_size=64, num_heads=2, head_dim=16,
                                    state_size=8, num_hidden_layers=1, num_levels=15))
    slot = 2 * 8 * 16 * 2  # heads x K x V x bf16
    # one slot per run of chunks reading one state, + 2 per scan for rows starting mid-bucket:
    assert prefill_buffer_bytes(mamba2, 64) == 2 * slot  # one chunk: the top scan alone
    assert prefill_buffer_bytes(mamba2, 1024) == (9 + 5 + 3 + 2 + 2) * slot  # 16 chunks, scans 0..3 + top
    million = sum(((1 << 14) - 1 >> e) + 2 for e in range(1, 8)) + ((1 << 14) - 1 >> 7) + 2  # 16384 chunks
    assert prefill_buffer_bytes(mamba2, 1 << 20) == million * slot and million < 1.001 * (1 << 14)
    gdn = shape_from_config(dict(model_type="loglinear_gated_deltanet", num_heads=2, head_dim=16, expand_v=1,
                                 num_hidden_layers=1, num_levels=15))
    slot = 2 * 16 * 16 * 2
    assert prefill_buffer_bytes(gdn, 1024) == 16 * 5 * slot  # every chunk records every scan it reads
    assert prefill_buffer_bytes(gdn, 1 << 20) == (1 << 14) * 8 * slot  # capped at L - 2 - 6 + 1 scans


def test_memory_cli(tmp_path, capsys):
    assert main(["memory", "transformer", "--seq-len", "1000"]) == 0
    # 2 (K, V) x 21 layers x 16 heads x 96 x 1000 tokens x 2 bytes = 123.0 MiB
    assert "| transformer | 1000 | 123.0 MiB |" in capsys.readouterr().out
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba2", "hidden_size": 64, "num_heads": 4,
                                                      "head_dim": 32, "state_size": 16, "num_hidden_layers": 2}))
    assert main(["memory", str(tmp_path), "--seq-len", "10"]) == 0
    assert main(["memory", str(tmp_path / "missing")]) == 2
    assert "neither a preset" in capsys.readouterr().err


@pytest.mark.parametrize(
    "source, num_levels, batch, length, measured_gib",
    [  # peak extra memory of one op's fwd+bwd on the H200 (benchmarks/RESULTS.md, sessions 5 and 6)
        ("loglinear-mamba2", 15, 16, 2048, 1.89),
        ("loglinear-mamba2", 15, 2, 16384, 1.77),
        ("loglinear-mamba2", 15, 1, 65536, 3.25),
        ("loglinear-mamba2", 18, 1, 131072, 6.32),
        ("loglinear-mamba2", 21, 1, 1 << 20, 49.28),
        ("mamba2", 1, 16, 2048, 1.69),
        ("mamba2", 1, 1, 65536, 3.08),
        ("loglinear-gated-deltanet", 12, 16, 2048, 10.46),
        ("loglinear-gated-deltanet", 14, 4, 8192, 12.99),
        ("gated-deltanet", 1, 16, 2048, 5.39),
        ("sdpa", 1, 16, 2048, 0.91),
        ("sdpa", 1, 1, 65536, 1.57),
    ],
)
def test_training_op_memory_matches_the_h200_measurements(source, num_levels, batch, length, measured_gib):
    """The benchmark's shapes (48 heads x 128 x 64, G = 1; Gated DeltaNet 6 x 192 x 384, G = 6;
    attention 16 x 96) in bf16; the measured
    peak includes triton.testing.do_bench's 256 MiB L2-flush buffer."""
    import dataclasses

    from hf_loglinear.memory import load_shape, train_op_bytes

    if source == "sdpa":
        shape = shape_from_config(dict(num_attention_heads=16, hidden_size=1536, head_dim=96, num_hidden_layers=1))
    else:
        shape = dataclasses.replace(load_shape(source), num_levels=num_levels)
    modelled = train_op_bytes(shape, length, batch, "bfloat16") / 2**30 + 0.25
    assert abs(modelled / measured_gib - 1) < 0.03, (modelled, measured_gib)


def test_training_op_memory_is_linear_in_t_under_scalar_decay():
    from hf_loglinear.memory import load_shape, train_op_bytes

    # Bytes per token settle once the per-scan constant (a row's partial runs) is diluted: at 16K
    # it adds 1.6%. Per token, a term growing like T log T would grow by 23 / 17 from 128K to 8M.
    shape = load_shape("loglinear-mamba2")
    per_token = [train_op_bytes(shape, n) / n for n in (1 << 17, 1 << 20, 1 << 23)]
    assert max(per_token) / min(per_token) < 1.01
