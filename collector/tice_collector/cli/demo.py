"""tice-collector demo: serve a simulated city of schools through the agent's own code (the demo extra)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import time

import msgspec

from tice_collector.cli._console import CliError
from tice_collector.cli._db import database
from tice_collector.cli._runner import started, stop_on_signals
from tice_collector.cli.serve import bind
from tice_collector.settings import Settings, parse_listen

log = logging.getLogger("tice.cli")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser("demo", parents=[common], help="serve a simulated city of schools (a trial, nothing real)")
    demo.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    demo.add_argument("--seed", type=int, default=1, help="the same seed gives the same city and history "
                      "(default 1)")
    demo.add_argument("--backfill-days", type=int, default=28, metavar="DAYS",
                      help="days of history sent before serving, 7 to 120 (default 28)")
    demo.add_argument("--tick", type=float, default=30.0, metavar="SECONDS",
                      help="how often the living city reports (default 30)")
    demo.set_defaults(func=cmd_demo)

def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    import importlib.util
    import shutil

    if importlib.util.find_spec("tice_agent") is None:  # the collector installed without its demo extra
        raise CliError("demo: the demo runs the agent's code, which is not installed here: "
                       "pip install 'tice-collector[demo]' (from a checkout: pip install ./agents)")
    from tice_collector import demo

    if args.backfill_days < 7 or args.backfill_days > 120:
        raise CliError("--backfill-days: expected 7 to 120 days (verdicts need min_judged_days school days)")
    if not 5 <= args.tick <= 3600:
        raise CliError("--tick: expected 5 to 3600 seconds")
    host, port = parse_listen(settings.listen)
    sockets = bind(host, port)  # before the data directory: a busy port leaves nothing behind
    root, temporary = demo.data_dir(args.data_dir)
    # The city enrols 180 devices at start: one log line each would bury what the demo prints.
    logging.getLogger("tice.enroll").setLevel(logging.WARNING)
    # Every simulated agent enrols and reports from this one address, all at once at the start.
    settings = msgspec.structs.replace(settings, data_dir=str(root), enroll_per_address_per_minute=6000.0,
                                       enroll_per_address_burst=1000, rate_limit_burst=200)
    if "modem_quota_bytes" in Settings.__struct_fields__:
        settings = msgspec.structs.replace(settings, modem_quota_bytes=2 * 10**9)  # the keys' plan: 2 GB a month
    try:
        with database(settings, serving=True) as ready:
            return asyncio.run(_demo(ready, host, sockets, root, args))
    finally:
        for sock in sockets:
            sock.close()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


async def _demo(settings: Settings, host: str, sockets: list[socket.socket], root: object,
                args: argparse.Namespace) -> int:
    from pathlib import Path

    from aiohttp import web

    from tice_collector import demo
    from tice_collector.app import create_app
    from tice_collector.jobs import JobContext, all_jobs, run_job
    from tice_collector.keys import METRICS, POOL

    stop = stop_on_signals()
    app = create_app(settings)
    runner = await started(app, settings, access_log=None)
    city = None
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        port = sockets[0].getsockname()[1]
        local = "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host
        url = f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"
        began = time.perf_counter()
        city = demo.Demo(url, app[POOL], Path(str(root)), seed=args.seed, backfill_days=args.backfill_days)

        async def city_ready() -> int:
            try:
                await city.setup()
                sent = await city.backfill()
                await city.tick(args.tick)
            except demo.DemoError as e:
                raise CliError(str(e), 1) from None
            ctx = JobContext(pool=app[POOL], settings=settings, metrics=app[METRICS])
            for name in ("rollup", "detect", "snapshot"):  # the verdicts now, not at the next period
                if await run_job(all_jobs()[name], ctx, force=True) != "ok":
                    raise CliError(f"demo: the {name} job failed; see the log above", 1)
            return sent

        # Ctrl-C or SIGTERM while the city is being built stops it there, not once it is built.
        building = asyncio.ensure_future(city_ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({building, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not building.done():
            building.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await building
            print("tice-collector demo: stopped before the city was ready", file=sys.stderr, flush=True)
            return 130  # interrupted, as Ctrl-C ends any other command
        stopped.cancel()
        sent = building.result()
        print(f"tice-collector demo (seed {args.seed}): {next(city.summary())}; {sent} records of "
              f"{args.backfill_days} days sent in {time.perf_counter() - began:.0f} s", flush=True)
        print(f"  metrics:    {url}/metrics", flush=True)
        print(f"  readiness:  {url}/readyz", flush=True)
        print("  dashboards: docker-compose --profile demo up -d, then Grafana on http://localhost:3000 "
              "(README, \"See a living city\")", flush=True)
        print(f"  data:       {root} (removed at exit unless given with --data-dir); Ctrl-C stops", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=args.tick)
            if not stop.is_set():
                try:
                    await city.tick(args.tick)
                except demo.DemoError as e:
                    log.warning("demo: %s", e)
    finally:
        if city is not None:
            await city.close()
        await runner.cleanup()
    return 0
