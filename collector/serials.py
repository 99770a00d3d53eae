"""Device serial numbers: one spelling per device.

A serial is typed by people (an inventory spreadsheet), read from firmware by agents, and
printed in an admin's terminal. `CB-001`, `cb-001` and ` CB-001` are one device, so serials are
stored trimmed and in upper case; a blank serial, or one holding a control or format character
(an escape sequence would reach an admin's terminal raw), names no device and is refused.
"""

from __future__ import annotations

import unicodedata

MAX_SERIAL = 64


class SerialError(ValueError):
    """A serial that names no device; str() says why."""


def normalise(text: str) -> str:
    """The one spelling of a serial: trimmed, upper case. SerialError if it cannot be one."""
    for ch in text:
        if unicodedata.category(ch)[0] == "C":  # Cc control, Cf format, Cs, Co, Cn
            raise SerialError(f"serial contains the control character U+{ord(ch):04X}; "
                              "send the serial number printed on the device")
    serial = text.strip().upper()
    if not serial:
        raise SerialError("serial is blank; send the serial number printed on the device")
    if len(serial) > MAX_SERIAL:
        raise SerialError(f"serial is longer than {MAX_SERIAL} characters")
    return serial


def printable(text: object) -> str:
    """A value as it may be shown on a terminal: control and format characters escaped.

    Names, labels and serials come from outside (a CSV, a calendar file, an old database row);
    an escape sequence among them must never reach the admin's terminal raw.
    """
    s = str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in s)
