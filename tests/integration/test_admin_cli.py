"""tice-collector admin commands against a real database, as an operator runs them."""

from __future__ import annotations

import re

import pytest

# `cli` (tests/conftest.py) runs tice-collector in this process, on the test's database.


def test_school_class_and_secret_lifecycle(cli):
    r = cli("school", "add", "0210001a", "--name", "École Voltaire", "--zone", "A", "--kind", "elementary",
            "--timetable", "wednesday_morning")
    assert r.returncode == 0, r.stderr
    assert "school 0210001A added" in r.stdout
    again = cli("school", "add", "0210001A", "--name", "x", "--zone", "A", "--kind", "elementary")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = cli("school", "add", "12AB", "--name", "x", "--zone", "A", "--kind", "elementary")
    assert bad.returncode == 2 and "7 digits and a letter" in bad.stderr
    assert cli("class", "add", "--school", "0210001A", "CP-A").returncode == 0
    missing = cli("class", "add", "--school", "0219999Z", "CP-A")
    assert missing.returncode == 2 and "no school '0219999Z'" in missing.stderr
    created = cli("enroll-secret", "create", "--school", "0210001A", "--label", "rentrée")
    assert created.returncode == 0
    # stdout is the secret alone (`> secret.txt` saves just it); the banner is on stderr.
    secret = created.stdout.removesuffix("\n")
    assert re.fullmatch(r"tice_enr_[A-Za-z0-9_-]{32}", secret), created.stdout
    assert created.stderr == "enrol secret 1 for school 0210001A (shown once, store it now):\n"
    listed = cli("enroll-secret", "list")
    assert "rentrée" in listed.stdout and secret not in listed.stdout
    assert cli("enroll-secret", "revoke", "1").returncode == 0
    twice = cli("enroll-secret", "revoke", "1")
    assert twice.returncode == 2 and "no live enrol secret" in twice.stderr
    schools = cli("school", "list")
    assert "0210001A" in schools.stdout and "wednesday_morning" in schools.stdout


def test_inventory_import_and_listing(cli, tmp_path):
    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    cli("school", "add", "0210002B", "--name", "B", "--zone", "A", "--kind", "nursery")
    csv_file = tmp_path / "inventory.csv"
    # A French spreadsheet export: ';' separator and a UTF-8 BOM.
    csv_file.write_text("\ufeffserial;kind;school;class\nCB-001;chromebook;0210001A;CP-A\n"
                        "CB-002;Chromebook;0210001a;CP-A\nLP-001;laptop;0210002B;\n\n", encoding="utf-8")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 0, r.stderr
    assert "3 devices imported" in r.stdout and "3 new" in r.stdout and "1 classes created" in r.stdout
    listed = cli("devices", "list", "--school", "0210001A")
    assert listed.stdout.count("chromebook") == 2 and "CP-A" in listed.stdout
    # Importing again moves nothing and creates nothing.
    again = cli("devices", "import", str(csv_file))
    assert "0 new, 3 updated, 0 classes created" in again.stdout


@pytest.mark.parametrize(("content", "message"), [
    ("serial,kind,school,class\nA1,chromebook,0210001A,CP\nA2,toaster,0210001A,CP\n", ":3: kind 'toaster'"),
    ("serial,kind,school,class\nA1,chromebook,0210001A,CP\nA1,chromebook,0210001A,CE1\n", ":3: chromebook A1 already listed on line 2"),
    ("serial,kind,school,class\nA1,chromebook,0210001A,CP\nA2,laptop,0219999Z,\n", ":3: no school 0219999Z"),
    ("serial,kind,school,class\nA1,chromebook,0210001A\n", ":2: expected 4 fields, found 3"),
    ("serial,kind,class\nA1,chromebook,CP\n", ":1: missing column(s) school"),
    ("serial,kind,school,class\nA1,chromebook,021,CP\n", ":2: school '021' is not a UAI code"),
    ("", "the file is empty"),
])
def test_bad_inventory_row_is_named_and_nothing_is_imported(cli, tmp_path, content, message):
    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text(content, encoding="utf-8")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "SN" not in cli("devices", "list").stdout and "A1" not in cli("devices", "list").stdout


def test_non_utf8_inventory_is_refused_clearly(cli, tmp_path):
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_bytes("serial,kind,school,class\nA1,chromebook,0210001A,Clé\n".encode("latin-1"))
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 2 and "not UTF-8" in r.stderr


def test_missing_file_is_refused_clearly(cli, tmp_path):
    r = cli("devices", "import", str(tmp_path / "nope.csv"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_revoke_from_cli_by_id_or_serial(cli, tmp_path):
    r = cli("devices", "revoke", "00000000-0000-0000-0000-000000000000")
    assert r.returncode == 2 and "no device 00000000-0000-0000-0000-000000000000" in r.stderr
    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("serial,kind,school,class\nLP-9,laptop,0210001A,\n")
    assert cli("devices", "import", str(csv_file)).returncode == 0
    # Imported, never enrolled: found by its serial, in any spelling enrolment accepts, with no token.
    r = cli("devices", "revoke", " lp-9")
    assert r.returncode == 2 and "laptop LP-9 (" in r.stderr and "has no live token" in r.stderr


@pytest.mark.slow  # starts a collector and agents as processes
async def test_a_secret_saved_with_a_redirect_enrols_the_agent_from_stdin(cli, database_url, tmp_path):
    """The README's flow: `enroll-secret create > secret.txt`, then `tice-agent enroll --secret - <
    secret.txt`; a file holding the banner too (an older collector's whole output) works as well."""
    from tests.agent_helpers import run_cli, write_config
    from tests.helpers import CollectorProcess

    assert cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary").returncode == 0
    created = cli("enroll-secret", "create", "--school", "0210001A")
    assert created.returncode == 0, created.stderr
    saved = tmp_path / "secret.txt"
    saved.write_text(created.stdout)  # what `> secret.txt` writes
    with_banner = tmp_path / "secret-and-banner.txt"
    with_banner.write_text(created.stderr + created.stdout)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url})
    try:
        await collector.wait_ready()
        for n, source in enumerate((saved, with_banner)):
            config = write_config(tmp_path / f"agent{n}.toml", tmp_path / f"state{n}")
            r = run_cli("--config", str(config), "enroll", "--server", collector.url, "--secret", "-",
                        "--serial", f"LP-00{n}", stdin=source.read_text())
            assert r.returncode == 0, (source.name, r.stderr)
            assert r.stdout.startswith("enrolled: device "), r.stdout
    finally:
        collector.stop()
    assert "LP-000" in cli("devices", "list").stdout and "LP-001" in cli("devices", "list").stdout


def test_devices_list_escapes_control_characters(cli, database_url):
    import asyncio

    import asyncpg

    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")

    async def legacy_row() -> None:  # written before serials were checked
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("INSERT INTO devices (serial, kind, school) VALUES ($1, 'laptop', '0210001A')",
                               "EVIL\x1b[2J\x1b]0;owned\x07")
        finally:
            await conn.close()

    asyncio.run(legacy_row())
    listed = cli("devices", "list")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
    assert "EVIL\\x1b[2J\\x1b]0;owned\\x07" in listed.stdout


def test_inventory_serials_are_normalised_and_control_characters_refused(cli, tmp_path):
    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("serial,kind,school,class\n cb-001 ,chromebook,0210001A,CP\n", encoding="utf-8")
    assert cli("devices", "import", str(csv_file)).returncode == 0
    csv_file.write_text("serial,kind,school,class\nCB-001,chromebook,0210001A,CP\n", encoding="utf-8")
    assert "0 new, 1 updated" in cli("devices", "import", str(csv_file)).stdout
    assert " CB-001" in cli("devices", "list").stdout
    csv_file.write_text("serial,kind,school,class\nCB\x1b[2J,chromebook,0210001A,CP\n", encoding="utf-8")
    bad = cli("devices", "import", str(csv_file))
    assert bad.returncode == 2 and ":2: serial contains the control character U+001B" in bad.stderr


def test_moving_a_device_is_an_admin_command_that_keeps_its_history(cli, database_url):
    import asyncio

    import asyncpg

    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    cli("school", "add", "0210002B", "--name", "B", "--zone", "A", "--kind", "elementary")
    cli("class", "add", "--school", "0210002B", "CM1")

    async def device_with_history() -> str:
        conn = await asyncpg.connect(database_url)
        try:
            device_id = await conn.fetchval("INSERT INTO devices (serial, kind, school, enrolled_at) "
                                            "VALUES ('LP-9', 'laptop', '0210001A', now()) RETURNING id")
            await conn.execute("INSERT INTO daily_usage (device_id, day, active_s, records) "
                               "VALUES ($1, '2026-11-02', 3600, 60)", device_id)
            return str(device_id)
        finally:
            await conn.close()

    device_id = asyncio.run(device_with_history())
    moved = cli("devices", "move", "lp-9", "--school", "0210002b", "--class", "CM1")
    assert moved.returncode == 0, moved.stderr
    assert "moved from school 0210001A to school 0210002B, class CM1" in moved.stdout
    listed = cli("devices", "list", "--school", "0210002B").stdout
    assert device_id in listed and "CM1" in listed

    async def history() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM daily_usage WHERE device_id = $1::uuid", device_id))
        finally:
            await conn.close()

    assert asyncio.run(history()) == 1
    unknown = cli("devices", "move", "LP-404", "--school", "0210002B")
    assert unknown.returncode == 2 and "no device LP-404" in unknown.stderr
    no_class = cli("devices", "move", device_id, "--school", "0210001A", "--class", "CE2")
    assert no_class.returncode == 2 and "no class CE2 in school 0210001A" in no_class.stderr


def _sql(database_url: str, query: str, *args: object) -> list[tuple]:
    """Run one statement on the test database from a synchronous test; its rows as tuples."""
    import asyncio

    import asyncpg

    async def run() -> list[tuple]:
        conn = await asyncpg.connect(database_url)
        try:
            return [tuple(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def _two_schools_and_an_enrolled_laptop(cli, database_url: str, serial: str) -> None:
    for uai in ("0210001A", "0210005E"):
        assert cli("school", "add", uai, "--name", uai, "--zone", "A", "--kind", "elementary").returncode == 0
    _sql(database_url, "INSERT INTO devices (serial, kind, school, enrolled_at) VALUES ($1, 'laptop', '0210001A', "
                       "now())", serial)


def test_an_import_never_moves_a_device_to_another_school(cli, database_url, tmp_path):
    _two_schools_and_an_enrolled_laptop(cli, database_url, "PF3XK2L9")
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("serial;kind;school;class\nNEW-1;laptop;0210005E;CM1\nPF3XK2L9;laptop;0210005E;\n")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 2, r
    assert (f"{csv_file}:3: laptop PF3XK2L9 belongs to school 0210001A, not 0210005E; moving a device is an "
            "admin's decision: tice-collector devices move PF3XK2L9 --school 0210005E") in r.stderr, r.stderr
    assert _sql(database_url, "SELECT serial, school FROM devices") == [("PF3XK2L9", "0210001A")]  # all or nothing
    assert _sql(database_url, "SELECT count(*) FROM classes") == [(0,)]
    # The command the message names does it, and says so.
    moved = cli("devices", "move", "PF3XK2L9", "--school", "0210005E")
    assert moved.returncode == 0 and "moved from school 0210001A to school 0210005E" in moved.stdout, moved
    # Within its school, the inventory says its class: as `devices move` does, with or without one.
    assert cli("devices", "import", str(csv_file)).returncode == 0
    csv_file.write_text("serial;kind;school;class\nPF3XK2L9;laptop;0210005E;CM1\n")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 0 and "0 new, 1 updated" in r.stdout, r
    assert _sql(database_url, "SELECT d.school, c.code FROM devices d JOIN classes c ON c.id = d.class_id "
                              "WHERE serial = 'PF3XK2L9'") == [("0210005E", "CM1")]


def test_an_import_never_gives_an_enrolled_serial_a_second_kind(cli, database_url, tmp_path):
    _two_schools_and_an_enrolled_laptop(cli, database_url, "LP-002")
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("serial;kind;school;class\nLP-003;laptop;0210001A;\nLP-002;chromebook;0210001A;\n")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 2, r
    assert (f"{csv_file}:3: serial LP-002 is already in the inventory as laptop, not chromebook; a serial names "
            "one device: write its kind as laptop on this line") in r.stderr, r.stderr
    assert _sql(database_url, "SELECT serial, kind FROM devices") == [("LP-002", "laptop")]
    # The same serial twice in one file as two kinds: refused as well, before anything is read.
    csv_file.write_text("serial;kind;school;class\nSN-9;laptop;0210001A;\nsn-9;desktop;0210001A;\n")
    r = cli("devices", "import", str(csv_file))
    assert r.returncode == 2 and ":3: serial SN-9 already listed on line 2 as laptop, not desktop" in r.stderr, r
    assert _sql(database_url, "SELECT count(*) FROM devices") == [(1,)]
    # One device, so revoking by serial needs no --kind.
    revoke = cli("devices", "revoke", "LP-002")
    assert "laptop LP-002" in revoke.stderr and "has no live token" in revoke.stderr, revoke


@pytest.mark.parametrize(("argv", "message"), [
    (("school", "add", "0210003C", "--name", ""), "argument --name: school name is empty"),
    (("school", "add", "0210003C", "--name", "   "), "argument --name: school name is empty"),
    (("school", "add", "0210003C", "--name", "x" * 3000),
     "argument --name: school name is 3000 characters long; at most 200"),
    (("school", "add", "0210003C", "--name", "x\ny\x1b[31mred"),
     "argument --name: school name contains the control character U+000A"),
    (("school", "add", "0210003C", "--name", "École \u202eeriaV"),
     "argument --name: school name contains the control character U+202E"),
    (("class", "add", "--school", "0210001A", "CP\x1b[2J"), "argument code: class code contains the control "
                                                             "character U+001B"),
    (("class", "add", "--school", "0210001A", "C" * 65), "argument code: class code is 65 characters long; at most 64"),
    (("class", "add", "--school", "0210001A", "CP", "--name", "Cours\tpréparatoire"),
     "argument --name: class name contains the control character U+0009"),
    (("enroll-secret", "create", "--school", "0210001A", "--label", "rentrée\x1b[2J"),
     "argument --label: label contains the control character U+001B"),
    (("calendar", "override", "--day", "2026-12-01", "--closed", "--label", "grève\r"),
     "argument --label: label contains the control character U+000D"),
])
def test_names_an_admin_types_are_checked_before_the_database(cli, database_url, argv, message):
    cli("school", "add", "0210001A", "--name", "A", "--zone", "A", "--kind", "elementary")
    zone = ("--zone", "A", "--kind", "elementary") if argv[:2] == ("school", "add") else ()
    r = cli(*argv, *zone)
    assert r.returncode == 2, r
    assert message in r.stderr, r.stderr
    assert "Failing row" not in r.stderr and "\x1b" not in r.stderr
    assert _sql(database_url, "SELECT count(*) FROM schools") == [(1,)]
    assert _sql(database_url, "SELECT count(*) FROM classes") == [(0,)]
    assert _sql(database_url, "SELECT count(*) FROM enroll_secrets") == [(0,)]


def test_a_name_is_stored_trimmed_and_200_characters_are_accepted(cli, database_url):
    r = cli("school", "add", "0210003C", "--name", "  École Jean\u00a0Moulin ", "--zone", "A", "--kind", "primary")
    assert r.returncode == 0, r
    long = cli("school", "add", "0210004D", "--name", "é" * 200, "--zone", "A", "--kind", "primary")
    assert long.returncode == 0, long
    assert _sql(database_url, "SELECT name FROM schools ORDER BY uai") == [("École Jean\u00a0Moulin",), ("é" * 200,)]


@pytest.mark.parametrize(("argv", "message"), [
    (("enroll-secret", "revoke", "99999999999999999999999"),
     "argument id: 99999999999999999999999 is out of range: expected 1 to 9223372036854775807"),
    (("enroll-secret", "revoke", "0"), "argument id: 0 is out of range: expected 1 to 9223372036854775807"),
    (("enroll-secret", "revoke", "one"), "argument id: 'one' is not a whole number"),
    (("devices", "days", "LP-1", "--days", "99999999999999999999"),
     "argument --days: 99999999999999999999 is out of range: expected 1 to 3660"),
    (("devices", "days", "LP-1", "--days", "0"), "argument --days: 0 is out of range: expected 1 to 3660"),
])
def test_integer_arguments_out_of_range_are_bad_usage(cli, argv, message):
    r = cli(*argv)
    assert r.returncode == 2, r
    assert message in r.stderr, r.stderr
    assert "DataError" not in r.stderr


async def test_two_imports_at_once_run_one_after_the_other(cli, database_url, tmp_path):
    import asyncio

    import asyncpg

    from tests.helpers import wait_until
    from tice_collector.cli.devices import ADMIN_LOCK_SPACE, IMPORT_LOCK_KEY
    from tice_collector.db.queries import q

    assert (await asyncio.to_thread(cli, "school", "add", "0210001A", "--name", "A", "--zone", "A",
                                    "--kind", "elementary")).returncode == 0
    csv_file = tmp_path / "inventory.csv"
    csv_file.write_text("serial;kind;school;class\nCB-001;chromebook;0210001A;CP-A\nCB-002;chromebook;0210001A;CP-A\n")
    other = await asyncpg.connect(database_url)
    try:
        # Another import, half-way through: it holds the import lock and has created class CP-A
        # and one of the devices, not yet committed.
        tx = other.transaction()
        await tx.start()
        await other.execute(q("admin_lock_xact"), ADMIN_LOCK_SPACE, IMPORT_LOCK_KEY)
        class_id = await other.fetchval(q("class_insert"), "0210001A", "CP-A", None)
        await other.fetchval(q("device_upsert_inventory"), "CB-001", "chromebook", "0210001A", class_id)
        this = asyncio.create_task(asyncio.to_thread(cli, "devices", "import", str(csv_file)))

        async def waiting() -> int:
            return int(await other.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()"))

        await wait_until(waiting, what="the second import waiting for the first")
        await tx.commit()
        r = await this
    finally:
        await other.close()
    assert r.returncode == 0, r
    assert "2 devices imported" in r.stdout and "1 new, 1 updated, 0 classes created" in r.stdout, r.stdout

    assert await asyncio.to_thread(_sql, database_url, "SELECT count(*) FROM classes") == [(1,)]
