"""tice-collector serve: the ingestion service on its listening sockets, in one or more processes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Callable

from tice_collector import __version__
from tice_collector.cli._console import CliError
from tice_collector.cli._db import database
from tice_collector.cli._runner import started, stop_on_signals
from tice_collector.settings import Settings, listen_url, parse_listen

log = logging.getLogger("tice.cli")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[common], help="run the ingestion service")
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:8080)")
    serve.add_argument("--worker-fds", help=argparse.SUPPRESS)  # set by the first process for the others
    serve.set_defaults(func=cmd_serve)

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
    from tice_collector.embedded import EmbeddedStopped
    from tice_collector.workers import Workers

    stop = stop_on_signals()
    runner = await started(create_app(settings), settings, access_log=logging.getLogger("aiohttp.access"))
    # Started once this process has migrated the database, so the others find it ready.
    workers = Workers(settings, further, config) if further else None
    try:
        for sock in sockets:
            await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        if workers is not None:
            workers.start()
        scheme = "https" if ssl_context else "http"
        log.info("tice-collector %s serving on %s%s", __version__, listen_url(scheme, host, port),
                 f" ({settings.workers} worker processes)" if workers is not None else "")
        await stop.wait()
        log.info("stopping: no new connections, finishing in-flight requests")
    finally:
        if workers is not None:
            await workers.stop(settings.shutdown_timeout_s + 5)
        try:
            await runner.cleanup()
        except EmbeddedStopped as e:
            raise CliError(str(e), 1) from None
    log.info("stopped")
    return 0
