"""docker-compose.yml and the Dockerfile: Debian's docker-compose accepts the file, and every
service restarts by itself and says when it is healthy. (No Docker engine runs here: the image
itself is not built by the tests.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers import required_tool

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"postgres", "collector", "prometheus", "alertmanager", "grafana", "demo"}


def compose(*args: str, file: Path = ROOT / "docker-compose.yml") -> subprocess.CompletedProcess[str]:
    tool = required_tool("docker-compose", "docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_", "TICE_", "GRAFANA_"))}
    return subprocess.run([tool, "--project-directory", str(ROOT), "-f", str(file), *args], capture_output=True,
                          text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.slow  # runs docker-compose as a process
def test_docker_compose_config_passes():
    result = compose("config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr


@pytest.mark.slow  # runs docker-compose as a process
def test_docker_compose_config_refuses_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text(encoding="utf-8").replace(
        "condition: service_healthy", "condition: service_happy"), encoding="utf-8")
    result = compose("config", "-q", file=broken)
    assert result.returncode == 1
    assert "service_happy" in result.stderr


def resolved() -> dict:
    result = compose("--profile", "demo", "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.mark.slow  # runs docker-compose as a process
def test_every_service_restarts_and_has_a_health_check():
    services = resolved()["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


@pytest.mark.slow  # runs docker-compose as a process
def test_the_stack_is_wired_to_the_repository_files():
    config = resolved()
    services = config["services"]
    assert "postgres-data:/var/lib/postgresql/data:rw" in services["postgres"]["volumes"]
    assert services["collector"]["build"]["context"] == str(ROOT)
    assert services["collector"]["environment"]["TICE_DATABASE_URL"].endswith("@postgres:5432/tice")
    assert services["collector"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert f"{ROOT}/dashboards/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert f"{ROOT}/dashboards/alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    assert f"{ROOT}/dashboards/grafana/provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]
    # The read-only role the history datasource logs in with is the one the init script creates.
    assert services["grafana"]["environment"]["TICE_HISTORY_DB_USER"] == \
        services["postgres"]["environment"]["TICE_HISTORY_DB_USER"]
    # The demo is a profile of its own, the collector's simulated city.
    assert services["demo"]["profiles"] == ["demo"]
    assert services["demo"]["command"][:2] == ["tice-collector", "demo"]
    prometheus = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert targets["tice-collector"]["static_configs"][0]["targets"] == ["collector:8080"]
    assert targets["tice-demo"]["dns_sd_configs"][0]["names"] == ["demo"]


def test_the_image_installs_the_collector_with_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^RUN pip install -c constraints\.txt \.", dockerfile, re.M), dockerfile
    for copied in re.findall(r"^COPY (.+) \S+$", dockerfile, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), path
    assert "USER tice" in dockerfile
