"""Publishing shards as a dataset: Hugging Face layout, dataset card, Croissant metadata, checksums."""

from __future__ import annotations

from harvest.publish.dataset import (
    PublishError,
    PublishOptions,
    PublishResult,
    publish,
    published_schema,
)
from harvest.publish.splits import SplitSpec

__all__ = ["PublishError", "PublishOptions", "PublishResult", "SplitSpec", "publish", "published_schema"]
