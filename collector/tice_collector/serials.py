"""Device serial numbers: one spelling per device.

A serial is typed by people (an inventory spreadsheet), read from firmware by agents, and
printed in an admin's terminal. `CB-001`, `cb-001` and ` CB-001` are one device, so serials are
stored trimmed and in upper case; a blank serial, or one holding a control character (an
escape sequence would reach an admin's terminal raw), names no device and is refused.

The OpenAPI document states the same rules as two patterns (collector/tice_collector/openapi.py), spelled with
explicit character ranges so that every regular-expression dialect reads them alike.
"""

from __future__ import annotations

MAX_SERIAL = 64
# Unicode category Cc: C0 controls, DEL and the C1 controls.
CONTROL = "\u0000-\u001f\u007f-\u009f"
# What surrounds a serial without being part of it (JavaScript's \s, controls aside).
BLANK = " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_BLANK_CHARS = "".join(chr(c) for c in (0x20, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
                                        0x205F, 0x3000, 0xFEFF))


class SerialError(ValueError):
    """A serial that names no device; str() says why."""


def normalise(text: str) -> str:
    """The one spelling of a serial: trimmed, upper case. SerialError if it cannot be one.

    Upper case letter by letter, and only where that keeps one letter ("ß" stays "ß"), so the
    length never grows past what was checked.
    """
    for ch in text:
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            raise SerialError(f"serial contains the control character U+{ord(ch):04X}; "
                              "send the serial number printed on the device")
    serial = "".join(u if len(u := ch.upper()) == 1 else ch for ch in text.strip(_BLANK_CHARS))
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
