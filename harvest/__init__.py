"""worldtrace host side: Docker sandboxes, Ray scheduling and the `worldtrace` CLI."""

__version__ = "0.1.0"
