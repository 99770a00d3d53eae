"""Tice Telemetry's device agent."""

# The distribution's version (as agents/pyproject.toml says; a test checks), sent with every batch.
__version__ = "0.1.0"
