"""Uploading a published dataset folder to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from harvest.errors import ConfigError, WorldtraceError


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


def push_folder(folder: Path, repo_id: str, token: str, *, private: bool = False) -> str:
    """Create the dataset repo if needed and upload `folder`; the URL of the commit."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
            commit_message="Publish with worldtrace", ignore_patterns=[".cache/*"],
        )
    except (HfHubHTTPError, OSError) as e:
        raise PushError(f"upload to {repo_id} failed: {e}") from e
    return str(commit.commit_url)
