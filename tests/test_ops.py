"""Public operator API: backend dispatch and input validation."""
from __future__ import annotations

import pytest
import torch

from hf_loglinear import LevelState, loglinear_attention, loglinear_attention_step


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gdn"])
def test_backends_agree(inputs, delta):
    x = inputs(2, 90, 2, 4, 8, 4, 5, delta=delta)
    o_ref, s_ref = loglinear_attention(**x, backend="reference", output_final_state=True)
    o_t, s_t = loglinear_attention(**x, backend="torch", output_final_state=True)
    o_d, s_d = loglinear_attention(**x, output_final_state=True)  # CPU default: torch
    assert torch.allclose(o_t, o_ref, rtol=0, atol=1e-12) and torch.equal(o_d, o_t)
    assert torch.allclose(s_t.levels, s_ref.levels, rtol=0, atol=1e-12)
    assert loglinear_attention(**x)[1] is None


def test_bfloat16_inputs_keep_fp32_states(inputs):
    x = inputs(1, 70, 1, 2, 8, 4, 4, delta=True)
    ref, s_ref = loglinear_attention(**x, output_final_state=True)
    low = {k: v.to(torch.bfloat16) for k, v in x.items()}
    low["g"] = x["g"].float()  # decay may stay fp32 beside bf16 q/k/v
    o, state = loglinear_attention(**low, output_final_state=True)
    assert o.dtype == torch.bfloat16 and state.levels.dtype == torch.float32
    # bf16 has 8 mantissa bits (rel. rounding 2^-9 ~ 2e-3 per input); 3e-2 bounds the sum of those
    assert ((o.double() - ref).abs().max() / ref.abs().max()) < 3e-2


def test_step_shapes_and_position(inputs):
    state = LevelState.zeros(3, 4, 5, 8, 6)
    x = inputs(3, 1, 2, 4, 8, 6, 5, delta=False)
    token = {k: v[:, 0] for k, v in x.items() if v is not None}
    o, out_state = loglinear_attention_step(state, **token)
    assert o.shape == (3, 4, 6) and out_state is state and state.position.tolist() == [1, 1, 1]


def good(inputs):
    return inputs(2, 10, 2, 4, 8, 4, 3, delta=True)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda x: x.update(q=x["q"][0]), r"q has shape \(10, 2, 8\)"),
        (lambda x: x.update(k=x["k"][:, :, :1]), r"k has shape \(2, 10, 1, 8\)"),
        (lambda x: x.update(v=x["v"][:, :5]), r"v has shape \(2, 5, 4, 4\)"),
        (lambda x: x.update(v=x["v"][:, :, :3]), r"G=2 .* must divide .* H=3"),
        (lambda x: x.update(g=x["g"][..., :2]), r"g has shape \(2, 10, 2\)"),
        (lambda x: x.update(beta=x["beta"][:1]), r"beta has shape \(1, 10, 4\)"),
        (lambda x: x.update(level_weights=x["level_weights"][..., :0]), r"L >= 1"),
        (lambda x: x.update(level_weights=x["level_weights"][:, :, :2]), r"level_weights has shape"),
        (lambda x: x.update(v=x["v"].float()), r"q, k and v must share one dtype"),
        (lambda x: x.update(g=x["g"].half()), r"g has dtype torch.float16"),
        (lambda x: x.update(q=x["q"].long(), k=x["k"].long(), v=x["v"].long()), r"q must be a floating"),
    ],
)
def test_bad_inputs_name_the_argument(inputs, change, match):
    x = good(inputs)
    change(x)
    with pytest.raises(ValueError, match=match):
        loglinear_attention(**x)


def test_bad_packing_and_state(inputs):
    x = good(inputs)
    with pytest.raises(ValueError, match="cu_seqlens packs sequences along T and needs B = 1"):
        loglinear_attention(**x, cu_seqlens=torch.tensor([0, 10]))
    one = {k: v[:1] for k, v in x.items()}
    with pytest.raises(ValueError, match="rise from 0 to T=10"):
        loglinear_attention(**one, cu_seqlens=torch.tensor([0, 7, 5, 10]))
    with pytest.raises(ValueError, match="cu_seqlens must be a 1-D int"):
        loglinear_attention(**one, cu_seqlens=torch.tensor([0.0, 10.0]))
    wrong = LevelState.zeros(2, 4, 5, 8, 4)
    with pytest.raises(ValueError, match=r"initial_state.levels has shape \(2, 4, 5, 8, 4\)"):
        loglinear_attention(**x, initial_state=wrong)
    with pytest.raises(ValueError, match="initial_state must be a LevelState"):
        loglinear_attention(**x, initial_state=torch.zeros(2, 4, 3, 8, 4))
    with pytest.raises(ValueError, match="backend must be one of"):
        loglinear_attention(**x, backend="cuda")
    step = {k: v[:, 0] for k, v in x.items()}
    with pytest.raises(ValueError, match=r"state.levels has shape \(2, 4, 5, 8, 4\)"):
        loglinear_attention_step(wrong, **step)
