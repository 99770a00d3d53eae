"""The agent's tests run with the agent's distribution alone (tice-agent, tice-wire, the test
extra): nothing here may import the collector. The header names the tice_agent under test, so a
run against an installed wheel shows that it did not test the checkout."""

from __future__ import annotations

from pathlib import Path

import tice_agent


def pytest_report_header() -> str:
    return f"tice_agent from {Path(tice_agent.__file__).parent.parent}"
