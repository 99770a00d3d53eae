"""The runner owns probe timing and failure (node_exporter's execute(), Datadog's check run).

Each enabled probe runs on its own interval with ±10 % jitter (so the probes of a school's
laptops drift apart instead of firing together), under `asyncio.timeout(timeout_s)`. An
exception or a timeout is logged, counted and turned into data: a ProbeStatus record with
ok=False and the error (class name and message, at most 200 characters, identifiers
masked). It never stops the other probes. A probe reading several devices raises
DeviceErrors when some fail: the records of the others are kept, and the run is reported as
failed with the problems.

ProbeStatus policy, to keep volume low: a failure is always reported (each failed run is a
fact the server counts); a success is reported on the first run, on recovery after a
failure, and then every `runner.status_every` runs (default 60, about hourly at 60 s), as a
heartbeat that shows the probe is still alive.

Each probe is told its configured interval (`interval_s`, when its constructor takes it), so
that a sampling probe can cap an interval at that length (agents/tice_agent/probes/_run.py).

Note: a timeout can only stop a probe that awaits. A probe blocking the event loop in C
code would block everything; probes run their commands through asyncio subprocesses.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tice_agent import state as st
from tice_agent.condition import Condition
from tice_agent.config import PROBE_KEYS, AgentConfig, ConfigError
from tice_agent.probes import Probe, available
from tice_agent.probes._run import DeviceErrors, mask_identifiers
from tice_agent.spool import Spool, SpoolUnavailable
from tice_wire import MAX_ERROR_TEXT, MAX_SHORT_TEXT, ProbeStatus, Record

log = logging.getLogger("tice.agent.runner")

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Slot:
    name: str
    probe: Probe
    interval_s: float
    timeout_s: float
    runs: int = 0
    failures: int = 0
    last_ok: bool | None = None


def build_slots(cfg: AgentConfig, registry: Mapping[str, Callable[..., Any]],
                defaults: Mapping[str, Mapping[str, Any]] | None = None) -> list[Slot]:
    """Construct every enabled probe with its options. Bad options are config errors.

    `defaults` gives options the agent knows better than a config file would (the network
    probe times a connection to the enrolled collector); the config still wins."""
    slots = []
    for name, pc in cfg.enabled_probes().items():
        factory = registry.get(name)
        if factory is None:
            if name in cfg.probes:
                known = sorted(set(registry) | set(available()))
                raise ConfigError(f"probes.{name}: unknown probe (known: {', '.join(known) or 'none'})")
            log.info("probe %s is not available on this build; skipped", name)
            continue
        options = {**(defaults or {}).get(name, {}), **pc.options}
        if _takes(factory, "interval_s"):
            options["interval_s"] = pc.interval_s
        slots.append(Slot(name, _construct(name, factory, options), pc.interval_s, pc.timeout_s))
    return slots


def _takes(factory: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


# Not shown as options: what the agent fills in itself (from its enrolment and state directory),
# and the usage probe's source factories (tests inject them; `sources` is the option).
AGENT_OPTIONS = frozenset({"id_salt", "school", "state_file", "candidates"})


def check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    """ConfigError for an option the probe does not take, naming the ones it does (its
    constructor's keyword arguments, less those tests inject: clocks, runners, modules), and
    for a number that is not finite (TOML's inf and nan)."""
    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"probes.{name}.{key}: expected a finite number, got {value}")
        bad = _non_finite(value)
        if bad is not None:
            raise ConfigError(f"probes.{name}.{key}: expected finite numbers, got {bad}")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    unknown = [key for key in options if key not in params or params[key].kind is inspect.Parameter.POSITIONAL_ONLY]
    if unknown:
        known = sorted({*PROBE_KEYS, *(key for key, p in params.items()
                                        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                                        and not callable(p.default) and not inspect.ismodule(p.default)
                                        and key not in AGENT_OPTIONS)})
        raise ConfigError(f"probes.{name}: unknown option '{unknown[0]}' (known: {', '.join(known)})")


def _non_finite(value: Any) -> float | None:
    """The first inf or nan inside a TOML value (lists and tables included), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((bad for item in items if (bad := _non_finite(item)) is not None), None)


def _construct(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Probe:
    check_options(name, factory, options)
    try:
        probe: Probe = factory(**options)
    except TypeError as e:  # an unknown or missing keyword argument
        raise ConfigError(f"probes.{name}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"probes.{name}: {e}") from None
    return probe


_HOME = re.compile(r"(/home/|/Users/|[A-Za-z]:\\Users\\)[^/\\\s'\"]+", re.I)


def describe_error(e: BaseException, timeout_s: float | None = None) -> str:
    """`Class: message`, bounded, with home-directory user names masked (they name people), and
    SIM and hardware identifiers too (probes/_run.py mask_identifiers): the text is sent."""
    if isinstance(e, TimeoutError) and timeout_s is not None and not str(e):
        text = f"TimeoutError: no result within {timeout_s:g} s"
    else:
        msg = str(e).strip().replace("\n", " ")
        text = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    text = mask_identifiers(_HOME.sub(lambda m: m.group(1) + "*", text))
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT - 3] + "..."


class Runner:
    def __init__(self, slots: list[Slot], *, spool: Spool | None = None, store: st.StatusStore | None = None,
                 status_every: int = 60, sleep: Sleep = asyncio.sleep, rng: random.Random | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.slots = slots
        self.spool = spool
        self.store = store
        self.status_every = status_every
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.now = now
        self.storing = Condition(log, "cannot store records")

    async def run_probe(self, slot: Slot) -> list[Record]:
        """One run: the probe's records plus, when due, a ProbeStatus. Never raises (but cancels)."""
        at = self.now()
        started = time.monotonic()
        error: str | None = None
        records: list[Record] = []
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the probe finishes, and the daemon would then ignore SIGTERM.
            async with asyncio.timeout(slot.timeout_s):
                out = await slot.probe.collect()
            if not isinstance(out, list) or not all(isinstance(r, Record) for r in out):
                raise TypeError(f"collect() returned {type(out).__name__}, not a list of records")
            records = out
        except asyncio.CancelledError:
            raise
        except DeviceErrors as e:  # some devices answered: keep their records, report the rest
            records = [r for r in e.records if isinstance(r, Record)]
            error = describe_error(e)
        except Exception as e:
            error = describe_error(e, slot.timeout_s)
        duration = min(time.monotonic() - started, 3600.0)
        slot.runs += 1
        ok = error is None
        if not ok:
            slot.failures += 1
            log.warning("probe %s failed (%d of %d runs): %s", slot.name, slot.failures, slot.runs, error)
        report = not ok or slot.last_ok is not True or slot.runs % self.status_every == 0
        slot.last_ok = ok
        if report:
            records.append(ProbeStatus(seq=0, at=at, probe=slot.name[:MAX_SHORT_TEXT], ok=ok,
                                       duration_s=round(duration, 3), error=error))
        if self.store is not None:
            self.store.status.probes[slot.name] = st.ProbeResult(
                ok=ok, at=at, duration_s=round(duration, 3), records=len(records) - int(report), error=error,
                runs=slot.runs, failures=slot.failures, note=getattr(slot.probe, "note", None))
        return records

    async def collect_all(self) -> list[Record]:
        """One round of every probe, concurrently (`tice-agent once`)."""
        rounds = await asyncio.gather(*(self.run_probe(s) for s in self.slots))
        return [r for rs in rounds for r in rs]

    async def _loop(self, slot: Slot) -> None:
        # Start each probe at a random point of its first interval (at most 10 s in), so
        # probes do not all run in the same second after boot.
        await self.sleep(self.rng.uniform(0.0, min(slot.interval_s, 10.0)))
        while True:
            records = await self.run_probe(slot)
            if self.spool is not None and records:
                try:
                    self.spool.add(records)  # a full disk is handled (and logged) inside: counted drops
                    self.storing.ok()
                except Exception as e:  # anything else: keep probing, say it once
                    self.storing.fail(describe_error(e), exc_info=True)
            if self.store is not None:
                self.store.save()
            await self.sleep(slot.interval_s * self.rng.uniform(0.9, 1.1))

    async def run_forever(self) -> None:
        try:
            if not self.slots:  # every probe disabled: nothing to run, but the sender still drains
                await asyncio.Event().wait()
            async with asyncio.TaskGroup() as tg:
                for slot in self.slots:
                    tg.create_task(self._loop(slot), name=f"probe-{slot.name}")
        finally:
            await self.close_probes()

    async def close_probes(self) -> None:
        """Stop what probes run in the background (samplers, connections), while the loop still
        runs normally. Left to asyncio.run's final cancellation, a sampler caught starting a
        command could wait forever: 3.11 cancels the subprocess's pipe setup at the same time
        and its transport then never reports the exit (the daemon did not exit on SIGTERM)."""
        for slot in self.slots:
            close = getattr(slot.probe, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception as e:  # closing must never keep the agent from stopping
                    log.warning("probe %s did not close cleanly: %s", slot.name, describe_error(e))


async def run_agent(cfg: AgentConfig, slots: list[Slot], *, stop: asyncio.Event | None = None) -> int:
    """The daemon: probes into the spool, the sender out of it, until SIGTERM/SIGINT."""
    from tice_agent import memory
    from tice_agent.sender import Sender  # the HTTP client is loaded by the daemon only

    memory.one_arena()  # before the daemon's threads start
    state_dir = st.ensure_dir(cfg.state_path)
    lock = st.InstanceLock(state_dir)
    if not lock.acquire(wait_s=3.0):
        log.error("another tice-agent is already running with state directory %s", state_dir)
        return 1
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C arrives as KeyboardInterrupt
            pass
    spool = await open_spool(cfg, state_dir, stop)
    if spool is None:
        lock.release()
        return 0
    store = st.StatusStore(state_dir)
    if store.status.spool.spool_id == str(spool.spool_id):
        spool.never_reuse(store.status.spool.last_seq)
    store.spool = spool
    store.status.pid, store.status.started_at = os.getpid(), datetime.now(UTC)
    store.save()
    runner = Runner(slots, spool=spool, store=store, status_every=cfg.runner.status_every)
    sender = Sender(cfg, spool, store)
    log.info("tice-agent running: %d probes, spool %s (%d waiting), state in %s",
             len(slots), spool.spool_id, spool.depth(), state_dir)
    tasks = [asyncio.create_task(runner.run_forever(), name="runner"),
             asyncio.create_task(sender.run(), name="sender"),
             asyncio.create_task(memory.trim_forever(), name="memory")]
    waiter = asyncio.create_task(stop.wait())
    failed: list[asyncio.Task[Any]] = []
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not waiter and t.exception() is not None]
        for t in failed:
            log.error("agent task %s failed: %r", t.get_name(), t.exception())
    finally:
        for t in [*tasks, waiter]:
            t.cancel()
        await asyncio.gather(*tasks, waiter, return_exceptions=True)
        store.save()
        spool.close()
        lock.release()
    log.info("tice-agent stopped")
    return 1 if failed else 0


async def open_spool(cfg: AgentConfig, state_dir: Path, stop: asyncio.Event) -> Spool | None:
    """The spool, once it can be opened: a full disk can refuse even that (an older spool whose
    format must change, say). Tries again every few seconds until then; None if stopped."""
    trying = Condition(log, "cannot open the spool, will retry")
    wait = 5.0
    while not stop.is_set():
        try:
            spool = Spool(state_dir / st.SPOOL, max_bytes=cfg.spool.max_bytes,
                          max_age_s=cfg.spool.max_age_days * 86400)
        except SpoolUnavailable as e:
            trying.fail(str(e))
            try:
                async with asyncio.timeout(wait):
                    await stop.wait()  # SIGTERM ends the wait at once
            except TimeoutError:
                pass
            wait = min(wait * 2, 300.0)
            continue
        trying.ok()
        return spool
    return None
