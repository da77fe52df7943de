"""``python -m tracer``: see tracer/cli.py."""

from __future__ import annotations

import sys

from ._builtins import PINNED as __builtins__  # noqa: F401 (tracer/_builtins.py)
from .cli import main

if __name__ == "__main__":
    sys.exit(main())
