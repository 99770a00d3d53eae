"""tice-collector: serve, migrate, the admin commands (schools, classes, secrets, devices) and the report.

Exit codes: 0 done, 1 the database or the network failed, 2 bad usage, settings or input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

import asyncpg
import msgspec

from tice_collector import __version__
from tice_collector.console import CliError
from tice_collector.db.errors import DB_ERRORS
from tice_collector.db.migrate import MigrationError
from tice_collector.db.queries import q
from tice_collector.settings import Settings, SettingsError, default_data_dir, load_settings, parse_listen

log = logging.getLogger("tice.cli")



# ---------------------------------------------------------------- database resolution

@contextlib.contextmanager
def database(settings: Settings, *, serving: bool = False) -> Iterator[Settings]:
    """Settings whose database_url is usable: the configured one, or the embedded server's.

    `serving` (serve) claims the data directory for this process, so a second serve on it is
    refused, and logs where the embedded data lives. Admin commands join the PostgreSQL of the
    collector serving there (or start one for their own run) and stay quiet, so their output
    is only their answer.
    """
    if settings.database_url:
        yield settings
        return
    from tice_collector import embedded

    data_dir = settings.resolved_data_dir
    level = logging.INFO if serving else logging.DEBUG
    with contextlib.ExitStack() as held:
        try:
            if serving:
                held.enter_context(embedded.serving(data_dir))
            url, server = embedded.start(data_dir)
        except OSError as e:  # not writable, a file in the way, ...
            raise CliError(f"cannot use data directory {data_dir}: {e}; choose another with --data-dir "
                           "or set TICE_DATABASE_URL", 1) from None
        except embedded.DataDirBusy as e:
            raise CliError(f"another tice-collector (pid {e.pid or 'unknown'}) is already serving from data "
                           f"directory {data_dir}; stop it, or give this one its own with --data-dir DIR",
                           1) from None
        log.log(level, "embedded PostgreSQL running, data in %s", data_dir / "pgdata")
        try:
            yield msgspec.structs.replace(settings, database_url=url)
        finally:
            server.cleanup()
            # The server is shared by every tice-collector process on this data directory and
            # stops with the last one; postmaster.pid disappears when it has stopped.
            if (data_dir / "pgdata" / "postmaster.pid").exists():
                log.log(level, "embedded PostgreSQL left running for the other collector processes")
            else:
                log.log(level, "embedded PostgreSQL stopped")


async def _connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(settings.database_url, timeout=settings.db_timeout_s)
    except DB_ERRORS as e:
        raise CliError(f"cannot connect to the database: {type(e).__name__}: {e}", 1) from None


def run_db(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[int]]) -> int:
    """Run one admin command on a migrated database."""
    from tice_collector.app import prepare_database

    async def main() -> int:
        await prepare_database(settings.database_url, settings.retention_months)
        conn = await _connect(settings)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except MigrationError as e:
        raise CliError(str(e), 1) from None
    except DB_ERRORS as e:
        raise CliError(f"database: {type(e).__name__}: {e}", 1) from None


# ---------------------------------------------------------------- serve

def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    host, port = parse_listen(settings.listen)
    ssl_context = None
    if settings.tls_cert_file:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
        except (OSError, ssl.SSLError) as e:
            raise CliError(f"tls_cert_file/tls_key_file: cannot load ({e})") from None
    loop_factory = event_loop(settings.event_loop)
    if args.worker_fds:  # a further worker process started by the first (see workers.py)
        from tice_collector import workers

        sockets = workers.inherited(args.worker_fds)
        # Ctrl-C reaches the whole process group: the first process alone stops them all, in order.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_serve(settings, host, port, sockets, ssl_context))
    if settings.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        raise CliError("workers > 1 needs SO_REUSEPORT, which this system lacks; set workers = 1")
    # Bind first: on a busy port, nothing else (the embedded PostgreSQL, migrations, the
    # scheduled jobs) may start before the one-line refusal. Every worker's sockets are bound
    # here, so a busy port is refused the same way whatever the number of workers.
    if settings.workers > 1:
        # With SO_REUSEPORT alone, this collector could join another one's port unnoticed.
        for probe in bind(host, port):
            probe.close()
    sockets = bind(host, port, shared=settings.workers > 1)
    port = port or sockets[0].getsockname()[1]  # port 0: the others join the port the first got
    further = [bind(host, port, shared=True) for _ in range(settings.workers - 1)]
    try:
        with database(settings, serving=True) as ready:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                return runner.run(_serve(ready, host, port, sockets, ssl_context, further, args.config))
    finally:
        for sock in sockets + [s for group in further for s in group]:
            sock.close()


def event_loop(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for `event_loop` ("auto", "asyncio", "uvloop"); None: asyncio's.

    uvloop (libuv) does the same socket and timer work as asyncio's own loop in C: it took
    several tens of microseconds of CPU off each report request (bench/README.md).
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise CliError('event_loop = "uvloop", but uvloop is not installed: install it '
                           '(pip install uvloop) or set event_loop = "auto"') from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def bind(host: str, port: int, *, shared: bool = False) -> list[socket.socket]:
    """Listening sockets for every address of `host` (as asyncio's create_server binds), or CliError.

    `shared`: with SO_REUSEPORT, so that the sockets of every worker process listen on the same
    port and the kernel spreads new connections over them. A port another program listens on
    is still refused: first bound without the option, which fails on any listener.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}", 1) from None
    addresses = list(dict.fromkeys((i[0], i[4]) for i in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.setblocking(False)
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}", 1) from None
    return sockets


async def _serve(settings: Settings, host: str, port: int, sockets: list[socket.socket],
                 ssl_context: ssl.SSLContext | None, further: list[list[socket.socket]] | None = None,
                 config: str | None = None) -> int:
    from aiohttp import web

    from tice_collector.app import create_app
    from tice_collector.workers import Workers

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # as Python itself leaves an ignored SIGINT alone
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(create_app(settings), shutdown_timeout=settings.shutdown_timeout_s,
                           access_log=logging.getLogger("aiohttp.access"), handle_signals=False)
    try:
        await runner.setup()
    except MigrationError as e:
        raise CliError(f"cannot start: {e}", 1) from None
    except DB_ERRORS as e:
        raise CliError(f"cannot start: database: {type(e).__name__}: {e}", 1) from None
    # Started once this process has migrated the database, so the others find it ready.
    workers = Workers(settings, further, config) if further else None
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        if workers is not None:
            workers.start()
        scheme = "https" if ssl_context else "http"
        log.info("tice-collector %s serving on %s://%s:%d%s", __version__, scheme, host, port,
                 f" ({settings.workers} worker processes)" if workers is not None else "")
        await stop.wait()
        log.info("stopping: no new connections, finishing in-flight requests")
    finally:
        if workers is not None:
            await workers.stop(settings.shutdown_timeout_s + 5)
        await runner.cleanup()
    log.info("stopped")
    return 0


# ---------------------------------------------------------------- demo

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
    root, temporary = demo.data_dir(args.data_dir)
    # The city enrols 180 devices at start: one log line each would bury what the demo prints.
    logging.getLogger("tice.enroll").setLevel(logging.WARNING)
    # Every simulated agent enrols and reports from this one address, all at once at the start.
    settings = msgspec.structs.replace(settings, data_dir=str(root), enroll_per_address_per_minute=6000.0,
                                       enroll_per_address_burst=1000, rate_limit_burst=200)
    if "modem_quota_bytes" in Settings.__struct_fields__:
        settings = msgspec.structs.replace(settings, modem_quota_bytes=2 * 10**9)  # the keys' plan: 2 GB a month
    host, port = parse_listen(settings.listen)
    sockets = bind(host, port)
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

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_timeout_s, access_log=None, handle_signals=False)
    try:
        await runner.setup()
    except MigrationError as e:
        raise CliError(f"cannot start: {type(e).__name__}: {e}", 1) from None
    except DB_ERRORS as e:
        raise CliError(f"cannot start: {type(e).__name__}: {e}", 1) from None
    city = None
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
        port = sockets[0].getsockname()[1]
        local = "127.0.0.1" if host in ("", "0.0.0.0", "::", "localhost") else host
        url = f"http://[{local}]:{port}" if ":" in local else f"http://{local}:{port}"
        started = time.perf_counter()
        city = demo.Demo(url, app[POOL], Path(str(root)), seed=args.seed, backfill_days=args.backfill_days)
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
        print(f"tice-collector demo (seed {args.seed}): {next(city.summary())}; {sent} records of "
              f"{args.backfill_days} days sent in {time.perf_counter() - started:.0f} s", flush=True)
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


# ---------------------------------------------------------------- migrate

def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.app import prepare_database

    with database(settings) as ready:
        try:
            applied = asyncio.run(prepare_database(ready.database_url, ready.retention_months))
        except MigrationError as e:
            raise CliError(str(e), 1) from None
        except DB_ERRORS as e:
            raise CliError(f"cannot migrate: {type(e).__name__}: {e}", 1) from None
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


# ---------------------------------------------------------------- jobs

def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.jobs import all_jobs

    if args.action == "list":
        for spec in all_jobs().values():
            print(f"{spec.name:<10} every {spec.period_s(settings):>6.0f} s  {spec.description}")
        return 0
    if args.name not in all_jobs():
        raise CliError(f"no job {args.name!r}; jobs are: {', '.join(all_jobs())}")
    with database(settings) as ready:
        return asyncio.run(_run_job(ready, args.name))


async def _run_job(settings: Settings, name: str) -> int:
    from tice_collector.app import prepare_database
    from tice_collector.jobs import JobContext, all_jobs, run_job
    from tice_collector.metrics import Metrics

    try:
        await prepare_database(settings.database_url, settings.retention_months)
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    except MigrationError as e:
        raise CliError(str(e), 1) from None
    except DB_ERRORS as e:
        raise CliError(f"cannot connect to the database: {type(e).__name__}: {e}", 1) from None
    try:
        started = time.perf_counter()
        ctx = JobContext(pool=pool, settings=settings, metrics=Metrics())
        outcome = await run_job(all_jobs()[name], ctx, force=True)
        detail = await pool.fetchval(q("job_last_detail"), name)
    finally:
        await pool.close()
    print(f"{name}: {outcome} in {time.perf_counter() - started:.2f} s: {detail or 'another run holds the lock'}")
    return 0 if outcome == "ok" else 1


# ---------------------------------------------------------------- admin commands

def cmd_admin(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector import admin_cli

    with database(settings) as ready:
        return run_db(ready, lambda conn: admin_cli.dispatch(conn, args, ready))


# ---------------------------------------------------------------- report

def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    from tice_collector.report import cli as report_cli
    from tice_collector.report.model import UsageReport

    made: list[UsageReport] = []
    job = report_cli.prepare(settings, args)

    async def work(conn: asyncpg.Connection) -> int:
        made.append(await job.make(conn))
        return 0

    with database(settings) as ready:
        run_db(ready, work)
    return report_cli.finish(job, made[0])


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML settings file (see collector.example.toml)")
    common.add_argument("--data-dir", metavar="DIR",
                        help=f"embedded PostgreSQL data directory when no database_url is set "
                             f"(default: {default_data_dir()})")
    common.add_argument("--log-format", choices=["text", "json"], help="log line format (default: text)")

    p = argparse.ArgumentParser(prog="tice-collector", description=(
        "Tice Telemetry collector. With no database configured (TICE_DATABASE_URL or database_url "
        f"in --config) it runs an embedded PostgreSQL with its data in {default_data_dir()}/pgdata."))
    p.add_argument("--version", action="version", version=f"tice-collector {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the ingestion service")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    serve.add_argument("--worker-fds", help=argparse.SUPPRESS)  # set by the first process for the others
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", parents=[common], help="serve a simulated city of schools (a trial, nothing real)")
    demo.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    demo.add_argument("--seed", type=int, default=1, help="the same seed gives the same city and history "
                      "(default 1)")
    demo.add_argument("--backfill-days", type=int, default=28, metavar="DAYS",
                      help="days of history sent before serving, 7 to 120 (default 28)")
    demo.add_argument("--tick", type=float, default=30.0, metavar="SECONDS",
                      help="how often the living city reports (default 30)")
    demo.set_defaults(func=cmd_demo)

    mig = sub.add_parser("migrate", parents=[common], help="apply database migrations and exit")
    mig.set_defaults(func=cmd_migrate)

    jobs = sub.add_parser("jobs", help="scheduled jobs").add_subparsers(dest="action", required=True)
    jobs.add_parser("list", parents=[common], help="list the jobs and their periods").set_defaults(func=cmd_jobs)
    jrun = jobs.add_parser("run", parents=[common], help="run one job now, by hand")
    jrun.add_argument("name", help="job name (see: tice-collector jobs list)")
    jrun.set_defaults(func=cmd_jobs)

    from tice_collector import admin_cli, calendar_cli, google_cli

    calendar_cli.add_commands(sub, common, cmd_admin)
    admin_cli.add_commands(sub, common, cmd_admin)
    from tice_collector.report import cli as report_cli

    report_cli.add_command(sub, common, cmd_report)
    google_cli.add_commands(sub, common, cmd_admin)
    return p


def main(argv: list[str] | None = None) -> int:
    from tice_collector import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir, log_format=args.log_format,
                                 listen=getattr(args, "listen", None))
    except SettingsError as e:
        print(f"tice-collector: settings error: {e}", file=sys.stderr)
        return 2
    logs.setup(settings.log_format, settings.log_level)
    try:
        code: int = args.func(settings, args)
        return code
    except CliError as e:
        print(f"tice-collector: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
