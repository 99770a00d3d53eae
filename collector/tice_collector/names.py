"""Names an admin types (a school's name, a class's code and name, an enrol secret's label): checked
before they are stored.

They end up in a terminal, the CSV and the HTML report, so a control character (an escape
sequence, a line break) or a bidirectional override is refused, as in a serial (serials.py);
length limits are the database's (db/migrations/0001_init.sql), said before it refuses them.
"""

from __future__ import annotations

import unicodedata

SCHOOL_NAME_MAX = 200  # schools.name: length 1 to 200
CLASS_CODE_MAX = 64  # classes.code: length 1 to 64
TEXT_MAX = 200  # a class's name, a secret's label: no limit in the schema, one for the terminal and the report
# Embedding, override and isolate controls: they reorder the text shown around them.
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class InvalidName(ValueError):
    """A name that cannot be stored; str() says why and what to type instead."""


def check(text: str, what: str, max_len: int, *, blank_ok: bool = False) -> str:
    """`text` trimmed, or InvalidName: blank (unless `blank_ok`), longer than `max_len`
    characters, or holding a control character (Unicode Cc, a line or paragraph separator,
    a bidirectional control)."""
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI:
            raise InvalidName(f"{what} contains the control character U+{ord(ch):04X}; type it on one line, "
                             "without escape sequences")
    name = text.strip()
    if not name and not blank_ok:
        raise InvalidName(f"{what} is empty")
    if len(name) > max_len:
        raise InvalidName(f"{what} is {len(name)} characters long; at most {max_len}")
    return name
