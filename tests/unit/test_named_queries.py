"""SQL lives in collector/tice_collector/db/queries.sql: every q("name") has its query, every query is used,
and no SQL statement is written inline in the collector's Python but the few that must be built."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tice_collector.db.queries import load

COLLECTOR = Path(__file__).resolve().parents[2] / "collector" / "tice_collector"
STATEMENT = re.compile(r"\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|TRUNCATE|LISTEN|NOTIFY|LOCK)\s")

# (file, how the statement starts): statements built in code, each with its reason beside it.
BUILT = {
    ("db/migrate.py", "CREATE TABLE IF NOT EXISTS schema_migrations"),  # the runner's bookkeeping
    ("db/migrate.py", "SELECT version, name, checksum FROM schema_migrations"),
    ("db/migrate.py", "SELECT pg_advisory_lock"),
    ("db/migrate.py", "SELECT pg_advisory_unlock"),
    ("db/migrate.py", "INSERT INTO schema_migrations"),
    ("db/migrate.py", "SELECT to_regclass('schema_migrations')"),
    # The writer's statement per flush: queries.sql flush_devices, then one insert per record
    # type present (built from its columns), then the keys stored (or, for a plain insert,
    # their count).
    ("db/records.py", "WITH"),
    ("db/records.py", "SELECT {} AS t, device_id, spool, seq, at FROM ins_{}"),
    ("db/records.py", "SELECT {} AS stored"),
    ("db/records.py", "SELECT NULL::int AS t"),
    ("jobs.py", 'DROP TABLE "{}"'),  # a partition: an identifier, not a parameter
    ("jobs.py", 'DELETE FROM "{}_default"'),
    ("embedded.py", 'CREATE DATABASE "{}"'),
}


def sources() -> dict[str, ast.Module]:
    return {p.relative_to(COLLECTOR).as_posix(): ast.parse(p.read_text(encoding="utf-8"), str(p))
            for p in sorted(COLLECTOR.rglob("*.py"))}


def q_calls(trees: dict[str, ast.Module]) -> tuple[dict[str, list[str]], list[str]]:
    """The names given to q() by file, and the q() calls whose name is not a literal."""
    names: dict[str, list[str]] = {}
    unnamed = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "q":
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.setdefault(arg.value, []).append(f"{path}:{node.lineno}")
                else:
                    unnamed.append(f"{path}:{node.lineno}")
    return names, unnamed


def inline_statements(trees: dict[str, ast.Module]) -> set[tuple[str, str, int]]:
    """Every string (or f-string, its holes as {}) in the code that starts like an SQL statement."""
    found = set()
    for path, tree in trees.items():
        parts_of_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts_of_fstrings:
                text = node.value
            else:
                continue
            if STATEMENT.match(text):
                found.add((path, " ".join(text.split()), node.lineno))
    return found


def test_every_named_query_is_used_and_every_used_name_exists() -> None:
    names, unnamed = q_calls(sources())
    queries = load()
    assert not unnamed, f"q() with a name that is not a literal (the check cannot follow it): {unnamed}"
    missing = {n: where for n, where in names.items() if n not in queries}
    assert not missing, f"q() names with no query in collector/tice_collector/db/queries.sql: {missing}"
    unused = sorted(set(queries) - set(names))
    assert not unused, f"named queries no code uses (remove them, or use them): {unused}"


def test_no_sql_is_written_inline_but_the_statements_that_must_be_built() -> None:
    found = inline_statements(sources())
    stray = sorted(f"{path}:{line}: {text[:80]}" for path, text, line in found
                   if not any(path == f and text.startswith(start) for f, start in BUILT))
    assert not stray, "SQL written inline; move it to collector/tice_collector/db/queries.sql and call q(name):\n" + "\n".join(stray)
    gone = sorted(f"{f}: {start}" for f, start in BUILT
                  if not any(path == f and text.startswith(start) for path, text, _ in found))
    assert not gone, f"allowed inline statements no longer in the code (drop them from BUILT): {gone}"


def test_the_checks_see_a_missing_name_and_an_inline_statement() -> None:
    tree = ast.parse('async def f(conn):\n    await conn.fetch(q("no_such_query"))\n'
                     '    await conn.execute(\n        "DELETE FROM devices "\n        "WHERE id = $1", 1)\n'
                     '    await conn.execute(f"SELECT {x} FROM t")\n')
    names, _ = q_calls({"x.py": tree})
    assert names == {"no_such_query": ["x.py:2"]} and "no_such_query" not in load()
    assert {(p, t) for p, t, _ in inline_statements({"x.py": tree})} == {
        ("x.py", "DELETE FROM devices WHERE id = $1"), ("x.py", "SELECT {} FROM t")}
