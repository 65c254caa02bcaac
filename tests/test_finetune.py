"""LoRA fine-tuning: loss falls, the adapter and the merged model reload exactly, every default target
and the level weights are live, packed rows equal documents run alone, resume is exact, the CLI runs.

Tiny models on CPU in float32: a transformers Mamba2ForCausalLM converted with our converter, and a
log-linear Gated DeltaNet with random weights; the byte-level tokenizer needs no download; the text
is the prose shipped for the quickstart.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Mamba2Config, Mamba2ForCausalLM

import hf_loglinear
from hf_loglinear import LogLinearGatedDeltaNetConfig, LogLinearGatedDeltaNetForCausalLM
from hf_loglinear.cli import main
from hf_loglinear.conversion import convert
from hf_loglinear.data import build_datasets, byte_tokenizer, collate_packed, pack_documents
from hf_loglinear.finetune import DEFAULT_TARGETS, finetune, lora_model
from hf_loglinear.modeling_loglinear_gated_deltanet import LogLinearGatedDeltaNetMixer
from hf_loglinear.modules import NEUTRAL_LEVEL_BIAS

EOS_ID = 256
TRAIN = dict(rank=8, alpha=16, lr=1e-2, max_length=128, batch_size=2, eval_fraction=0.1, seed=0, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def small_text(size: int = 10_000) -> str:
    """The first ``size`` characters of the prose the package ships for its quickstart."""
    return "".join(p.read_text() for p in sorted((Path(hf_loglinear.__file__).parent / "corpus").glob("*.txt")))[:size]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A converted tiny Mamba-2 (with tokenizer), a tiny log-linear GDN folder, and a text file."""
    root = tmp_path_factory.mktemp("finetune")
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    source = Mamba2ForCausalLM(
        Mamba2Config(vocab_size=257, hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16, num_heads=8,
                     expand=2, n_groups=1, chunk_size=16, bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    )
    source.save_pretrained(root / "mamba2")
    tokenizer.save_pretrained(root / "mamba2")
    convert(root / "mamba2", root / "mamba2-loglinear", num_levels=4, verify=False, progress=False)
    gdn = LogLinearGatedDeltaNetForCausalLM(
        LogLinearGatedDeltaNetConfig(vocab_size=257, hidden_size=64, num_hidden_layers=2, num_heads=2, head_dim=16,
                                     expand_v=2, num_levels=4, intermediate_size=96, bos_token_id=EOS_ID,
                                     eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    )
    gdn.save_pretrained(root / "gdn")
    tokenizer.save_pretrained(root / "gdn")
    (root / "text.txt").write_text(small_text())
    return root


@pytest.fixture(scope="module")
def trained(workspace):
    summary = finetune(workspace / "mamba2-loglinear", workspace / "text.txt", workspace / "run", steps=50, merge=True, **TRAIN)
    return workspace / "run", summary


def sample_ids(length=90, seed=1):
    return torch.randint(0, 256, (2, length), generator=torch.Generator().manual_seed(seed))


def test_loss_falls_by_30_percent_in_50_steps(trained):
    out, summary = trained
    losses = [h["loss"] for h in summary["history"]]
    assert len(losses) == 50 and all(math.isfinite(x) for x in losses)
    assert losses[-1] <= 0.7 * losses[0], losses
    assert summary["eval_loss"] <= 0.7 * losses[0] and summary["eval_perplexity"] == pytest.approx(math.exp(summary["eval_loss"]))
    assert json.loads((out / "finetune.json").read_text())["final_loss"] == losses[-1]
    assert summary["tokens_per_s"] > 0


def test_adapter_reloads_to_the_trained_model(trained, workspace):
    """The reloaded adapter reproduces the eval loss measured in training, through both peft loaders."""
    out, summary = trained
    _, eval_rows = build_datasets(workspace / "text.txt", byte_tokenizer(), max_length=128, eval_fraction=0.1, seed=0)
    batch = collate_packed([eval_rows[i] for i in range(len(eval_rows))])
    base = AutoModelForCausalLM.from_pretrained(workspace / "mamba2-loglinear")
    with torch.no_grad():
        base_logits = base(input_ids=sample_ids()).logits
        model = PeftModel.from_pretrained(base, out / "adapter").eval()
        auto = AutoPeftModelForCausalLM.from_pretrained(out / "adapter").eval()
        assert model(**batch).loss.item() == pytest.approx(summary["eval_loss"], abs=1e-6)
        logits = model(input_ids=sample_ids()).logits
        assert torch.equal(auto(input_ids=sample_ids()).logits, logits)
    assert (logits - base_logits).abs().max() > 1e-2  # the adapter is really applied


# Runs where `import hf_loglinear` (and triton) fail: the models come from the folders' remote code.
REMOTE_LOAD = """
import importlib.abc, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hf_loglinear", "triton"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Blocker())
import torch
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM
adapter, merged, ids_file, out_file = sys.argv[1:5]
ids = torch.load(ids_file)
with torch.no_grad():  # float64: see test_merged_model_matches_adapter
    auto = AutoPeftModelForCausalLM.from_pretrained(adapter, trust_remote_code=True).eval().double()
    full = AutoModelForCausalLM.from_pretrained(merged, trust_remote_code=True).eval().double()
    torch.save({"adapter": auto(input_ids=ids, use_cache=False).logits, "merged": full(input_ids=ids, use_cache=False).logits,
                "module": type(full).__module__}, out_file)
"""


def test_adapter_and_merged_model_load_as_remote_code_without_the_package(trained, workspace, tmp_path):
    out, _ = trained
    torch.save(sample_ids(), tmp_path / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(out / "adapter"), str(out / "merged"), str(tmp_path / "ids.pt"),
         str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert remote["module"].startswith("transformers_modules.")
    base = AutoModelForCausalLM.from_pretrained(workspace / "mamba2-loglinear")
    with torch.no_grad():
        logits = PeftModel.from_pretrained(base, out / "adapter").eval().double()(input_ids=sample_ids(), use_cache=False).logits
    assert torch.equal(remote["adapter"], logits)
    assert (remote["merged"] - logits).abs().max() < 1e-5


def test_merged_model_matches_adapter(trained, workspace):
    out, _ = trained
    merged_dir = out / "merged"
    config = json.loads((merged_dir / "config.json").read_text())
    assert "AutoModelForCausalLM" in config["auto_map"] and (merged_dir / "modeling_loglinear_mamba2.py").is_file()
    assert (merged_dir / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(workspace / "mamba2-loglinear")
    adapter = PeftModel.from_pretrained(base, out / "adapter").eval()
    # Run in float64: the merged weights W + s * B A are stored in float32, and that rounding is what
    # is checked; a float32 forward alone already differs by about 1e-5 between x W' and x W + s (x A) B.
    with torch.no_grad():
        ids = sample_ids()
        diff = merged.double()(input_ids=ids, use_cache=False).logits - adapter.double()(input_ids=ids, use_cache=False).logits
    assert diff.abs().max().item() < 1e-5, diff.abs().max().item()


def test_level_weights_train_and_are_saved(trained):
    out, _ = trained
    state = load_file(out / "adapter" / "adapter_model.safetensors")
    tables = {k: v for k, v in state.items() if ".level_weights." in k}
    assert len(tables) == 2 * 2  # scale and bias in each of the 2 layers
    scales = [v for k, v in tables.items() if k.endswith("scale")]
    biases = [v for k, v in tables.items() if k.endswith("bias")]
    assert all((s - 1).abs().max() > 1e-4 for s in scales)
    assert all((b - NEUTRAL_LEVEL_BIAS).abs().max() > 1e-4 for b in biases)
    assert {k.split(".")[-3] for k in state if "lora_" in k} == set(DEFAULT_TARGETS["loglinear_mamba2"])


def lora_on(folder, seed=0):
    torch.manual_seed(seed)
    return lora_model(AutoModelForCausalLM.from_pretrained(folder), rank=4, dropout=0.0).eval()


@pytest.mark.parametrize("folder", ["mamba2-loglinear", "gdn"])
def test_every_default_target_and_level_table_is_live(workspace, folder):
    """Perturbing any single LoRA B matrix (or level-weight table) moves the logits: none is bypassed."""
    model = lora_on(workspace / folder)
    family = model.config.model_type
    ids = sample_ids(70)
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        lora_layers = {name: m for name, m in model.named_modules() if hasattr(m, "lora_B") and "default" in m.lora_B}
        assert {name.rsplit(".", 1)[-1] for name in lora_layers} == set(DEFAULT_TARGETS[family])
        assert len(lora_layers) == 2 * len(DEFAULT_TARGETS[family])
        for name, layer in lora_layers.items():
            weight = layer.lora_B["default"].weight
            weight.normal_(std=0.1)
            moved = (model(input_ids=ids).logits - reference).abs().max().item()
            weight.zero_()
            assert moved > 1e-4, f"LoRA on {name} does not reach the output"
        tables = [m.modules_to_save["default"] for name, m in model.named_modules() if name.endswith("level_weights")]
        assert len(tables) == 2 and all(t.scale.requires_grad and t.bias.requires_grad for t in tables)
        for table in tables:
            table.bias.add_(0.5)
            moved = (model(input_ids=ids).logits - reference).abs().max().item()
            table.bias.sub_(0.5)
            assert moved > 1e-4


@pytest.mark.parametrize("folder", ["mamba2-loglinear", "gdn"])
def test_packed_batch_equals_documents_one_by_one(workspace, folder):
    model = lora_on(workspace / folder, seed=1)
    with torch.no_grad():
        for name, layer in model.named_modules():
            if hasattr(layer, "lora_B") and "default" in layer.lora_B:
                layer.lora_B["default"].weight.normal_(std=0.05)  # a live adapter
    gen = torch.Generator().manual_seed(2)
    documents = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (37, 50, 20, 61, 9, 70)]
    rows = pack_documents(documents, max_length=96, pad_token_id=EOS_ID)  # 247 tokens: 3 rows, docs split
    batch = collate_packed([rows[i] for i in range(len(rows))])
    with torch.no_grad():
        packed = model(**batch).loss.item()
        total, count = 0.0, 0
        cu = batch["cu_seqlens"].tolist()
        for start, end in zip(cu[:-1], cu[1:]):
            labels = batch["labels"][:, start:end]
            targets = int((labels[:, 1:] != -100).sum())
            if targets:
                loss = model(input_ids=batch["input_ids"][:, start:end], labels=labels).loss.item()
                total, count = total + loss * targets, count + targets
        leaky = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss.item()
    assert len(cu) - 1 > len(rows)  # several pieces per row
    assert packed == pytest.approx(total / count, abs=1e-5)
    assert abs(leaky - packed) > 1e-3  # without cu_seqlens documents do see each other


def test_resume_reproduces_an_uninterrupted_run(workspace):
    settings = dict(TRAIN, steps=6, save_every=3, max_length=64, batch_size=1, dropout=0.1)
    whole = finetune(workspace / "gdn", workspace / "text.txt", workspace / "whole", **settings)
    shutil.copytree(workspace / "whole" / "checkpoints" / "step-0000003", workspace / "resumed" / "checkpoints" / "step-0000003")
    resumed = finetune(workspace / "gdn", workspace / "text.txt", workspace / "resumed", resume=True, **settings)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]][3:]
    a = load_file(workspace / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(workspace / "resumed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    checkpoint = load_file(workspace / "whole" / "checkpoints" / "step-0000003" / "model.safetensors")
    assert checkpoint and all("lora_" in k or "level_weights" in k for k in checkpoint)  # no frozen weights

    with pytest.raises(ValueError, match="already holds a fine-tuning run"):
        finetune(workspace / "gdn", workspace / "text.txt", workspace / "whole", **settings)
    with pytest.raises(ValueError, match="cannot resume"):
        finetune(workspace / "gdn", workspace / "text.txt", workspace / "resumed", resume=True, **dict(settings, seed=1))


def test_gradient_checkpointing_gives_the_same_run(workspace, monkeypatch):
    """Same losses and adapter; the mixers really run twice per step (forward, then recompute)."""
    calls = []
    mixer_forward = LogLinearGatedDeltaNetMixer.forward
    monkeypatch.setattr(LogLinearGatedDeltaNetMixer, "forward", lambda *a, **k: calls.append(1) or mixer_forward(*a, **k))
    settings = dict(TRAIN, steps=3, max_length=64, dropout=0.0, eval_fraction=0.0)
    plain = finetune(workspace / "gdn", workspace / "text.txt", workspace / "plain", **settings)
    assert len(calls) == 3 * 2  # 3 steps x 2 layers
    checkpointed = finetune(workspace / "gdn", workspace / "text.txt", workspace / "ckpt", gradient_checkpointing=True, **settings)
    assert len(calls) == 3 * 2 + 3 * 2 * 2
    assert [h["loss"] for h in checkpointed["history"]] == pytest.approx([h["loss"] for h in plain["history"]], abs=1e-6)
    a = load_file(workspace / "plain" / "adapter" / "adapter_model.safetensors")
    b = load_file(workspace / "ckpt" / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_bad_arguments(workspace):
    with pytest.raises(ValueError, match="no default LoRA targets for model_type 'mamba2'"):
        finetune(workspace / "mamba2", workspace / "text.txt", workspace / "bad", **dict(TRAIN, steps=1))
    with pytest.raises(ValueError, match=r"\['nope'\] name no Linear"):
        lora_model(AutoModelForCausalLM.from_pretrained(workspace / "gdn"), target_modules=["q_proj", "nope"])
    with pytest.raises(ValueError, match="grad_accum must be >= 1"):
        finetune(workspace / "gdn", workspace / "text.txt", workspace / "bad", **dict(TRAIN, grad_accum=0))
    AutoModelForCausalLM.from_pretrained(workspace / "gdn").save_pretrained(workspace / "gdn-without-tokenizer")
    with pytest.raises(ValueError, match="no tokenizer could be loaded"):
        finetune(workspace / "gdn-without-tokenizer", workspace / "text.txt", workspace / "bad", **dict(TRAIN, steps=1))
    with pytest.raises(ValueError, match="cannot fill one batch"):
        finetune(workspace / "gdn", workspace / "text.txt", workspace / "bad", **dict(TRAIN, batch_size=10_000))


def test_cli_runs(workspace, capsys):
    argv = ["finetune", str(workspace / "gdn"), str(workspace / "text.txt"), str(workspace / "cli"), "--steps", "2",
            "--max-length", "64", "--rank", "4", "--grad-accum", "2", "--eval-fraction", "0.1", "--no-progress", "--merge"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "adapter written to" in printed and "merged model written to" in printed
    assert (workspace / "cli" / "adapter" / "adapter_model.safetensors").is_file()
    assert (workspace / "cli" / "merged" / "config.json").is_file()
    assert main(argv) == 2  # the folder holds a run now
    assert "already holds a fine-tuning run" in capsys.readouterr().err


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(workspace):
    """torchrun runs the same entry point data-parallel (gloo on CPU); 2 processes x grad_accum 1 follow
    the loss curve of 1 process x grad_accum 2 and write the same adapter."""
    settings = ["--steps", "4", "--max-length", "64", "--batch-size", "2", "--lr", "1e-2", "--dropout", "0",
                "--eval-fraction", "0.1", "--no-progress"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "hf_loglinear.finetune", str(workspace / "gdn"), str(workspace / "text.txt"), str(workspace / "ddp"),
               "--grad-accum", "1", *settings]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    single = finetune(workspace / "gdn", workspace / "text.txt", workspace / "single", steps=4, max_length=64, batch_size=2,
                      lr=1e-2, dropout=0.0, eval_fraction=0.1, grad_accum=2, progress=False)
    parallel = json.loads((workspace / "ddp" / "finetune.json").read_text())
    assert parallel["processes"] == 2 and single["processes"] == 1
    losses = [h["loss"] for h in parallel["history"]]
    assert losses == pytest.approx([h["loss"] for h in single["history"]], abs=1e-5)
    assert losses[-1] < losses[0] - 0.05  # a curve that moves, matched to 1e-5
    assert parallel["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    a = load_file(workspace / "ddp" / "adapter" / "adapter_model.safetensors")
    b = load_file(workspace / "single" / "adapter" / "adapter_model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
