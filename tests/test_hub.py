"""Uploads over real HTTP to a small Hub stand-in on 127.0.0.1 (routes as in INTEGRATION.md)."""
from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from hf_loglinear.hub import HubError, push_folder
from hf_loglinear.model_cards.card import render_model_card

# A few of the Hub's license identifiers and pipeline tags: enough to reject a malformed card.
LICENSES = {"apache-2.0", "mit", "other", "cc-by-4.0", "llama3", "gemma", "openrail"}
PIPELINE_TAGS = {"text-generation", "text2text-generation", "fill-mask"}
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def validate_card_metadata(content: str) -> list[str]:
    """The Hub's checks on README.md front matter, as far as our cards use them."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return ["README.md has no YAML front matter"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"YAML does not parse: {exc}"]
    if not isinstance(meta, dict):
        return ["metadata must be a mapping"]
    errors = []
    if "license" in meta and meta["license"] not in LICENSES:
        errors.append(f"license {meta['license']!r} is not a known identifier")
    if meta.get("license") == "other" and "license_name" not in meta:
        errors.append("license 'other' needs license_name")
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f"pipeline_tag {meta['pipeline_tag']!r} is not known")
    tags = meta.get("tags", [])
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append("tags must be a list of strings")
    base = meta.get("base_model")
    for b in [base] if isinstance(base, str) else base or []:
        if not (isinstance(b, str) and REPO_ID.match(b)):
            errors.append(f"base_model {b!r} is not a repo id")
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append("library_name must be a string")
    return errors


class FakeHub:
    """Thread-safe record of what arrived: repos, branches, files per (repo, revision)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.repos: dict[str, dict] = {}
        self.branches: set[tuple[str, str]] = set()
        self.files: dict[tuple[str, str], dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.yaml_checked: list[list[str]] = []


def make_handler(hub: FakeHub, endpoint_ref: list[str]):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _send(self, status: int, payload: dict | None = None):
            body = json.dumps(payload or {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorised(self) -> bool:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                self._send(401, {"error": "missing token"})
                return False
            with hub.lock:
                hub.tokens.add(auth.removeprefix("Bearer "))
            return True

        def do_HEAD(self):
            with hub.lock:
                hub.requests.append(("HEAD", self.path))
            self._send(404, {"error": "not found"})

        def do_GET(self):
            with hub.lock:
                hub.requests.append(("GET", self.path))
                hub.unexpected.append(("GET", self.path))
            self._send(404, {"error": "not found"})

        def do_POST(self):
            path = self.path.split("?")[0]
            body = self._body()
            with hub.lock:
                hub.requests.append(("POST", path))
            if path == "/api/validate-yaml":
                errors = validate_card_metadata(json.loads(body)["content"])
                with hub.lock:
                    hub.yaml_checked.append(errors)
                payload = {"errors": [{"message": e} for e in errors], "warnings": []}
                return self._send(400 if errors else 200, payload)
            if not self._authorised():
                return
            if path == "/api/repos/create":
                req = json.loads(body)
                repo = f"{req['organization']}/{req['name']}"
                with hub.lock:
                    exists = repo in hub.repos
                    hub.repos.setdefault(repo, req)
                url = f"{endpoint_ref[0]}/{repo}"
                if exists:
                    return self._send(409, {"error": "You already created this model repo", "url": url})
                return self._send(200, {"url": url})
            m = re.match(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)$", path)
            if not m:
                with hub.lock:
                    hub.unexpected.append(("POST", path))
                return self._send(404, {"error": "unknown route"})
            repo, action, revision = m.groups()
            if repo not in hub.repos:
                return self._send(404, {"error": "repository not found"})
            if action == "branch":
                with hub.lock:
                    hub.branches.add((repo, revision))
                return self._send(200, {})
            if action == "preupload":
                files = json.loads(body)["files"]
                modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
                return self._send(200, {"files": modes})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            assert lines[0]["key"] == "header"
            arrived = {
                item["value"]["path"]: base64.b64decode(item["value"]["content"])
                for item in lines[1:]
                if item["key"] == "file"
            }
            with hub.lock:
                hub.files.setdefault((repo, revision), {}).update(arrived)
            oid = "%040x" % len(hub.requests)
            return self._send(200, {"commitUrl": f"{endpoint_ref[0]}/{repo}/commit/{oid}", "commitOid": oid})

    return Handler


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    endpoint_ref = [""]
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub, endpoint_ref))
    endpoint_ref[0] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", endpoint_ref[0])
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    hub.endpoint = endpoint_ref[0]
    yield hub
    server.shutdown()
    server.server_close()


def write_folder(folder: Path) -> Path:
    """A hub-ready folder: a rendered card, a config, a binary file and a nested file."""
    folder.mkdir(parents=True)
    card = render_model_card(
        family="mamba2",
        model_name="tiny-loglinear",
        num_levels=15,
        source_format="transformers Mamba-2",
        changes=["added level_proj"],
        license="apache-2.0",
        base_model="state-spaces/mamba2-130m",
        verification={"max_abs_diff": 1e-7, "max_rel_diff": 1e-8, "lengths": [65, 140], "device": "cpu",
                      "reference": "transformers"},
    )
    card.save(folder / "README.md")
    (folder / "config.json").write_text(json.dumps({"model_type": "loglinear_mamba2"}))
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("nested\n")
    return folder


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_every_file_arrives_with_identical_bytes(fake_hub, tmp_path):
    folder = write_folder(tmp_path / "out")
    url = push_folder(folder, "alice/tiny-loglinear", private=True)
    assert url.startswith(fake_hub.endpoint + "/alice/tiny-loglinear/commit/")
    assert fake_hub.files[("alice/tiny-loglinear", "main")] == local_files(folder)
    assert fake_hub.repos["alice/tiny-loglinear"]["visibility"] == "private"
    assert fake_hub.tokens == {"hf_test_token"}
    assert fake_hub.yaml_checked == [[]]  # the card was validated once and had no errors
    assert fake_hub.unexpected == []


def test_revision_goes_to_its_branch(fake_hub, tmp_path):
    folder = write_folder(tmp_path / "out")
    push_folder(folder, "alice/m", revision="v2")
    assert ("alice/m", "v2") in fake_hub.branches
    assert fake_hub.files[("alice/m", "v2")] == local_files(folder)
    assert "visibility" not in fake_hub.repos["alice/m"] or fake_hub.repos["alice/m"]["visibility"] == "public"


def test_existing_repo_is_reused(fake_hub, tmp_path):
    folder = write_folder(tmp_path / "out")
    push_folder(folder, "alice/m")
    (folder / "config.json").write_text("{}")
    push_folder(folder, "alice/m")
    assert fake_hub.files[("alice/m", "main")]["config.json"] == b"{}"


def test_card_metadata_validates_and_bad_metadata_is_refused(fake_hub, tmp_path):
    folder = write_folder(tmp_path / "out")
    content = (folder / "README.md").read_text()
    assert validate_card_metadata(content) == []
    assert ModelCard(content).data.license == "apache-2.0"
    (folder / "README.md").write_text(content.replace("license: apache-2.0", "license: not-a-license"))
    with pytest.raises(ValueError, match="Invalid metadata"):
        push_folder(folder, "alice/bad")
    assert ("alice/bad", "main") not in fake_hub.files


def test_no_token_is_a_clear_error(fake_hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no saved login either
    monkeypatch.setattr("hf_loglinear.hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        push_folder(write_folder(tmp_path / "out"), "alice/m")
    assert fake_hub.requests == []


def test_offline_mode_fails_at_once(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        push_folder(write_folder(tmp_path / "out"), "alice/m")
    assert fake_hub.requests == []


def test_unreachable_endpoint_and_rejected_token(fake_hub, tmp_path):
    folder = write_folder(tmp_path / "out")
    with pytest.raises(HubError, match="cannot reach"):
        push_folder(folder, "alice/m", endpoint="http://127.0.0.1:9")
    with pytest.raises(HubError, match="HTTP 404"):
        push_folder(folder, "alice/m", revision="v1", endpoint=fake_hub.endpoint + "/nothing-here")


@pytest.mark.parametrize(
    "folder_kind, repo_id, message",
    [("missing", "alice/m", "not a folder"), ("empty", "alice/m", "empty"), ("ok", "no-namespace", "owner/name"),
     ("ok", "bad id!", "invalid repo id")],
)
def test_bad_arguments(fake_hub, tmp_path, folder_kind, repo_id, message):
    folder = tmp_path / "f"
    if folder_kind == "empty":
        folder.mkdir()
    elif folder_kind == "ok":
        write_folder(folder)
    with pytest.raises(ValueError, match=message):
        push_folder(folder, repo_id)


# --------------------------------------------------------------------------- through the CLI
def test_cli_upload(fake_hub, tmp_path, capsys):
    from hf_loglinear.cli import main

    folder = write_folder(tmp_path / "out")
    assert main(["upload", str(folder), "alice/m", "--private", "--revision", "dev"]) == 0
    assert "uploaded" in capsys.readouterr().out
    assert fake_hub.files[("alice/m", "dev")] == local_files(folder)
    assert fake_hub.repos["alice/m"]["visibility"] == "private"


def test_cli_upload_without_token_exits_2(fake_hub, tmp_path, capsys, monkeypatch):
    from hf_loglinear.cli import main

    monkeypatch.setattr("hf_loglinear.hub.get_token", lambda: None)
    monkeypatch.delenv("HF_TOKEN")
    assert main(["upload", str(write_folder(tmp_path / "out")), "alice/m"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set HF_TOKEN or run `hf auth login`" in err


def test_convert_and_push_to_hub(fake_hub, tmp_path, capsys):
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    from hf_loglinear.cli import main

    torch.manual_seed(0)
    src = tmp_path / "src"
    Mamba2ForCausalLM(Mamba2Config(vocab_size=64, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1,
                                   num_hidden_layers=1, chunk_size=16)).save_pretrained(src)
    (src / "README.md").write_text("---\nlicense: mit\n---\n# a tiny Mamba-2\n")
    dst = tmp_path / "dst"
    assert main(["convert", str(src), str(dst), "--push-to-hub", "alice/tiny-loglinear", "--private"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {dst}" in out and "uploaded" in out
    arrived = fake_hub.files[("alice/tiny-loglinear", "main")]
    assert arrived == local_files(dst)
    card = arrived["README.md"].decode()
    assert validate_card_metadata(card) == [] and ModelCard(card).data.license == "mit"  # carried over
    assert 'repo = "alice/tiny-loglinear"' in card
    assert fake_hub.yaml_checked == [[]]
