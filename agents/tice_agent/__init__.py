"""Tice Telemetry's device agent."""

# The distribution's version (agents/pyproject.toml reads it from here), sent with every batch.
__version__ = "0.1.0"
