"""`tice-collector demo`: the collector on its embedded PostgreSQL, fed by a simulated city.

A dozen schools of zone A (nursery and elementary, one on Wednesday mornings), classes of five
Chromebooks, nursery laptops each with a 3G key and a projector, a director's PC with a backup
disk in every school. What each device reports goes through the agent's own code: its spool
(agents/tice_agent/spool.py), its sender (agents/tice_agent/sender.py) over HTTP to this collector, and for the
peripherals its real probes (agents/tice_agent/probes/hilink.py, pjlink.py, disk.py) reading the HiLink and
PJLink simulators (agents/tice_agent/simulators/) on loopback and the directors' USB disks from the disk
simulator (sysfs, udev and a smartctl stand-in: simulators/smartctl.py). Only the computers' use is simulated: usage
and health records that follow the school day (mornings and afternoons, nothing on holidays, the
collector's own calendar), with `--backfill-days` of history sent first, dated in the past.

What an operator should find (docs/runbooks.md), the same for every `--seed`:

- school 0219002B, class CP-B: two Chromebooks in a cupboard (switched on, never used):
  TiceDevicesLowUse;
- school 0219012M has been offline for the last 4 school days: TiceSchoolSilent;
- the 3G key of nursery school 0219010K answers but has not connected for the last 12 school
  days (BROKEN_KEY_SCHOOL_DAYS): TiceModemDisconnected, and TiceDevicesLowUse (kind modem) on a
  school day;
- the backup disk of school 0219007G was last plugged in 40 days ago: TiceBackupDiskNotConnected;
- the backup disk of school 0219003C fails SMART's health check (dashboard only: no alert, the
  disk is plugged in and backing up; "Disks failing SMART" counts it); the other directors' disks
  are plugged in and healthy;
- the projector of nursery school 0219009J has 150 lamp hours left (dashboard only: the alert
  starts under 100).

The seed changes the figures (which days a device is used, how long), not these facts.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from tice_agent.config import AgentConfig, SendConfig
from tice_agent.probes._identity import peripheral_id
from tice_agent.probes._run import DeviceErrors
from tice_agent.probes.disk import DiskProbe, Remembered
from tice_agent.probes.hilink import HiLinkProbe
from tice_agent.probes.pjlink import PjlinkProbe
from tice_agent.sender import EnrollError, Outcome, Sender, enroll
from tice_agent.simulators.hilink import HiLinkSimulator, Key
from tice_agent.simulators.pjlink import PjlinkSimulator, State
from tice_agent.simulators.smartctl import SimDisk, SmartctlSimulator
from tice_agent.spool import Spool
from tice_agent.state import Credentials, StatusStore, save_credentials
from tice_collector import embedded
from tice_collector.auth import digest, new_secret
from tice_collector.calendar import SCHOOL_TZ, TIMETABLES, SchoolCalendar
from tice_collector.db.queries import q
from tice_wire import Health, Modem, Projector, Record, Usage

log = logging.getLogger("tice.demo")

ZONE = "A"
OFFLINE_SCHOOL_DAYS = 4
CUPBOARD = ("0219002B", "CP-B", 2)        # school, class, how many of its Chromebooks
OFFLINE_SCHOOL = "0219012M"
BROKEN_KEY_SCHOOL = "0219010K"
# Its key has not connected for this many school days (more than half of the regular-use window
# of 20: no longer used regularly); it worked before.
BROKEN_KEY_SCHOOL_DAYS = 12
WORN_LAMP_SCHOOL = "0219009J"
FORGOTTEN_DISK_SCHOOL = "0219007G"
FAILING_DISK_SCHOOL = "0219003C"
UNKNOWN_BRIDGE_SCHOOL = "0219005E"
KEY_PASSWORD = "demo-key"
KEY_RX_RATE, KEY_TX_RATE = 40_000.0, 4_000.0  # bytes/s each 3G key carries while connected
# The nursery lessons in which the 3G key and the projector may be used (the afternoon one not
# on Wednesdays), each up to LESSON long; a lesson uses them with LESSON_USE_SHARE odds.
LESSONS = ((9, 0), (10, 0), (14, 0))
LESSON = timedelta(minutes=45)
LESSON_USE_SHARE = 0.85


@dataclass(frozen=True)
class School:
    uai: str
    name: str
    kind: str          # nursery | elementary
    timetable: str     # four_day | wednesday_morning
    classes: tuple[str, ...]


@dataclass
class Device:
    """One simulated device: its identity, its habit, and its agent's state on disk."""

    school: School
    serial: str
    kind: str                  # chromebook | laptop | desktop
    class_code: str | None
    habit: str                 # class | cupboard | director
    state_dir: Path
    spool: Spool | None = None
    sender: Sender | None = None
    device_id: uuid.UUID | None = None
    probes: list[Any] = field(default_factory=list)


def city() -> list[School]:
    """The twelve schools: eight elementary (four classes; one on Wednesday mornings) and four
    nursery (two classes, each with its laptop, 3G key and projector). UAIs are made up."""
    letters = "ABCDEFGHJKLM"
    schools = []
    for i in range(12):
        uai = f"02190{i + 1:02d}{letters[i]}"
        nursery = i in (7, 8, 9, 10)
        schools.append(School(
            uai=uai, name=f"École {'maternelle' if nursery else 'élémentaire'} demo {i + 1}",
            kind="nursery" if nursery else "elementary",
            timetable="wednesday_morning" if i == 4 else "four_day",
            classes=("PS", "MS") if nursery else ("CP-A", "CP-B", "CE1", "CM2")))
    return schools


def devices(schools: list[School], root: Path) -> list[Device]:
    out = []
    for s in schools:
        for code in s.classes:
            if s.kind == "nursery":
                out.append(Device(s, f"{s.uai}-{code}-LAP", "laptop", code, "class", root / f"{s.uai}-{code}-LAP"))
                continue
            for n in range(1, 6):
                serial = f"{s.uai}-{code}-CB{n}"
                cupboard = (s.uai, code) == CUPBOARD[:2] and n > 5 - CUPBOARD[2]
                out.append(Device(s, serial, "chromebook", code, "cupboard" if cupboard else "class", root / serial))
        out.append(Device(s, f"{s.uai}-DIR", "desktop", None, "director", root / f"{s.uai}-DIR"))
    return out


def _paris(day: date, hh: int, mm: int) -> datetime:
    return datetime.combine(day, time(hh, mm), SCHOOL_TZ)


def day_records(dev: Device, day: date, rng: random.Random, until: datetime) -> list[Record]:
    """What a device reports on a school day, up to `until`: a health record when it is switched
    on, and 30-minute usage intervals: two lessons in the morning and one in the afternoon for a
    class device (none on a Wednesday afternoon), the director's PC before, during and after class."""
    wednesday = day.weekday() == 2
    if dev.habit == "director":
        slots = [(8, 0, 0.6), (10, 0, 0.5), (16, 45, 0.7)] if not wednesday else [(8, 0, 0.6), (10, 0, 0.5)]
    elif dev.habit == "cupboard":
        slots = [(8, 30, 0.0)]  # charging in the cart: on, nobody touches it
    else:
        used = rng.random() < 0.9
        slots = [(9, 0, 0.0), (16, 0, 0.0)] if not used else [
            (9, 0, rng.uniform(0.5, 0.9)), (10, 0, rng.uniform(0.3, 0.9))]
        if used and not wednesday:
            slots.append((14, 0, rng.uniform(0.4, 0.9)))
    out: list[Record] = []
    first = _paris(day, *slots[0][:2]) - timedelta(minutes=5)
    if first <= until:
        out.append(Health(seq=0, at=first.astimezone(UTC), uptime_s=60.0, memory_used_ratio=0.4,
                          disk_free_bytes=20 * 10**9, disk_total_bytes=64 * 10**9))
    for hh, mm, share in slots:
        start = _paris(day, hh, mm)
        if start + timedelta(minutes=30) > until:
            break
        active = round(1800 * share, 1)
        out.append(Usage(seq=0, at=start.astimezone(UTC), duration_s=1800.0, active_s=active,
                         idle_s=1800.0 - active, source="chrome" if dev.kind == "chromebook" else "x11"))
    return out


async def enroll_retrying(server: str, secret: str, serial: str, kind: str) -> Any:
    """Enrol as `tice-agent enroll` does, trying again (a few times, a second apart) when the
    collector is busy (429, 503): it may be starting its jobs while the city enrols."""
    for attempt in range(10):
        try:
            return await enroll(server, secret, serial, kind, timeout_s=60.0)
        except EnrollError as e:
            if e.status not in (429, 503) or attempt == 9:
                raise DemoError(f"{serial}: enrolment failed: {e}") from None
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


def school_days(school: School, start: date, end: date) -> list[date]:
    return SchoolCalendar(zone=ZONE, timetable=TIMETABLES[school.timetable]).school_days(start, end)


class Demo:
    """The city, its simulators and its agents, against the collector at `server`."""

    def __init__(self, server: str, pool: asyncpg.Pool, root: Path, *, seed: int, backfill_days: int) -> None:
        self.server, self.pool, self.root = server, pool, root
        self.seed, self.backfill_days = seed, backfill_days
        self.schools = city()
        self.devices = devices(self.schools, root / "agents")
        self.keys: list[HiLinkSimulator] = []
        self.projectors: list[PjlinkSimulator] = []
        self.disks: list[SmartctlSimulator] = []  # the directors' PCs with a disk plugged in

    def rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *parts))))

    async def setup(self) -> None:
        """Schools, classes and enrol secrets in the database; every device enrolled over HTTP."""
        async with self.pool.acquire() as conn:
            if await conn.fetchval(q("school_count")):
                raise DemoError("the database already holds schools: the demo needs an empty one "
                                "(run it without --data-dir, or with a new directory)")
            secrets = {}
            for s in self.schools:
                await conn.execute(q("school_insert"), s.uai, s.name, ZONE, s.kind, s.timetable)
                for code in s.classes:
                    await conn.fetchval(q("class_insert"), s.uai, code, code)
                secrets[s.uai] = new_secret()
                await conn.fetchval(q("secret_insert"), s.uai, digest(secrets[s.uai]), "demo")
        sem = asyncio.Semaphore(4)

        async def one(dev: Device) -> None:
            async with sem:
                res = await enroll_retrying(self.server, secrets[dev.school.uai], dev.serial, dev.kind)
            dev.device_id = res.device_id
            dev.state_dir.mkdir(parents=True)
            save_credentials(dev.state_dir, Credentials(
                server=self.server, device_id=res.device_id, token=res.token, school=res.school, serial=dev.serial,
                kind=dev.kind, enrolled_at=datetime.now(UTC), peripheral_salt=res.peripheral_salt))
            cfg = AgentConfig(server=self.server, state_dir=str(dev.state_dir),
                              send=SendConfig(timeout_s=60.0, initial_delay_max_s=0.0))
            dev.spool = Spool(dev.state_dir / "spool.sqlite3")
            dev.sender = Sender(cfg, dev.spool, StatusStore(dev.state_dir), rng=self.rng("send", dev.serial))
            await self._peripherals(dev, res.peripheral_salt or "")

        await asyncio.gather(*(one(d) for d in self.devices))
        # The city has been equipped since the first day of the history: its devices are judged.
        first = datetime.now(SCHOOL_TZ) - timedelta(days=self.backfill_days + 1)
        async with self.pool.acquire() as conn:
            for dev in self.devices:
                class_id = None if dev.class_code is None else await conn.fetchval(
                    q("class_id_of"), dev.school.uai, dev.class_code)
                await conn.execute(q("device_place"),
                                   dev.device_id, first, class_id)

    async def _peripherals(self, dev: Device, salt: str) -> None:
        """The real probes of a nursery laptop (its 3G key, its class's projector) and of a
        director's PC (its backup disk plugged in, read through sysfs, udev and smartctl from the
        disk simulator; the forgotten one remembered by the agent and absent)."""
        uai = dev.school.uai
        if dev.kind == "laptop":
            n = len(self.keys)
            broken = uai == BROKEN_KEY_SCHOOL and dev.class_code == "PS"
            key = Key(password=KEY_PASSWORD, live=True, rx_rate=KEY_RX_RATE, tx_rate=KEY_TX_RATE,
                      imei=f"86453703{n:07d}", connection_status=902 if broken else 901,
                      rsrp=f"-{95 + n % 12}dBm")
            sim = await HiLinkSimulator(key).start()
            self.keys.append(sim)
            worn = uai == WORN_LAMP_SCHOOL and dev.class_code == "PS"
            projector = await PjlinkSimulator(State(lamps=[[2850.0 if worn else 400.0 + 97 * n, 1]])).start()
            self.projectors.append(projector)
            dev.probes = [HiLinkProbe(url=sim.url, password=KEY_PASSWORD, id_salt=salt, timeout_s=10.0),
                          PjlinkProbe(projectors=[f"127.0.0.1:{projector.port}"], school=uai, id_salt=salt,
                                      timeout_s=10.0)]
        elif dev.kind == "desktop":
            disk = self.backup_disk(uai)
            state_file = dev.state_dir / "disks.json"
            usb = SmartctlSimulator(dev.state_dir / "usb")
            if uai == FORGOTTEN_DISK_SCHOOL:  # remembered by the agent, left in a drawer 40 days ago
                last = datetime.now(UTC) - timedelta(days=40)
                forgotten = peripheral_id(salt, "disk", disk.serial) if salt else None
                if forgotten:
                    state_file.write_bytes(msgspec.json.encode({forgotten: Remembered(last_connected_at=last)}))
            else:
                usb.plug(disk)
                self.disks.append(usb)
            dev.probes = [DiskProbe(state_file=str(state_file), id_salt=salt, timeout_s=60.0, **usb.probe_options())]

    def backup_disk(self, uai: str) -> SimDisk:
        """The director's backup disk: a 2 TB WD Elements (one behind a bridge smartctl does not
        know, read again with -d sat), a 1 TB Seagate failing SMART at FAILING_DISK_SCHOOL.
        Figures from the seed."""
        rng = self.rng("disk", uai)
        if uai == FAILING_DISK_SCHOOL:
            disk = SimDisk(serial=f"WKPA{uai[-4:]}", model="ST1000LM048-2E7172", family="Seagate BarraCuda 2.5 5400",
                           capacity_bytes=1000204886016, passed=False, power_on_hours=rng.randint(18000, 24000),
                           bridge_model="Expansion", label="BACKUP")
        else:
            disk = SimDisk(serial=f"WD-WX{uai}", power_on_hours=rng.randint(300, 6000),
                           bridge="unknown" if uai == UNKNOWN_BRIDGE_SCHOOL else "sat")
        disk.temperature_c = rng.randint(27, 41)
        disk.free_bytes = int(disk.capacity_bytes * rng.uniform(0.15, 0.8)) // 4096 * 4096
        return disk

    def _online(self, dev: Device, day: date, days: list[date]) -> bool:
        return dev.school.uai != OFFLINE_SCHOOL or day < days[-OFFLINE_SCHOOL_DAYS]

    async def backfill(self) -> int:
        """Every device's school days from `backfill_days` ago up to now, through its spool and
        sender. Returns the records sent."""
        now = datetime.now(SCHOOL_TZ)
        start = now.date() - timedelta(days=self.backfill_days)
        total = 0
        for dev in self.devices:
            days = school_days(dev.school, start, now.date())
            online = [day for day in days if self._online(dev, day, days)]
            assert dev.spool is not None
            records = [r for day in online for r in day_records(dev, day, self.rng(dev.serial, day), now)]
            records += await self._peripheral_history(dev, online, now)
            total += len(dev.spool.add(records))
        await self.send_all()
        return total

    async def _peripheral_history(self, dev: Device, days: list[date], until: datetime) -> list[Record]:
        """The past readings of the device's 3G key and projector on these school days, up to
        `until`: one real reading of each through its probe (its identity and figures), dated at
        the end of each lesson that used them and covering its use (15 to 45 minutes lit, the key
        connected for 60-100 % of it, drawn from the seed; bytes at a share of the key's rate;
        the key's session and lifetime counters left out, as they are the reading's own). The lamp's hours grow
        towards the reading's. The broken key connected until BROKEN_KEY_SCHOOL_DAYS school days
        ago, and was read disconnected since."""
        templates: list[Modem | Projector] = []
        for probe in dev.probes:
            try:
                readings = await probe.collect()
            except DeviceErrors as e:
                readings = e.records
            templates += [r for r in readings if isinstance(r, Modem | Projector) and r.up]
        if not templates:
            return []
        uses: list[tuple[datetime, float, date]] = []  # (end, seconds, day) of each lesson using them
        for day in days:
            rng = self.rng("peripherals", dev.serial, day)
            for hh, mm in LESSONS[:2 if day.weekday() == 2 else 3]:
                seconds = float(rng.randint(15, round(LESSON.total_seconds() / 60)) * 60)
                end = _paris(day, hh, mm) + timedelta(seconds=seconds)
                if end <= until and rng.random() < LESSON_USE_SHARE:
                    uses.append((end, seconds, day))
        broken_since = days[-BROKEN_KEY_SCHOOL_DAYS] if len(days) >= BROKEN_KEY_SCHOOL_DAYS else days[0]
        out: list[Record] = []
        lit_after = sum(seconds for _, seconds, _ in uses)  # lamp seconds from each reading to the template's
        for end, seconds, day in uses:
            lit_after -= seconds
            at, rng = end.astimezone(UTC), self.rng("key", dev.serial, end)
            for t in templates:
                if isinstance(t, Projector):
                    hours = None if t.lamp_hours is None else max(0, t.lamp_hours - round(lit_after / 3600))
                    out.append(msgspec.structs.replace(
                        t, at=at, duration_s=seconds, lamp_hours=hours,
                        lamps_hours=None if hours is None or t.lamps_hours is None else [hours] * len(t.lamps_hours)))
                elif t.state != "connected" and day >= broken_since:
                    out.append(msgspec.structs.replace(
                        t, at=at, duration_s=seconds, connected_s=0.0, rx_bytes=0, tx_bytes=0, session_s=None,
                        session_rx_bytes=None, session_tx_bytes=None, total_connected_s=None, total_rx_bytes=None,
                        total_tx_bytes=None))
                else:
                    # Connected for most of the lesson (the key dials when the class needs it),
                    # carrying a share of its rate.
                    connected, share = round(seconds * rng.uniform(0.6, 1.0)), rng.uniform(0.2, 1.0)
                    out.append(msgspec.structs.replace(
                        t, at=at, state="connected", technology=t.technology if t.state == "connected" else "lte",
                        duration_s=seconds, connected_s=float(connected),
                        rx_bytes=round(KEY_RX_RATE * connected * share),
                        tx_bytes=round(KEY_TX_RATE * connected * share),
                        session_s=None, session_rx_bytes=None, session_tx_bytes=None, total_connected_s=None,
                        total_rx_bytes=None, total_tx_bytes=None))
        return out

    async def tick(self, interval_s: float) -> None:
        """One step of the living city: the peripherals' probes read the simulators (the PCs are
        on), devices in class now report the last interval, every agent sends."""
        now = datetime.now(SCHOOL_TZ)
        online = [dev for dev in self.devices if dev.school.uai != OFFLINE_SCHOOL]
        await asyncio.gather(*(self._read_peripherals(dev) for dev in online))
        for dev in online:
            assert dev.spool is not None
            in_class = bool(school_days(dev.school, now.date(), now.date())) and \
                _paris(now.date(), 8, 30) <= now < _paris(now.date(), 16, 30)
            if in_class and dev.habit != "cupboard" and self.rng(dev.serial, now.date()).random() < 0.8:
                at = (now - timedelta(seconds=interval_s)).astimezone(UTC)
                active = round(interval_s * self.rng(dev.serial, now).uniform(0.3, 0.9), 1)
                dev.spool.add([Usage(seq=0, at=at, duration_s=interval_s, active_s=active,
                                     idle_s=interval_s - active, source="chrome")])
        await self.send_all()

    async def _read_peripherals(self, dev: Device) -> None:
        """Each probe of the device once, kept as the agent's runner keeps them: a device that
        cannot be read is logged, the readings of the others are spooled."""
        assert dev.spool is not None
        for probe in dev.probes:
            try:
                dev.spool.add(await probe.collect())
            except DeviceErrors as e:
                log.warning("demo: %s: %s: %s", dev.serial, probe.name, e)
                dev.spool.add(e.records)

    async def send_all(self) -> None:
        sem = asyncio.Semaphore(4)

        async def drain(dev: Device) -> None:
            assert dev.sender is not None
            async with sem:
                while True:
                    result = await dev.sender.send_once()
                    if result.outcome == Outcome.EMPTY:
                        return
                    if result.outcome == Outcome.RETRY:  # busy: the agent's own backoff, shortened
                        await asyncio.sleep(min(result.retry_after or 1.0, 5.0))
                        continue
                    if result.outcome != Outcome.SENT:
                        raise DemoError(f"{dev.serial}: the collector answered {result.status}: {result.reason}")

        await asyncio.gather(*(drain(d) for d in self.devices))

    async def close(self) -> None:
        for dev in self.devices:
            for probe in dev.probes:
                close = getattr(probe, "aclose", None)
                if close is not None:
                    await close()
            if dev.spool is not None:
                dev.spool.close()
        for key in self.keys:
            await key.stop()
        for projector in self.projectors:
            await projector.stop()

    def summary(self) -> Iterator[str]:
        kinds: dict[str, int] = {}
        for d in self.devices:
            kinds[d.kind] = kinds.get(d.kind, 0) + 1
        yield (f"{len(self.schools)} schools, " + ", ".join(f"{n} {k}s" for k, n in sorted(kinds.items()))
               + f", {len(self.keys)} 3G keys, {len(self.projectors)} projectors, "
               f"{len(self.disks)} backup disks plugged in")


class DemoError(Exception):
    """The demo cannot go on: said in one line."""


# Room the demo needs in memory: 123 MB once the city's 28 days are in (measured: PostgreSQL 69 MB,
# the 180 agents' spools and state 55 MB), then PostgreSQL's WAL as the city lives on; a margin.
DEMO_MIN_FREE_BYTES = 1024**3


def data_dir(given: str | None) -> tuple[Path, bool]:
    """The demo's data directory and whether it is a temporary one (removed at the end): in
    memory when the system has room there (embedded.scratch_dir), since the city's 180 agents and
    its PostgreSQL commit each write to disk (fsync), which a shared disk makes slow, and nothing
    here is kept."""
    if given:
        return Path(given), False
    return embedded.scratch_dir("tice-demo-", DEMO_MIN_FREE_BYTES), True
