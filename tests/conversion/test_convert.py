"""Every format converts into a model that computes what the source computed.

For each source: the converter's own verification (random batches of 65 and 140 tokens, fp32)
must report a max logit difference <= 1e-5, and greedy decoding of 40 tokens by the converted
model (through generate() and its cache) must match greedy decoding of the source."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from hf_loglinear.conversion import convert
from hf_loglinear.conversion.converter import CONVERSIONS
from hf_loglinear.conversion.io import CheckpointReader, read_config

ATOL = 1e-5
PROMPT = torch.tensor([[5, 17, 42, 9, 33, 61, 2, 77]])


def load_converted(dst):
    """The package's registered classes (they win over the folder's auto_map)."""
    return AutoModelForCausalLM.from_pretrained(dst, dtype=torch.float32).eval()


def assert_same_greedy(src, fmt, dst, new_tokens=40):
    """The converted model's greedy generation (generate() and its cache) is the source's: each
    generated token is the source's argmax given the tokens before it (one causal forward checks all)."""
    model = load_converted(dst)
    model.generation_config.eos_token_id = None  # plain argmax: no stop, no eos masking
    with torch.no_grad():
        ids = model.generate(PROMPT, max_new_tokens=new_tokens, do_sample=False)
    assert ids.shape[1] == PROMPT.shape[1] + new_tokens
    source = CONVERSIONS[fmt](src, read_config(src), CheckpointReader(src), 15).source_logits()
    source_choice = source(ids)[:, PROMPT.shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(source_choice, ids[:, PROMPT.shape[1] :])


def tensor_dtypes(folder):
    dtypes = {}
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            dtypes.update({name: f.get_slice(name).get_dtype() for name in f.keys()})
    return dtypes


def check_exact(report, src, dst, fmt):
    assert report.format == fmt
    assert report.verification["lengths"] == [65, 140]
    assert report.verification["max_abs_diff"] <= ATOL, report.verification
    assert json.loads((dst / "conversion.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    card = (dst / "README.md").read_text()
    assert f"{report.verification['max_abs_diff']:.3g}" in card and "trust_remote_code=True" in card
    assert_same_greedy(src, fmt, dst)


@pytest.mark.parametrize(
    "n_groups, tied, dtype, shard",
    [(1, False, torch.float32, None), (2, True, torch.bfloat16, "20KB"), (2, False, torch.float32, "30KB")],
    ids=["g1-untied-fp32", "g2-tied-bf16-sharded", "g2-untied-fp32-sharded"],
)
def test_transformers_mamba2(transformers_mamba2, tmp_path, n_groups, tied, dtype, shard):
    src = transformers_mamba2(n_groups=n_groups, tied=tied, dtype=dtype, shard=shard)
    assert (src / "model.safetensors.index.json").exists() == bool(shard)
    dst = tmp_path / "out"
    report = convert(src, dst, progress=False, max_shard_size=40_000 if shard else 2**31)
    check_exact(report, src, dst, "mamba2")
    dtypes = tensor_dtypes(dst)
    expected = "BF16" if dtype == torch.bfloat16 else "F32"
    assert {d for n, d in dtypes.items() if ".level_weights." not in n} == {expected}
    assert {d for n, d in dtypes.items() if ".level_weights." in n} == {"F32"}
    assert ("lm_head.weight" in dtypes) == (not tied)
    assert (dst / "model.safetensors.index.json").exists() == bool(shard)
    assert (dst / "generation_config.json").exists()


@pytest.mark.parametrize("tied, n_groups", [(True, 1), (False, 2)])
def test_state_spaces_mamba2(mamba_ssm_checkpoint, tmp_path, tied, n_groups):
    src, _ = mamba_ssm_checkpoint(tied=tied, n_groups=n_groups)
    dst = tmp_path / "out"
    report = convert(src, dst, progress=False)
    check_exact(report, src, dst, "mamba_ssm")
    config = json.loads((dst / "config.json").read_text())
    assert config["vocab_size"] == 104 and config["tie_word_embeddings"] == tied  # padded to a multiple of 8
    assert "gpt-neox-20b" in report.notes[0]  # the family's tokenizer lives elsewhere: the report says so


@pytest.mark.parametrize("tied, num_v_heads", [(False, None), (True, 4)], ids=["untied", "tied-gva"])
def test_fla_gated_deltanet(gdn_checkpoint, tmp_path, tied, num_v_heads):
    src = gdn_checkpoint(tied=tied, num_v_heads=num_v_heads)
    dst = tmp_path / "out"
    report = convert(src, dst, progress=False)
    check_exact(report, src, dst, "gated_deltanet")
    assert json.loads((dst / "config.json").read_text())["use_query_scale"] is True


def test_authors_h_gated_deltanet(gdn_checkpoint, tmp_path):
    src = gdn_checkpoint(authors=True)
    dst = tmp_path / "out"
    check_exact(convert(src, dst, progress=False), src, dst, "h_gated_deltanet")
    config = json.loads((dst / "config.json").read_text())
    assert config["use_query_scale"] is False and config["num_levels"] == 15
    with safe_open(str(dst / "model.safetensors"), framework="pt") as f, safe_open(str(src / "model.safetensors"), framework="pt") as g:
        assert torch.equal(f.get_tensor("model.layers.1.attn.level_weights.scale"), g.get_tensor("model.layers.1.attn.L"))
        assert torch.equal(f.get_tensor("model.layers.1.attn.level_proj.weight"), g.get_tensor("model.layers.1.attn.l_proj.weight"))
        assert not f.get_tensor("model.layers.1.attn.level_weights.bias").any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_authors_hattention(hattention_checkpoint, tmp_path, dtype):
    src = hattention_checkpoint(dtype=dtype)
    dst = tmp_path / "out"
    report = convert(src, dst, progress=False)
    check_exact(report, src, dst, "hattention")
    config = json.loads((dst / "config.json").read_text())
    assert config["use_mlp"] and config["intermediate_size"] == 256 and config["level_bias_init"] == 0.0


def test_relevel_our_own_checkpoints(transformers_mamba2, gdn_checkpoint, layouts, tmp_path):
    """More levels copy the top one: exact at every length. Fewer keep the lowest ones: exact only
    up to 2^(L-1) tokens, so the 140-token verification must refuse 4 levels (8 tokens)."""
    ours = tmp_path / "ours"
    convert(transformers_mamba2(n_groups=2), ours, num_levels=6, progress=False, verify=False)
    state = load_file(ours / "model.safetensors")  # as if fine-tuned: every level weighs differently
    levels = {k: v for k, v in state.items() if ".level_" in k}
    save_file({**state, **layouts.randomise(levels, seed=3)}, str(ours / "model.safetensors"), metadata={"format": "pt"})

    report = convert(ours, tmp_path / "l9", num_levels=9, progress=False)
    check_exact(report, ours, tmp_path / "l9", "loglinear_mamba2")
    proj = load_file(tmp_path / "l9" / "model.safetensors")["backbone.layers.0.mixer.level_proj.weight"].view(4, 9, -1)
    assert torch.equal(proj[:, 6:], proj[:, 5:6].expand(-1, 3, -1))
    with pytest.raises(RuntimeError, match="verification failed"):
        convert(ours, tmp_path / "l4", num_levels=4, progress=False)
    assert not (tmp_path / "l4").exists()

    gdn = tmp_path / "gdn_ours"
    convert(gdn_checkpoint(authors=True), gdn, progress=False, verify=False)
    report = convert(gdn, tmp_path / "gdn17", num_levels=17, progress=False)
    check_exact(report, gdn, tmp_path / "gdn17", "loglinear_gated_deltanet")


def test_converted_folder_loads_as_remote_code_without_the_package(transformers_mamba2, tmp_path):
    dst = tmp_path / "out"
    convert(transformers_mamba2(), dst, progress=False, verify=False)
    model = load_converted(dst)
    with torch.no_grad():
        expected = model(PROMPT, use_cache=False).logits
    script = (
        "import sys, torch; from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(dst)!r}, trust_remote_code=True).eval()\n"
        "assert 'hf_loglinear' not in sys.modules, 'the package was imported'\n"
        f"print(m(torch.tensor({PROMPT.tolist()}), use_cache=False).logits.abs().sum().item())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected.abs().sum().item(), rel=1e-6)
