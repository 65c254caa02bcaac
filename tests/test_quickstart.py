"""The README's quickstart command, shortened with --steps (the full run is CI's README step)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_loglinear.cli import main
from hf_loglinear.quickstart import load_corpus


def test_quickstart_command(tmp_path):
    out = tmp_path / "qs"
    script = shutil.which("hf-loglinear")
    command = [script] if script else [sys.executable, "-m", "hf_loglinear.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run([*command, "quickstart", "--out", str(out), "--steps", "3", "--lora-steps", "2"], capture_output=True,
                         text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    printed = run.stdout
    assert "verification: max |logit diff|" in printed
    assert "greedy decoding, 40 tokens: identical to the source model" in printed
    assert "LoRA fine-tuning: rank 8, 2 steps" in printed
    hub = out / "loglinear-tiny-lora" / "merged"
    assert "sample (loglinear-tiny-lora/merged): " in printed and f"hub-ready folder: {hub}" in printed

    report = json.loads((out / "loglinear-tiny" / "conversion.json").read_text())
    assert report["verification"]["max_abs_diff"] <= 1e-5
    assert json.loads((hub / "conversion.json").read_text()) == report
    for folder in (out / "loglinear-tiny", hub):
        card = (folder / "README.md").read_text()
        assert "license: apache-2.0" in card and "trust_remote_code=True" in card
    assert "- then fine-tuned with LoRA (rank 8, 2 steps" in (hub / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(hub)  # the folder loads as it would from the hub
    tokenizer = AutoTokenizer.from_pretrained(hub)
    assert model.config.vocab_size == len(tokenizer) and tokenizer.decode(tokenizer("the keeper").input_ids) == "the keeper"
    assert sorted(p.name for p in out.iterdir()) == ["loglinear-tiny", "loglinear-tiny-lora", "mamba2-tiny"]


def test_corpus_is_shipped_and_large_enough():
    texts = load_corpus()
    assert len(texts) >= 1 and all(t.strip() for t in texts)


def test_quickstart_refuses_a_full_folder(tmp_path, capsys):
    out = tmp_path / "qs"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["quickstart", "--out", str(out), "--steps", "1"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
