"""Tracing mechanisms, one module each, all behind the small interface in ``base``."""

from .._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
