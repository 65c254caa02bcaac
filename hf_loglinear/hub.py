"""Publishing a converted or fine-tuned folder to the Hugging Face Hub.

    url = push_folder("out/my-model", "me/my-model-loglinear", private=True)

The token comes from ``token=``, else ``HF_TOKEN``, else the saved login (``hf auth login``). The
endpoint comes from ``endpoint=``, else ``HF_ENDPOINT`` (read at call time, so a test server or a
mirror can be chosen per call), else huggingface.co. Failures raise ``HubError`` (network, server)
or ``ValueError`` (bad arguments, no token, offline mode) with one line saying what to do next.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

__all__ = ["HubError", "push_folder"]


class HubError(RuntimeError):
    """The Hub (or the network in between) refused or failed an upload."""


def _offline() -> bool:
    # constants.HF_HUB_OFFLINE is frozen at import; the environment may have changed since.
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.HF_HUB_OFFLINE or any(f and f.upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _check_arguments(folder: Path, repo_id: str) -> None:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass the folder that convert or quickstart wrote")
    if not any(p.is_file() for p in folder.rglob("*")):
        raise ValueError(f"{folder} is empty; nothing to upload")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"invalid repo id {repo_id!r}: use the form 'owner/name' ({exc})") from None
    if "/" not in repo_id:
        raise ValueError(f"invalid repo id {repo_id!r}: use the form 'owner/name'")


def _describe(exc: Exception, endpoint: str) -> str:
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = {
            401: "the token was rejected; check HF_TOKEN or run `hf auth login`",
            403: "the token may not write to this namespace; use a write token or your own namespace",
            404: "the repository or revision was not found",
        }.get(status, "see the server's message")
        return f"{endpoint} answered HTTP {status}: {hint}"
    return f"cannot reach {endpoint} ({type(exc).__name__}: {exc}); check the network or HF_ENDPOINT"


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit.

    ``revision`` names a branch, created from the default branch when it does not exist yet.
    Returns the URL of the commit.
    """
    folder = Path(folder)
    _check_arguments(folder, repo_id)
    if _offline():
        raise ValueError("HF_HUB_OFFLINE is set; unset it to upload (the folder stays ready on disk)")
    token = token or get_token()
    if not token:
        raise ValueError("no Hugging Face token found; set HF_TOKEN or run `hf auth login`")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != constants.DEFAULT_REVISION:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with hf-loglinear",
        )
    except HTTPError as exc:
        raise HubError(f"upload of {folder} to {repo_id} failed: {_describe(exc, endpoint)}") from exc
    return str(info.commit_url if hasattr(info, "commit_url") else info)
