"""Tracing mechanisms, one module each, all behind the small interface in ``base``."""
