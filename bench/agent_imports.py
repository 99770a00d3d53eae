"""What each import of the agent costs in resident memory, in the order `tice-agent run` loads them.

    python bench/agent_imports.py [--python PY] [--https] [--importtime N]

Builds the agent's wheels from this checkout and installs them alone in a fresh venv in a
temporary directory (as a laptop does; `--python` measures that interpreter instead, this
venv's own for instance), then runs in a fresh interpreter of it the imports of `tice-agent run` step by step, and after each
step prints the process's RSS from /proc/self/status, split into RssFile (pages of files
mapped in: the interpreter, shared libraries such as libcrypto, extension modules; shared with
every other process mapping them) and RssAnon (the process's own heap: module objects, code,
dicts), and the modules the step added. `--https` measures the sender as it loads for an
`https://` collector (with TLS); without it, for `http://` (as the footprint bench runs).
`--importtime N` then prints the N slowest-to-import modules from `python -X importtime` of
the same steps (self time, microseconds), a hint of which modules are big.

Linux only (/proc). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import agent_venv, run  # noqa: E402

# Each step is Python run in the same interpreter after the previous ones. The agent's daemon
# imports in this order: the CLI, its config, the default probes (cmd_run -> _slots), the runner,
# then the sender and the HTTP client (run_agent).
STEPS: list[tuple[str, str]] = [
    ("a bare interpreter", "pass"),
    ("asyncio", "import asyncio"),
    ("msgspec, the wire format", "import msgspec, tice_wire"),
    ("the CLI and its config (argparse, logging, tomllib)", "import tice_agent.cli"),
    ("psutil", "import psutil"),
    ("the default probes (usage, health, network, display)",
     "from tice_agent.probes import load; load(['usage', 'health', 'network', 'display'])"),
    ("the runner and the spool (sqlite3)", "import tice_agent.runner"),
    ("the sender and its HTTP client (urllib)", "import tice_agent.sender"),
    ("TLS for an https:// collector (ssl: libssl, libcrypto)", "import ssl; ssl.create_default_context()"),
]

_PROBE = r"""
import sys, json
def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
    return out
rows = []
before = set(sys.modules)
for name, code in json.loads(sys.argv[1]):
    exec(code, {})
    now = set(sys.modules)
    added = sorted(m for m in now - before if "." not in m or m.startswith("tice_"))
    before = now
    rows.append([name, code, status(), added])
print(json.dumps(rows))
"""


def measure(python: str, steps: list[tuple[str, str]]) -> list[list[object]]:
    out = subprocess.run([python, "-c", _PROBE, json.dumps(steps)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def importtime(python: str, steps: list[tuple[str, str]], n: int) -> list[tuple[int, str]]:
    code = "\n".join(c for _, c in steps)
    err = subprocess.run([python, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cum, name = line.removeprefix("import time:").split("|")
        rows.append((int(self_us), name.strip()))
    return sorted(rows, reverse=True)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="the interpreter to measure (default: a fresh venv holding the agent's wheels)")
    ap.add_argument("--https", action="store_true", help="also load TLS, as for an https:// collector")
    ap.add_argument("--importtime", type=int, default=0, metavar="N", help="print the N slowest imports too")
    args = ap.parse_args()
    steps = STEPS if args.https else STEPS[:-1]
    tmp = None
    try:
        if args.python:
            python = args.python
        else:
            tmp = Path(tempfile.mkdtemp(prefix="tice-imports-"))
            print("building the agent's wheels and a venv holding them alone", file=sys.stderr)
            python = str(agent_venv(ROOT, tmp).with_name("python"))
        report(python, steps, args)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def report(python: str, steps: list[tuple[str, str]], args: argparse.Namespace) -> None:
    rows = measure(python, steps)
    where = "the agent's wheels alone in a fresh venv" if not args.python else f"`{python}`"
    print(f"{where}, Python {sys.version.split()[0]}, collector over {'https' if args.https else 'http'}")
    print()
    print("| step | RSS MiB | + MiB | RssFile MiB | RssAnon MiB | top-level modules added |")
    print("|---|---:|---:|---:|---:|---|")
    prev = 0.0
    for name, _code, st, added in rows:
        assert isinstance(st, dict) and isinstance(added, list)
        rss = st["VmRSS"]
        shown = ", ".join(added[:12]) + (f" (+{len(added) - 12})" if len(added) > 12 else "")
        print(f"| {name} | {rss:.1f} | {rss - prev if prev else 0:+.1f} | {st['RssFile']:.1f} | "
              f"{st['RssAnon']:.1f} | {shown} |")
        prev = rss
    if args.importtime:
        print()
        print("| import self time µs | module |")
        print("|---:|---|")
        for us, name in importtime(python, steps, args.importtime):
            print(f"| {us} | {name} |")


if __name__ == "__main__":
    run(main)
