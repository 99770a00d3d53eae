"""Peripheral identities: a hardware identifier (IMEI, disk serial) never leaves the agent, only
its keyed hash under the deployment's salt (tice_wire.PeripheralId, docs/peripherals.md)."""

from __future__ import annotations

import hashlib
import hmac
import re

_SALT = re.compile(r"[0-9a-f]{64}")
# What firmware puts where it has no identifier: useless as an identity.
_JUNK = {"", "unknown", "none", "n/a", "--", "null", "default string", "to be filled by o.e.m."}


def check_salt(salt: str, key: str = "id_salt") -> str:
    """The salt as given at enrolment (64 lowercase hex digits), or "" for none. ValueError otherwise."""
    if salt and not _SALT.fullmatch(salt):
        raise ValueError(f"{key}: expected the 64 hex digits the collector gave at enrolment")
    return salt


def usable(identifier: str | None) -> str | None:
    """The identifier stripped, or None when it is empty or a placeholder (all zeros, "unknown")."""
    if identifier is None:
        return None
    s = identifier.strip()
    if s.lower() in _JUNK or set(s) <= {"0", " ", "-"}:
        return None
    return s


def peripheral_id(salt: str, kind: str, identifier: str | None) -> str | None:
    """HMAC-SHA256(salt, "<kind>:<identifier>"), first 128 bits in hex; None without a salt or
    a usable identifier. The same key gives the same id in HiLink and in stick mode ("modem")."""
    ident = usable(identifier)
    if not salt or ident is None:
        return None
    return hmac.new(bytes.fromhex(salt), f"{kind}:{ident}".encode(), hashlib.sha256).hexdigest()[:32]
