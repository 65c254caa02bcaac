"""Self-contained remote code: flat files generated from the package, loadable without it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from hf_loglinear import LogLinearMamba2Config, LogLinearMamba2ForCausalLM
from hf_loglinear.remote_code import flat_sources

MAMBA2_MODULES = ["hf_loglinear.configuration_loglinear_mamba2", "hf_loglinear.modeling_loglinear_mamba2"]
RELATIVE = re.compile(r"^\s*from\s+(\.+)(\S*)\s+import", re.MULTILINE)


def test_flat_sources_are_a_closed_flat_set():
    sources = flat_sources(MAMBA2_MODULES)
    for name in ("modeling_loglinear_mamba2.py", "configuration_loglinear_mamba2.py", "ops.py", "levels.py",
                 "cache.py", "modules.py", "kernels_dispatch.py", "kernels_chunk.py", "kernels_recurrent.py"):
        assert name in sources
    assert not any("__init__" in name for name in sources)
    for name, text in sources.items():
        for dots, target in RELATIVE.findall(text):
            assert dots == "." and f"{target}.py" in sources, (name, target)
        assert not re.search(r"^\s*(from|import)\s+hf_loglinear\b", text, re.MULTILINE), name
    # `from ..levels import` in kernels/chunk.py and the lazy `from ..ops import` inside a function
    assert "from .levels import bit_length" in sources["kernels_chunk.py"]
    assert "    from .ops import LevelState" in sources["kernels_chunk.py"]
    assert "from .kernels_block import" in sources["kernels_chunk.py"]


def test_hub_import_check_needs_only_torch_and_transformers(tmp_path):
    """transformers refuses a hub folder whose files import a package the machine lacks (it
    reads every file's imports outside try blocks): triton must only ever be imported guarded."""
    from transformers.dynamic_module_utils import get_imports

    allowed = {"torch", "transformers", "safetensors", "huggingface_hub"}
    for name, text in flat_sources(MAMBA2_MODULES).items():
        path = tmp_path / name
        path.write_text(text)
        third_party = {m for m in get_imports(path) if m not in sys.stdlib_module_names and m != "__future__"}
        assert third_party <= allowed, (name, third_party)


def _package(root, files):
    for path, text in files.items():
        os.makedirs(os.path.dirname(root / path), exist_ok=True)
        (root / path).write_text(textwrap.dedent(text))


def test_flattening_rules(tmp_path, monkeypatch):
    _package(tmp_path, {
        "fakepkg/__init__.py": "",
        "fakepkg/model.py": """\
            from .sub.inner import helper
            def lazy():
                from .sub.missing_backend import fast
                return fast
            """,
        "fakepkg/sub/__init__.py": "",
        "fakepkg/sub/inner.py": "from ..util import (\n    one,\n    two,\n)\nhelper = one\n",
        "fakepkg/util.py": "one = two = 1\n",
        "fakepkg/bad.py": "from . import util\n",
        "fakepkg/absolute.py": "import fakepkg.util\n",
        "fakepkg/top_missing.py": "from .nowhere import x\n",
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    sources = flat_sources(["fakepkg.model"])
    assert sorted(sources) == ["model.py", "sub_inner.py", "util.py"]
    assert sources["model.py"].startswith("from .sub_inner import helper\n")
    assert "raise ImportError('fakepkg.sub.missing_backend is not part of this installation')" in sources["model.py"]
    assert sources["sub_inner.py"].startswith("from .util import (\n    one,\n    two,\n)\n")
    with pytest.raises(ValueError, match="package __init__"):
        flat_sources(["fakepkg.bad"])
    with pytest.raises(ValueError, match="imports fakepkg absolutely"):
        flat_sources(["fakepkg.absolute"])
    with pytest.raises(ValueError, match="fakepkg.nowhere, which cannot be found"):
        flat_sources(["fakepkg.top_missing"])


# Runs where `import hf_loglinear` (and `import triton`) fail: only torch, transformers, safetensors.
LOADER = """
import importlib.abc, json, sys
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("hf_loglinear", "triton"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Blocker())
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
folder, ids_file, out_file, resave = sys.argv[1:5]
try:
    import hf_loglinear
    raise SystemExit("hf_loglinear should not be importable here")
except ImportError:
    pass
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
ids = torch.load(ids_file)
with torch.no_grad():
    logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=6, do_sample=False)
torch.save({"logits": logits, "generated": generated}, out_file)
base = AutoModel.from_pretrained(folder, trust_remote_code=True)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model.save_pretrained(resave)
print(json.dumps({"model": type(model).__module__, "base": type(base).__name__, "config": type(config).__name__,
                  "triton": "triton" in sys.modules}))
"""


def test_folder_loads_and_generates_without_the_package(tmp_path):
    torch.manual_seed(0)
    config = LogLinearMamba2Config(
        vocab_size=64, hidden_size=16, num_heads=4, head_dim=8, state_size=8, n_groups=2, num_hidden_layers=2,
        num_levels=4, pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )
    model = LogLinearMamba2ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.level_proj.weight.normal_(0, 0.3)
    folder, resave = tmp_path / "model", tmp_path / "resaved"
    model.save_pretrained(folder)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_loglinear_mamba2.LogLinearMamba2Config",
        "AutoModel": "modeling_loglinear_mamba2.LogLinearMamba2Model",
        "AutoModelForCausalLM": "modeling_loglinear_mamba2.LogLinearMamba2ForCausalLM",
    }
    code = sorted(p.name for p in folder.glob("*.py"))
    assert code == sorted(flat_sources(MAMBA2_MODULES))

    ids = torch.randint(1, 64, (2, 25), generator=torch.Generator().manual_seed(3))
    torch.save(ids, tmp_path / "ids.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), str(tmp_path / "ids.pt"), str(tmp_path / "out.pt"), str(resave)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["model"].startswith("transformers_modules.")
    assert report == {**report, "base": "LogLinearMamba2Model", "config": "LogLinearMamba2Config", "triton": False}

    remote = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        assert torch.equal(remote["logits"], model(ids).logits)
        assert torch.equal(remote["generated"], model.generate(ids, max_new_tokens=6, do_sample=False))
    # a model loaded from the flat files saves the same flat files again
    for path in folder.glob("*.py"):
        assert (resave / path.name).read_text() == path.read_text(), path.name
