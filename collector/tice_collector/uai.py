"""The UAI (unité administrative immatriculée): the French ministry's code of a school, seven
digits and a letter, e.g. 0210001A (the letter is a check key; it is not verified here)."""

from __future__ import annotations

import re

# ASCII digits only: "²".isdigit() is True.
UAI = re.compile(r"[0-9]{7}[A-Za-z]")
EXPECTED = "a UAI code (7 digits and a letter, like 0210001A)"


def parse_uai(text: str) -> str | None:
    """The code in upper case, or None when `text` is not 7 ASCII digits and a letter."""
    return text.upper() if UAI.fullmatch(text) else None
