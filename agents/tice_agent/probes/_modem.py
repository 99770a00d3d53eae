"""What the two 3G key probes (hilink, modemmanager) share: turning the key's own counters into
the parts of one interval."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tice_wire import MAX_INTERVAL_S

# The previous reading of a key: (monotonic time, wall time, the key's id, its counters).
Previous = tuple[float, datetime, str | None, dict[str, Any]]


def interval_fields(prev: Previous | None, mono: float,
                    modem_id: str | None, state: str, traffic: dict[str, Any]) -> dict[str, Any]:
    """duration_s, connected_s, rx_bytes, tx_bytes since the previous reading of the same key.

    Nothing on a first reading, when another key answers, or after a gap longer than any
    interval the collector takes (MAX_INTERVAL_S: the agent was stopped, the key unplugged): the
    time in between is not known, so a new interval starts. Bytes are the growth of the
    key's total counters; a counter that went down was reset ("clear traffic", a new session
    for the session counters), so the bytes since the reset are counted instead. Connected
    time is the part of the interval inside the current connection: never more than the
    interval, 0 when the key is not connected.
    """
    if prev is None or prev[2] != modem_id or mono - prev[0] > MAX_INTERVAL_S:
        return {}
    duration = round(max(0.0, mono - prev[0]), 3)
    out: dict[str, Any] = {"duration_s": duration}
    session = traffic.get("session_s")
    if state == "connected":
        out["connected_s"] = None if session is None else round(min(duration, float(session)), 3)
    else:
        out["connected_s"] = 0.0
    for direction in ("rx", "tx"):
        total, before = traffic.get(f"total_{direction}_bytes"), prev[3].get(f"total_{direction}_bytes")
        current, current_before = traffic.get(f"session_{direction}_bytes"), prev[3].get(f"session_{direction}_bytes")
        if total is not None and before is not None:
            out[f"{direction}_bytes"] = total - before if total >= before else (current or total)
        elif current is not None and current_before is not None:
            out[f"{direction}_bytes"] = current - current_before if current >= current_before else current
    return out
