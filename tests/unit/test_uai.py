from __future__ import annotations

import pytest

from tice_collector.uai import parse_uai


@pytest.mark.parametrize(("text", "code"), [
    ("0210001A", "0210001A"),
    ("0210001a", "0210001A"),  # the letter in either case, stored in upper case
    ("021000A", None),  # six digits
    ("02100011A", None),  # eight digits
    ("0210001", None),  # no letter
    ("²210001A", None),  # "²".isdigit() is True: ASCII digits only
    ("0210001É", None),
    ("0210001A ", None),  # the caller strips; the code itself has no space
])
def test_a_uai_is_seven_ascii_digits_and_a_letter(text: str, code: str | None) -> None:
    assert parse_uai(text) == code


@pytest.mark.parametrize(("school", "accepted"), [("0210001a", "0210001A"), ("²210001A", None), ("0210001É", None)])
def test_the_inventory_csv_checks_school_codes_the_same_way(school: str, accepted: str | None) -> None:
    from tice_collector.cli._console import CliError
    from tice_collector.cli._inventory import parse_inventory

    data = f"serial,kind,school,class\nLP-1,laptop,{school},\n".encode()
    if accepted is None:
        with pytest.raises(CliError, match=r"^inventory.csv:2: school '.*' is not a UAI code \(7 digits, a letter\)$"):
            parse_inventory(data, "inventory.csv")
    else:
        assert [row.school for row in parse_inventory(data, "inventory.csv")] == [accepted]
