"""The trainer's exceptions (shard problems raise schemas.errors.ShardError)."""

from __future__ import annotations


class TrainerError(Exception):
    """Root of every error the trainer raises on purpose."""


class CheckpointError(TrainerError):
    """A checkpoint is missing, unreadable or incompatible."""
