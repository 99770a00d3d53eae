"""The inventory CSV (serial,kind,school,class) that `devices import` reads: parsed and checked whole,
before anything is written."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from tice_collector import serials
from tice_collector.cli._console import CliError
from tice_collector.serials import printable
from tice_collector.uai import parse_uai
from tice_wire import DEVICE_KINDS

CSV_COLUMNS = ("serial", "kind", "school", "class")


@dataclass(frozen=True)
class InventoryRow:
    line: int
    serial: str
    kind: str
    school: str
    klass: str


def parse_inventory(data: bytes, name: str = "inventory") -> list[InventoryRow]:
    """Parse and check an inventory CSV entirely before anything is written.

    Accepts ',' or ';' as separator (spreadsheets set to French use ';') and a UTF-8 BOM.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CliError(f"{name}: not UTF-8 (byte {e.start}); save the file as CSV UTF-8") from None
    if not text.strip():
        raise CliError(f"{name}: the file is empty; expected a header line {','.join(CSV_COLUMNS)}")
    first = text.splitlines()[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as e:
        raise CliError(f"{name}:1: {e}") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise CliError(f"{name}:1: missing column(s) {', '.join(missing)}; "
                         f"the header must name {','.join(CSV_COLUMNS)}")
    index = {c: header.index(c) for c in CSV_COLUMNS}
    rows: list[InventoryRow] = []
    seen: dict[str, tuple[int, str]] = {}  # serial: (line, kind)
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise CliError(f"{name}:{line}: expected {len(header)} fields, found {len(fields)}")
            serial, kind, school, klass = (fields[index[c]].strip() for c in CSV_COLUMNS)
            try:
                serial = serials.normalise(serial)
            except serials.SerialError as e:
                raise CliError(f"{name}:{line}: {e}") from None
            kind = kind.lower()
            if kind not in DEVICE_KINDS:
                raise CliError(f"{name}:{line}: kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
            uai = parse_uai(school)
            if uai is None:
                raise CliError(f"{name}:{line}: school {school.upper()!r} is not a UAI code (7 digits, a letter)")
            school = uai
            if len(klass) > 64:
                raise CliError(f"{name}:{line}: class code longer than 64 characters")
            if not klass.isprintable():
                raise CliError(f"{name}:{line}: class code {printable(klass)} holds a control character")
            if serial in seen:
                first_line, first_kind = seen[serial]
                if first_kind == kind:
                    raise CliError(f"{name}:{line}: {kind} {printable(serial)} already listed on line {first_line}")
                # A serial names one device: enrolment refuses it as a second kind (kind_mismatch).
                raise CliError(f"{name}:{line}: serial {printable(serial)} already listed on line {first_line} as "
                               f"{first_kind}, not {kind}; a serial names one device: keep one of the lines")
            seen[serial] = (line, kind)
            rows.append(InventoryRow(line, serial, kind, school, klass))
    except csv.Error as e:
        raise CliError(f"{name}:{reader.line_num}: {e}") from None
    return rows
