"""Uploading a published dataset folder to the Hugging Face Hub."""

from __future__ import annotations

import importlib
from pathlib import Path

from harvest.errors import ConfigError, WorldtraceError

# What a republish replaces on the Hub: files of an earlier publish that this one did not write
# (a different shard count or split, another harvest run) would otherwise stay and be loaded too.
REPLACED_ON_THE_HUB = ["data/*", "provenance/*"]


class PushError(WorldtraceError):
    """The upload to the Hub failed."""


def require_token() -> str:
    """The configured Hub token (HF_TOKEN or `huggingface-cli login`), or ConfigError saying how to set one."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise ConfigError(
            "--push needs a Hugging Face token: set HF_TOKEN or run `huggingface-cli login` (nothing was written)"
        )
    return token


def _network_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's errors that huggingface_hub lets through (no connection, DNS, timeouts):
    httpx2 or httpx, by huggingface_hub version (requests' errors are OSErrors)."""
    errors: list[type[Exception]] = []
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def push_folder(folder: Path, repo_id: str, token: str, *, private: bool = False) -> str:
    """Create the dataset repo if needed and upload `folder` (replacing the repo's data and
    provenance files); the URL of the commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
            commit_message="Publish with worldtrace", ignore_patterns=[".cache/*"],
            delete_patterns=REPLACED_ON_THE_HUB,
        )
    except (HfHubHTTPError, OSError) as e:
        raise PushError(f"upload to {repo_id} failed: {e}") from e
    except _network_errors() as e:
        raise PushError(f"upload to {repo_id} failed: cannot reach the Hub ({type(e).__name__}: {e})") from e
    return str(commit.commit_url)
