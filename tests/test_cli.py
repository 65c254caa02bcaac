"""The ``hf-loglinear`` command: what it prints, its exit codes, and that failures and kills leave no
destination behind. Source checkpoints are written by transformers' own Mamba2ForCausalLM."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from hf_loglinear.cli import main, parse_size


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


@pytest.fixture
def mamba2_folder(tmp_path):
    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=64, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1,
                          num_hidden_layers=2, chunk_size=16)
    folder = tmp_path / "src"
    Mamba2ForCausalLM(config).save_pretrained(folder, max_shard_size="20KB")
    return folder


def cli_command():
    script = shutil.which("hf-loglinear")
    return [script] if script else [sys.executable, "-m", "hf_loglinear.cli"]


def test_convert_through_the_console_script(mamba2_folder, tmp_path):
    dst = tmp_path / "out"
    run = subprocess.run([*cli_command(), "convert", str(mamba2_folder), str(dst), "--max-shard-size", "30KB"],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"wrote {dst}" in run.stdout
    assert "verification: max |logit diff|" in run.stdout
    report = json.loads((dst / "conversion.json").read_text())
    assert report["verification"]["max_abs_diff"] <= 1e-5
    assert (dst / "model.safetensors.index.json").exists()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("shard", "is missing from"),
        ("shape", "wrong shape"),
        ("bad_config", "is not a valid mamba2 config: Inconsistent configuration"),
        ("model_type", "unsupported checkpoint: model_type='bert'"),
        ("dst_exists", "already exists and is not empty; pass --overwrite"),
        ("private", "--private only applies with --push-to-hub"),
    ],
)
def test_bad_input_exits_2_with_one_line(mamba2_folder, tmp_path, capsys, case, message):
    src, dst, extra = mamba2_folder, tmp_path / "out", []
    if case == "missing":
        src = tmp_path / "no-such-folder"
    elif case == "shard":
        sorted(src.glob("model-*.safetensors"))[0].unlink()
    elif case in ("shape", "bad_config", "model_type"):
        config = json.loads((src / "config.json").read_text())
        config.update({"shape": {"state_size": 16}, "bad_config": {"hidden_size": 48}, "model_type": {"model_type": "bert"}}[case])
        (src / "config.json").write_text(json.dumps(config))
    elif case == "dst_exists":
        dst.mkdir()
        (dst / "keep.txt").write_text("mine")
    elif case == "private":
        extra = ["--private"]
    code = main(["convert", str(src), str(dst), "--no-verify", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hf-loglinear convert: error: ") and message in err
    if case == "dst_exists":
        assert [p.name for p in dst.iterdir()] == ["keep.txt"]
    else:
        assert not dst.exists()
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_overwrite_and_options(mamba2_folder, tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["convert", str(mamba2_folder), str(dst), "--no-verify", "--num-levels", "9"]) == 0
    assert main(["convert", str(mamba2_folder), str(dst), "--no-verify", "--overwrite", "--dtype", "bfloat16"]) == 0
    config = json.loads((dst / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["num_levels"] == 15
    out = capsys.readouterr().out
    assert out.count(f"wrote {dst}") == 2 and "verification: skipped" in out


def test_parse_size():
    assert parse_size("2GB") == 2 * 1024**3 and parse_size("500MB") == 500 * 1024**2 and parse_size("77") == 77
    with pytest.raises(Exception, match="not a size"):
        parse_size("two gigs")


def _partial_with_config(parent):
    for p in parent.iterdir():
        if ".partial-" in p.name and (p / "config.json").exists():
            return p
    return None


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_conversion_leaves_no_destination(tmp_path, sig):
    """Killed while verifying (weights and config already staged): dst never appears. SIGTERM also
    removes the staging folder; SIGKILL cannot, but the staging folder is hidden beside dst."""
    torch.manual_seed(0)
    config = Mamba2Config(vocab_size=2048, hidden_size=256, num_heads=8, head_dim=64, state_size=64,
                          num_hidden_layers=6, chunk_size=64)
    src = tmp_path / "src"
    Mamba2ForCausalLM(config).save_pretrained(src)
    dst = tmp_path / "out"
    proc = subprocess.Popen([*cli_command(), "convert", str(src), str(dst)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 120
    while _partial_with_config(tmp_path) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "conversion finished before it could be killed"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not dst.exists()
    if sig == signal.SIGTERM:
        assert _partial_with_config(tmp_path) is None and proc.returncode == 130


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("convert", "upload", "quickstart"))
