"""worldtrace schemas."""
