"""Tokens and secrets: random, shown once, stored only as SHA-256 digests; per-device rate limit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field

from aiohttp import BasicAuth

TOKEN_PREFIX = "tice_dev_"
SECRET_PREFIX = "tice_enr_"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(24)


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def basic_password(header: str | None) -> str | None:
    """The password of an `Authorization: Basic ...` header (RFC 7617, aiohttp's decoder), or
    None: what a browser sends after its login prompt."""
    if not header or len(header) > 1024:
        return None
    try:
        password = BasicAuth.decode(header, encoding="utf-8").password
    except ValueError:
        return None
    return password or None


def report_ok(header: str | None, admin_token: str, report_token: str) -> bool:
    """The admin token or the read-only report token, as a bearer token or a Basic password."""
    token = bearer(header) or basic_password(header)
    if token is None:
        return False
    given = digest(token)
    return any(bool(t) and hmac.compare_digest(given, digest(t)) for t in (admin_token, report_token))


def admin_ok(header: str | None, admin_token: str) -> bool:
    token = bearer(header)
    return bool(admin_token) and token is not None and hmac.compare_digest(
        digest(token), digest(admin_token))


@dataclass
class TokenCache:
    """Live tokens seen recently, so most requests skip the database lookup.

    Entries expire after `ttl` seconds. A revocation evicts the device at once on the replica
    that made it, and on every replica that hears the database notification (app.py listens);
    a replica that missed it (its listening connection was down) stops within `ttl`.

    A lookup that started before an eviction must not put the revoked token back: `put` takes
    the `generation` read before the lookup and does nothing if an eviction happened since.
    """

    ttl: float
    max_entries: int = 200_000
    generation: int = 0
    _entries: dict[bytes, tuple[uuid.UUID, float]] = field(default_factory=dict)

    def get(self, key: bytes) -> uuid.UUID | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        device_id, expires = hit
        if expires < time.monotonic():
            del self._entries[key]
            return None
        return device_id

    def put(self, key: bytes, device_id: uuid.UUID, generation: int | None = None) -> None:
        if self.ttl <= 0 or (generation is not None and generation != self.generation):
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; the next requests refill it
        self._entries[key] = (device_id, time.monotonic() + self.ttl)

    def evict_device(self, device_id: uuid.UUID) -> None:
        self.generation += 1
        for key in [k for k, (d, _) in self._entries.items() if d == device_id]:
            del self._entries[key]

    def clear(self) -> None:
        """Forget every entry (notifications may have been missed)."""
        self.generation += 1
        self._entries.clear()


@dataclass
class RateLimiter:
    """A token bucket per key (a device, a client address, an enrol secret's digest):
    `rate_per_s` sustained, `burst` at once."""

    rate_per_s: float
    burst: int
    max_entries: int = 200_000
    _buckets: dict[Hashable, tuple[float, float]] = field(default_factory=dict)

    def take(self, key: Hashable) -> float:
        """0 if allowed, else the seconds to wait before the next request would be."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate_per_s
        if len(self._buckets) >= self.max_entries:
            self._buckets.clear()
        self._buckets[key] = (tokens - 1, now)
        return 0.0
