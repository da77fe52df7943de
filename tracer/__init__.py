"""worldtrace tracer."""
