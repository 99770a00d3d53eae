"""tice-collector enroll-secret create | list | revoke: the secrets agents enrol with, one school each."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from tice_collector import names
from tice_collector.auth import digest, new_secret
from tice_collector.cli import _args
from tice_collector.cli._console import CliError
from tice_collector.cli._db import on_connection
from tice_collector.cli.schools import require_school
from tice_collector.db.queries import q
from tice_collector.serials import printable
from tice_collector.settings import Settings


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    secret = sub.add_parser("enroll-secret", help="manage enrol secrets").add_subparsers(
        dest="action", required=True)
    screate = secret.add_parser("create", parents=[common],
                                help="create a school's enrol secret, shown once on stdout (> secret.txt saves it)")
    screate.add_argument("--school", required=True, metavar="UAI")
    screate.add_argument("--label", default="", type=_args.name("label", names.TEXT_MAX, blank_ok=True),
                         help=f"what the secret is for (at most {names.TEXT_MAX} characters)")
    screate.set_defaults(func=on_connection(secret_create))
    slist = secret.add_parser("list", parents=[common], help="list enrol secrets (never their value)")
    slist.add_argument("--school", metavar="UAI")
    slist.set_defaults(func=on_connection(secret_list))
    srevoke = secret.add_parser("revoke", parents=[common], help="revoke an enrol secret")
    srevoke.add_argument("id", type=_args.bounded_int(1, _args.PG_INT8_MAX),
                         help="its id (see: tice-collector enroll-secret list)")
    srevoke.set_defaults(func=on_connection(secret_revoke))


async def secret_create(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    await require_school(conn, a.school)
    secret = new_secret()
    secret_id = await conn.fetchval(q("secret_insert"), a.school, digest(secret), a.label)
    # The banner goes to stderr, so `... > secret.txt` saves the secret alone: the file can be
    # given as is to `tice-agent enroll --secret - < secret.txt`.
    print(f"enrol secret {secret_id} for school {a.school} (shown once, store it now):", file=sys.stderr,
          flush=True)
    print(secret)
    return 0


async def secret_list(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    print("id  school    created              revoked              last used            devices label")
    for r in await conn.fetch(q("secrets_list"), a.school):
        def fmt(v: Any) -> str:
            return v.strftime("%Y-%m-%d %H:%M:%S") if v else "-"
        print(f"{r['id']:<3} {r['school']:<9} {fmt(r['created_at']):<20} {fmt(r['revoked_at']):<20} "
              f"{fmt(r['last_used_at']):<20} {r['devices_created']:>7} {printable(r['label'])}")
    return 0


async def secret_revoke(conn: asyncpg.Connection, a: argparse.Namespace, settings: Settings) -> int:
    school = await conn.fetchval(q("secret_revoke"), a.id)
    if school is None:
        raise CliError(f"no live enrol secret with id {a.id} (see: tice-collector enroll-secret list)")
    print(f"enrol secret {a.id} of school {school} revoked; enrolled devices keep their tokens")
    return 0
