"""A simulated PJLink class 1 projector on TCP (asyncio streams), for tests and the demo fleet.

Like a real projector: it greets `PJLINK 0` or `PJLINK 1 <random>`, checks md5(random +
password) before the first command (`PJLINK ERRA` and close when wrong), answers `%1CMND=...`
or ERR1 (undefined command), ERR2 (bad parameter), ERR3 (unavailable now) and ERR4 (projector
failure), closes a connection idle for 30 s, and counts lamp hours while the lamp burns.

Scriptable (the `Lamp`/`State` fields and methods, changed by a test or over the control
line `SIM {json}` from loopback): power cycles with warm-up and cooling, lamp hours, error bits,
input, name, class, a password, per-command errors, garbage answers, slow answers, a dropped
connection, and `refuse_in_standby` (the network closes in standby: connection refused).

    python -m tice_agent.simulators.pjlink --port 4352 [--password JBMIAProjectorLink]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field, fields


@dataclass
class State:
    """The projector. Power: 0 standby, 1 on, 2 cooling, 3 warming up."""

    power: int = 1
    lamps: list[list[float]] = field(default_factory=lambda: [[1200.0, 1]])  # [hours, on] per lamp
    errors: str = "000000"  # fan, lamp, temperature, cover, filter, other: 0 ok, 1 warning, 2 error
    input: str = "31"  # DIGITAL 1
    name: str = "Salle 3 - EB-X41"
    manufacturer: str = "EPSON"
    model: str = "EB-X41"
    pjlink_class: str = "1"
    password: str | None = None  # None: no authentication
    refuse_in_standby: bool = False  # in standby the network is off: connections are refused
    warmup_s: float = 0.0  # seconds in "warming" (3) after power_on, then on
    cooldown_s: float = 0.0  # seconds in "cooling" (2) after power_off, then standby
    lamp_hours_per_s: float = 1 / 3600  # real time; a demo speeds it up
    command_errors: dict[str, str] = field(default_factory=dict)  # "LAMP" -> "ERR1"
    standby_errors: dict[str, str] = field(default_factory=lambda: {"INPT": "ERR3"})
    garbage: set[str] = field(default_factory=set)  # commands answered with nonsense
    slow_s: float = 0.0  # wait before each answer
    drop_after_greeting: bool = False
    idle_timeout_s: float = 30.0
    live: bool = True  # lamp hours and power transitions follow real time


class PjlinkSimulator:
    """`await start()`, then `.port`; `power_on()`, `power_off()`, `stop()`."""

    def __init__(self, state: State | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state or State()
        self.host, self.port = host, port
        self.connections = 0
        self.received: list[str] = []  # every line, as received
        self.auth_failures = 0
        self._server: asyncio.Server | None = None
        self._transition: tuple[float, int] | None = None  # (when, power after)
        self._sessions: set[asyncio.Task[None]] = set()
        self._last = time.monotonic()

    async def start(self) -> PjlinkSimulator:
        await self._listen()  # also when starting in standby: the port is taken, then closed
        if self.state.power == 0 and self.state.refuse_in_standby:
            await self._close_listener()
        return self

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        """Stop listening and end every open session (3.11's Server.wait_closed does not)."""
        await self._close_listener()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    # ---------------------------------------------------------------- scripting

    def tick(self) -> None:
        """Bring lamp hours and power transitions up to now (real time)."""
        now = time.monotonic()
        elapsed, self._last = now - self._last, now
        if self.state.live:
            for lamp in self.state.lamps:
                if lamp[1]:
                    lamp[0] = min(99999.0, lamp[0] + elapsed * self.state.lamp_hours_per_s)
        if self._transition and now >= self._transition[0]:
            power = self._transition[1]
            self._transition = None
            if power == 0:
                asyncio.get_running_loop().create_task(self._standby())
            else:
                self._set_power(power)

    def finish_transition(self) -> None:
        """End a warm-up or cool-down now: a script steps through the states without waiting
        for them (a real projector takes 30 s to 2 min)."""
        if self._transition:
            self._transition = (time.monotonic(), self._transition[1])
        self.tick()

    def _set_power(self, power: int) -> None:
        self.state.power = power
        for lamp in self.state.lamps:
            lamp[1] = 1 if power in (1, 3) else 0

    async def power_on(self) -> None:
        self.tick()
        await self._listen()
        if self.state.warmup_s > 0:
            self._set_power(3)
            self._transition = (time.monotonic() + self.state.warmup_s, 1)
        else:
            self._set_power(1)

    async def power_off(self) -> None:
        self.tick()
        if self.state.cooldown_s > 0:
            self._set_power(2)
            self._transition = (time.monotonic() + self.state.cooldown_s, 0)
        else:
            await self._standby()

    async def _standby(self) -> None:
        self._set_power(0)
        if self.state.refuse_in_standby:
            await self._close_listener()

    # ---------------------------------------------------------------- protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._sessions.discard(task)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.state
        random = secrets.token_hex(4) if s.password is not None else None
        writer.write(b"PJLINK 0\r" if random is None else f"PJLINK 1 {random}\r".encode())
        await writer.drain()
        if s.drop_after_greeting:
            return
        first = True
        while True:
            raw = await asyncio.wait_for(reader.readuntil(b"\r"), s.idle_timeout_s)
            line = raw.decode("utf-8", "replace").strip("\r\n")
            self.received.append(line)
            if line.startswith("SIM ") and writer.get_extra_info("peername")[0] in ("127.0.0.1", "::1"):
                writer.write((self._control(line[4:]) + "\r").encode())
                await writer.drain()
                continue
            if first and random is not None:
                digest = hashlib.md5((random + (s.password or "")).encode(), usedforsecurity=False).hexdigest()
                if line[:32] != digest:
                    self.auth_failures += 1
                    writer.write(b"PJLINK ERRA\r")
                    await writer.drain()
                    return
                line = line[32:]
            first = False
            answer = self._answer(line)
            if s.slow_s:
                await asyncio.sleep(s.slow_s)
            writer.write(answer.encode("utf-8") + b"\r")
            await writer.drain()

    def _answer(self, line: str) -> str:
        self.tick()
        s = self.state
        if len(line) < 7 or not line.startswith("%1") or line[6] != " ":
            return f"%1{line[2:6].upper() or 'XXXX'}=ERR1"
        command, param = line[2:6].upper(), line[7:]
        head = f"%1{command}="
        if command in s.garbage:
            return "@#!? 42"
        if command in s.command_errors:
            return head + s.command_errors[command]
        if param != "?":
            return head + "ERR2"  # a read-only simulator: set commands are out of parameter
        if s.power == 0 and command in s.standby_errors:
            return head + s.standby_errors[command]
        values = {
            "POWR": str(s.power),
            "LAMP": " ".join(f"{int(hours)} {int(on)}" for hours, on in s.lamps),
            "ERST": s.errors, "INPT": s.input, "NAME": s.name, "INF1": s.manufacturer, "INF2": s.model,
            "INFO": f"{s.manufacturer} {s.model}", "CLSS": s.pjlink_class,
        }
        if command == "LAMP" and not s.lamps:
            return head + "ERR1"  # no lamp (laser, LED)
        if command not in values:
            return head + "ERR1"
        return head + values[command]

    def _control(self, text: str) -> str:
        """`SIM {"set": {...}, "do": ["power_on" | "power_off"]}` from loopback, for demos."""
        try:
            body = json.loads(text)
            names = {f.name for f in fields(State)}
            for name, value in body.get("set", {}).items():
                if name not in names:
                    raise ValueError(f"unknown field {name!r}")
                setattr(self.state, name, set(value) if name == "garbage" else value)
            for action in body.get("do", []):
                if action not in ("power_on", "power_off"):
                    raise ValueError(f"unknown action {action!r}")
                asyncio.get_running_loop().create_task(getattr(self, action)())
        except (ValueError, TypeError, AttributeError) as e:
            return f"SIM ERR {e}"
        return "SIM OK"


async def _serve(args: argparse.Namespace) -> None:
    state = State(password=args.password, lamp_hours_per_s=args.lamp_hours_per_s,
                  refuse_in_standby=args.refuse_in_standby, warmup_s=30.0, cooldown_s=60.0)
    sim = await PjlinkSimulator(state, host=args.host, port=args.port).start()
    print(f"PJLink simulator on {args.host}:{sim.port} (password: {'set' if args.password else 'none'}); "
          "Ctrl-C to stop", flush=True)
    if not args.cycle:
        await asyncio.Event().wait()
    on_s, off_s = args.cycle
    while True:  # a class: the projector on for a lesson, then off for the break
        await asyncio.sleep(on_s)
        await sim.power_off()
        await asyncio.sleep(off_s)
        await sim.power_on()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tice_agent.simulators.pjlink",
                                description="A simulated PJLink class 1 projector (tests and demos).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=4352)
    p.add_argument("--password", default=None, help="ask for PJLink authentication with this password")
    p.add_argument("--lamp-hours-per-s", type=float, default=1 / 3600, help="lamp ageing speed (demo)")
    p.add_argument("--refuse-in-standby", action="store_true", help="close the network in standby")
    p.add_argument("--cycle", type=float, nargs=2, metavar=("ON_S", "OFF_S"),
                   help="switch on and off in a loop: ON_S seconds on, OFF_S seconds in standby")
    args = p.parse_args(argv)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
