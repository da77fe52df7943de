"""worldtrace trainer."""
