"""Bad sources and destinations fail with a ValueError naming the problem, and leave nothing behind."""
from __future__ import annotations

import json

import pytest
import torch

from hf_loglinear.conversion import UnknownFormatError, convert
from hf_loglinear.conversion.mamba2 import Mamba2Conversion


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def edit_config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def assert_refused(src, dst, match, error=ValueError, **kwargs):
    with pytest.raises(error, match=match):
        convert(src, dst, progress=False, verify=False, **kwargs)
    assert not dst.exists()
    assert leftovers(dst.parent) == []


def test_missing_files(transformers_mamba2, tmp_path):
    src = transformers_mamba2()
    (src / "config.json").unlink()
    assert_refused(src, tmp_path / "a", "has no config.json")
    assert_refused(tmp_path / "nowhere", tmp_path / "b", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    assert_refused(empty, tmp_path / "c", "has no weights")


def test_missing_shard(transformers_mamba2, tmp_path):
    src = transformers_mamba2(shard="20KB")
    shards = sorted(src.glob("model-*.safetensors"))
    shards[1].unlink()
    assert_refused(src, tmp_path / "out", f"shard {shards[1].name} .* is missing")


def test_truncated_shard(transformers_mamba2, tmp_path):
    src = transformers_mamba2()
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_refused(src, tmp_path / "out", "cannot read .*model.safetensors")


def test_shape_mismatch(transformers_mamba2, tmp_path):
    src = transformers_mamba2()
    edit_config(src, state_size=16)  # the weights were made with 8
    assert_refused(src, tmp_path / "out", r"wrong shape \(e\.g\. backbone\.layers\.0\.mixer\.in_proj\.weight")


def test_missing_and_unexpected_tensors(gdn_checkpoint, tmp_path):
    src = gdn_checkpoint()
    edit_config(src, num_hidden_layers=3)
    assert_refused(src, tmp_path / "a", r"tensors missing \(e\.g\. model\.layers\.2")
    edit_config(src, num_hidden_layers=1)
    assert_refused(src, tmp_path / "b", r"unexpected tensors \(e\.g\. model\.layers\.1")


def test_unknown_formats(transformers_mamba2, gdn_checkpoint, mamba_ssm_checkpoint, tmp_path):
    src = transformers_mamba2()
    edit_config(src, model_type="llama")
    with pytest.raises(UnknownFormatError, match="model_type='llama'.*Supported formats: mamba2: .*gated_deltanet"):
        convert(src, tmp_path / "a", progress=False)
    gdn = gdn_checkpoint()
    edit_config(gdn, model_type="mamba2")  # config and weights disagree
    assert_refused(gdn, tmp_path / "b", "lack backbone.layers.0.mixer.in_proj.weight")
    ssm, _ = mamba_ssm_checkpoint()
    edit_config(ssm, ssm_cfg={"layer": "Mamba1"})
    assert_refused(ssm, tmp_path / "c", "ssm_cfg.layer='Mamba1'")


def test_unsupported_variants(gdn_checkpoint, hattention_checkpoint, mamba_ssm_checkpoint, tmp_path):
    gdn = gdn_checkpoint()
    edit_config(gdn, attn={"layers": [1], "num_heads": 2})
    assert_refused(gdn, tmp_path / "a", "hybrid softmax-attention layers")
    ssm, _ = mamba_ssm_checkpoint()
    edit_config(ssm, d_intermediate=64)
    assert_refused(ssm, tmp_path / "b", r"d_intermediate > 0")
    hatt = hattention_checkpoint()
    edit_config(hatt, n_groups=2)
    assert_refused(hatt, tmp_path / "c", "n_groups=2 does not convert exactly")


def test_arguments(transformers_mamba2, tmp_path):
    src = transformers_mamba2()
    assert_refused(src, tmp_path / "a", "num_levels must be >= 1", num_levels=0)
    assert_refused(src, tmp_path / "b", "dtype must be one of", dtype="int8")


def test_destination_rules(transformers_mamba2, tmp_path):
    src = transformers_mamba2()
    dst = tmp_path / "out"
    dst.mkdir()
    convert(src, dst, progress=False, verify=False)  # an empty folder may be filled
    with pytest.raises(ValueError, match="already exists and is not empty; pass --overwrite"):
        convert(src, dst, progress=False, verify=False)
    (dst / "stale.txt").write_text("old")
    convert(src, dst, progress=False, verify=False, overwrite=True, dtype="bfloat16")
    assert not (dst / "stale.txt").exists() and json.loads((dst / "config.json").read_text())["dtype"] == "bfloat16"
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="overlaps the source"):
        convert(src, src / "inside", progress=False, verify=False)
    with pytest.raises(ValueError, match="overlaps the source"):
        convert(src, src, progress=False, verify=False, overwrite=True)
    assert (src / "config.json").exists()


def test_a_wrong_conversion_fails_verification_and_writes_nothing(transformers_mamba2, tmp_path, monkeypatch):
    original = Mamba2Conversion.convert_tensor

    def corrupt(self, name, tensor):
        for out_name, out in original(self, name, tensor):
            yield out_name, out * 1.5 if out_name.endswith("mixer.D") else out

    monkeypatch.setattr(Mamba2Conversion, "convert_tensor", corrupt)
    dst = tmp_path / "out"
    with pytest.raises(RuntimeError, match="verification failed: logits differ"):
        convert(transformers_mamba2(), dst, progress=False)
    assert not dst.exists() and leftovers(tmp_path) == []


def test_sources_are_only_read(transformers_mamba2, tmp_path):
    src = transformers_mamba2(shard="20KB", dtype=torch.bfloat16)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    convert(src, tmp_path / "out", progress=False, verify=False)
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_hub_ids_need_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_refused("state-spaces/mamba2-130m", tmp_path / "out", "not a local folder and HF_HUB_OFFLINE is set")
    assert_refused("not a repo id!", tmp_path / "out", "does not exist; pass a checkpoint folder or a hub repo id")
