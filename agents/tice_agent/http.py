"""A small HTTP client for the agent, on the standard library.

aiohttp alone makes a Python process some 14 MiB bigger, and the agent sends a batch a
minute and reads a 3G key's web API as often: `urllib.request` in a worker thread is all it
needs. The thread is a daemon thread, not the event loop's executor, so a request hanging on
a dead 3G link never holds up the agent's exit on SIGTERM: the agent stops at once and resends
that batch next time (the collector stores it once). Requests to the collector follow
HTTPS_PROXY/NO_PROXY like the rest of the system; requests to a device on the local network
(`proxy=False`) never go through a proxy.
"""

from __future__ import annotations

import asyncio
import errno
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class NetworkError(Exception):
    """No HTTP answer at all: refused, reset, timed out, TLS failure, bad proxy.

    `maybe_sent` is False when the request surely never reached a server (the name did not
    resolve, the connection was refused or had no route, TLS was not established): the
    collector cannot have stored anything. A timeout or a reset can come after the server
    committed, so they leave it True.
    """

    def __init__(self, message: str, *, maybe_sent: bool = True) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


_NOT_SENT_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


def _never_sent(reason: BaseException) -> bool:
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError, ssl.SSLCertVerificationError)):
        return True
    return isinstance(reason, OSError) and reason.errno in _NOT_SENT_ERRNOS


def request_sync(method: str, url: str, body: bytes | None, headers: dict[str, str], *, timeout_s: float,
                 context: ssl.SSLContext | None = None, proxy: bool = True, max_bytes: int | None = None) -> Answer:
    """One request; an HTTP error status is an Answer too. At most `max_bytes` of the body are
    read (a device answering endlessly cannot fill the agent's memory)."""
    handlers: list[urllib.request.BaseHandler] = []
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    if not proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, data=body, headers=headers, method=method)

    def read(resp: Any) -> bytes:
        # read() with no size raises IncompleteRead on a body cut short; read(n) does not, so it
        # is used only when a bound is asked for (the caller then parses and sees the cut).
        return bytes(resp.read() if max_bytes is None else resp.read(max_bytes))

    try:
        with opener.open(req, timeout=timeout_s) as resp:
            return Answer(resp.status, read(resp), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as e:  # an answer, just not a 2xx one
        with e:
            return Answer(e.code, read(e), {k.lower(): v for k, v in (e.headers or {}).items()})
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        never = isinstance(reason, BaseException) and _never_sent(reason)
        raise NetworkError(f"{type(reason).__name__}: {reason}", maybe_sent=not never) from None


def post_sync(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
              context: ssl.SSLContext | None) -> Answer:
    return request_sync("POST", url, body, headers, timeout_s=timeout_s, context=context)


async def request(method: str, url: str, body: bytes | None, headers: dict[str, str], *, timeout_s: float,
                  context: ssl.SSLContext | None = None, proxy: bool = True, max_bytes: int | None = None) -> Answer:
    """`request_sync` in a daemon thread; raises NetworkError when there is no answer."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Answer] = loop.create_future()

    def settle(result: Answer | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def work() -> None:
        try:
            answer = request_sync(method, url, body, headers, timeout_s=timeout_s, context=context, proxy=proxy,
                                  max_bytes=max_bytes)
        except BaseException as e:  # handed to the awaiting task, whatever it is
            loop.call_soon_threadsafe(settle, None, e)
            return
        loop.call_soon_threadsafe(settle, answer, None)

    threading.Thread(target=work, name="tice-agent-http", daemon=True).start()
    return await done


async def post(url: str, body: bytes, headers: dict[str, str], *, timeout_s: float,
               context: ssl.SSLContext | None) -> Answer:
    return await request("POST", url, body, headers, timeout_s=timeout_s, context=context)
