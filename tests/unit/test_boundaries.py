"""The boundary between the three distributions, enforced.

The agent and the wire format never import the collector, the agent imports no server library,
and the collector imports the agent only in its demo (import-linter contracts in pyproject.toml,
`lint-imports`); the wire format loads
nothing but msgspec and the standard library; the top-level pyproject's dependencies are exactly
the union of the three distributions' (so the developer's install is what the three install).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _loaded_by(code: str) -> set[str]:
    """Top-level names of the modules a fresh interpreter loads to run `code`, beyond its start-up."""
    probe = ("import sys\nbefore = set(sys.modules)\n" + code + "\n"
             "import json\nprint(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_the_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "lint-imports is not installed: pip install -c constraints.txt -e '.[test]'"
    done = subprocess.run([lint, "--no-cache"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout, done.stdout


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_the_wire_format_loads_msgspec_and_the_standard_library_only():
    # What msgspec loads itself is msgspec's business (typing_extensions, when it is installed).
    allowed = set(sys.stdlib_module_names) | _loaded_by("import msgspec") | {"tice_wire"}
    loaded = _loaded_by("import tice_wire")
    assert {"tice_wire", "msgspec"} <= loaded
    assert loaded - allowed == set()


@pytest.mark.slow  # runs the CLI or Python in a child process
def test_the_agent_loads_no_collector_and_no_server_library():
    allowed = set(sys.stdlib_module_names) | _loaded_by("import msgspec, psutil") | {"tice_agent", "tice_wire"}
    loaded = _loaded_by("import tice_agent.cli, tice_agent.runner, tice_agent.sender\n"
                        "from tice_agent.probes import load_all\nload_all()")
    assert {"tice_agent", "tice_wire", "msgspec", "psutil"} <= loaded
    assert loaded - allowed == set()


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def _package_data(path: Path) -> dict[str, list[str]]:
    return tomllib.loads(path.read_text(encoding="utf-8"))["tool"]["setuptools"].get("package-data", {})


def _reqs(items: list[str]) -> dict[str, str]:
    """name -> the requirement as written (specifier and markers), names normalised."""
    out = {}
    for item in items:
        r = Requirement(item)
        out[r.name.lower().replace("_", "-")] = str(r).split(r.name, 1)[1]
    return out


def test_the_developer_install_is_the_union_of_the_three_distributions():
    top = _project(ROOT / "pyproject.toml")
    wire, agent, collector = (_project(ROOT / d / "pyproject.toml") for d in ("wire", "agents", "collector"))
    ours = {"tice-wire", "tice-agent", "tice-collector"}
    union: dict[str, str] = {}
    for items in (wire["dependencies"], agent["dependencies"], agent["optional-dependencies"]["simulators"],
                  collector["dependencies"]):
        for name, spec in _reqs(items).items():
            if name in ours:
                continue
            assert union.setdefault(name, spec) == spec, f"{name}: {union[name]} in one distribution, {spec} in another"
    assert _reqs(top["dependencies"]) == union
    # The agent's test extra is inside the developer's (the agent's tests run in both venvs).
    top_test = _reqs(top["optional-dependencies"]["test"]) | union
    for name, spec in _reqs(agent["optional-dependencies"]["test"]).items():
        assert top_test.get(name) == spec, f"agents/pyproject.toml test extra {name}{spec} not in the top-level test extra"
    # The same commands and the same package data for the same code.
    assert top["scripts"] == agent["scripts"] | collector["scripts"]
    data = [_package_data(ROOT / d / "pyproject.toml") for d in ("wire", "agents", "collector")]
    assert _package_data(ROOT / "pyproject.toml") == data[0] | data[1] | data[2]
    assert {wire["version"], agent["version"], collector["version"]} == {top["version"]}
    for dist in (agent, collector):
        [pin] = [r for r in dist["dependencies"] if Requirement(r).name == "tice-wire"]
        assert Requirement(pin).specifier.contains(wire["version"]), pin


def _glob(path: str, pattern: str) -> bool:
    """setuptools' package-data glob: `*` stays inside one folder."""
    return len(Path(path).parts) == len(Path(pattern).parts) and Path(path).match(pattern)


@pytest.mark.parametrize("dist", ["wire", "agents", "collector"])
def test_each_distribution_ships_its_package_data(dist):
    """Files the code opens at run time are declared as package data where they live."""
    pyproject = tomllib.loads((ROOT / dist / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {})
    for package in (ROOT / dist).glob("tice_*"):
        data = {p.relative_to(package).as_posix() for p in package.rglob("*")
                if p.is_file() and (p.suffix in (".sql", ".toml", ".csv", ".yaml", ".j2", ".html") or p.name == "py.typed")}
        patterns = declared.get(package.name, [])
        missing = sorted(d for d in data if not any(_glob(d, p) for p in patterns))
        assert not missing, f"{dist}/pyproject.toml: add {missing} to [tool.setuptools.package-data]"
