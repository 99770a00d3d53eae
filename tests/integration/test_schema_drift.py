"""The migrations build exactly the committed schema (tests/fixtures/schema.sql): a migration that
changes more, or less, than its author meant shows here as a diff."""

from __future__ import annotations

import asyncio
import difflib

from tests.schema_dump import DUMP, REFRESH, dump, normalise


async def test_the_migrated_schema_is_the_committed_dump(empty_database_url):
    built = await asyncio.to_thread(dump, empty_database_url)
    committed = DUMP.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(committed.splitlines(True), built.splitlines(True),
                                        "tests/fixtures/schema.sql", "migrated", n=2))
    assert built == committed, (f"the migrated schema differs from the committed dump; if the change is meant, "
                                f"refresh it with `{REFRESH}` and commit the diff:\n{diff[:6000]}")


def test_normalising_drops_what_changes_between_runs_only() -> None:
    raw = ("--\n-- Dumped by pg_dump version 18.6\n--\n\\restrict aB3\nSET lock_timeout = 0;\n"
           "SELECT pg_catalog.set_config('search_path', '', false);\n\n\n\n"
           "CREATE TABLE public.t (\n    a integer -- why\n);   \n\\unrestrict aB3\n")
    assert normalise(raw) == "CREATE TABLE public.t (\n    a integer -- why\n);\n"
