"""Probes: one module per probe, registered by name.

A probe is a class whose data sources (paths, commands, hosts, clocks) are constructor
arguments, so a test can point it at fixtures. `collect()` returns wire records with
`seq=0`: the spool assigns the real delivery sequence when it stores them. An unreachable
device is data (a record with `up=False`), not an exception; any exception a probe raises
is caught, timed and reported by the runner. A probe may also have a `note` attribute (a
short text, or None): what an admin should know even when it works, shown by
`tice-agent status` (the idle source in use, a sensor that cannot be read); and an
`async aclose()` that stops its background work (samplers, connections), which the runner
calls when it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from tice_wire import Record


class Probe(Protocol):
    name: str

    async def collect(self) -> list[Record]: ...


ProbeFactory = Callable[..., Probe]
PROBES: dict[str, ProbeFactory] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register(name: str) -> Callable[[F], F]:
    """Class decorator: make a probe constructible by its configured name."""

    def add(factory: F) -> F:
        if name in PROBES:
            raise ValueError(f"probe {name!r} registered twice")
        PROBES[name] = factory
        return factory

    return add


def available() -> list[str]:
    """The names of the probes this build ships (its probe modules), without importing them."""
    import pkgutil

    return sorted(info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def load(names: Iterable[str]) -> dict[str, ProbeFactory]:
    """Import these probes' modules only, so that each registers itself: a probe that is not
    configured costs the agent no memory (the HiLink probe's XML parser, say). Unknown names
    are left for the caller to report."""
    import importlib

    shipped = set(available())
    for name in names:
        if name in shipped and name not in PROBES:
            importlib.import_module(f"{__name__}.{name}")
    return PROBES


def load_all() -> dict[str, ProbeFactory]:
    """Import every probe module so that each registers itself."""
    return load(available())
