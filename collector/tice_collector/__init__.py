"""Tice Telemetry collector: ingestion, storage, school-calendar analytics and metrics."""

__version__ = "0.1.0"
