"""worldtrace images."""
