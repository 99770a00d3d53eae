"""HTTPS served directly, JSON logs, and no token or secret in any log line."""

from __future__ import annotations

import json
import ssl
import subprocess

import aiohttp
import pytest

from tests.helpers import CollectorProcess, add_school, auth, usage_batch, wait_until
from tice_collector.logs import redact

pytestmark = pytest.mark.slow  # starts collectors, agents or other programs as processes: the full suite only


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_https_with_verified_certificate_and_json_logs(database_url, db, certificate):
    cert, key = certificate
    secret = await add_school(db)
    collector = CollectorProcess("--log-format", "json", env={
        "TICE_DATABASE_URL": database_url, "TICE_TLS_CERT_FILE": str(cert), "TICE_TLS_KEY_FILE": str(key),
        "TICE_LOG_LEVEL": "debug"})
    base = f"https://127.0.0.1:{collector.port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                if collector.proc.poll() is not None:
                    raise AssertionError(f"collector exited: {collector.proc.stderr.read()}")
                try:
                    async with http.get(base + "/readyz", ssl=trust) as r:
                        return r.status == 200
                except aiohttp.ClientConnectorError:
                    return False

            await wait_until(ready, "the collector to answer /readyz over HTTPS")
            async with http.post(base + "/api/v1/enroll", ssl=trust,
                                 json={"secret": secret, "serial": "TLS-1", "kind": "laptop"}) as r:
                assert r.status == 201
                dev = await r.json()
            async with http.post(base + "/api/v1/reports", ssl=trust, json=usage_batch(dev["device_id"], 2),
                                 headers=auth(dev["token"])) as r:
                assert r.status == 200
            # Plain HTTP on the TLS port does not get an answer with data.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{collector.port}/readyz") as r:
                    await r.read()
            # An unverified certificate is refused by a verifying client.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(base + "/readyz") as r:
                    await r.read()
    finally:
        code, err = collector.stop()
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert any("serving on https://" in e["msg"] for e in entries)
    assert any(e["logger"] == "tice.enroll" for e in entries)
    assert secret not in err and dev["token"] not in err
    assert secret[len("tice_enr_"):] not in err and dev["token"][len("tice_dev_"):] not in err


def test_redaction_masks_anything_token_shaped():
    line = "Authorization: Bearer abc.def tice_dev_Zx9-_q secret=tice_enr_AAAA"
    masked = redact(line)
    assert "abc.def" not in masked and "Zx9" not in masked and "AAAA" not in masked
    assert "tice_dev_***" in masked and "Bearer ***" in masked


def test_half_tls_configuration_is_refused(tmp_path, certificate):
    cert, _ = certificate
    collector = CollectorProcess(env={"TICE_TLS_CERT_FILE": str(cert)})
    code, err = collector.wait_exit()
    assert code == 2
    assert "tls_cert_file and tls_key_file must be set together" in err


async def test_agent_verifies_https_and_trusts_a_private_ca(database_url, db, certificate):
    from tice_agent.sender import EnrollError, enroll

    cert, key = certificate
    secret = await add_school(db)
    collector = CollectorProcess(env={"TICE_DATABASE_URL": database_url, "TICE_TLS_CERT_FILE": str(cert),
                                      "TICE_TLS_KEY_FILE": str(key)})
    base = f"https://127.0.0.1:{collector.port}"
    try:
        async def enrolled() -> bool:
            try:
                await enroll(base, secret, "TLS-AGENT", "laptop", ca_bundle=str(cert), timeout_s=5)
                return True
            except EnrollError as e:
                if "certificate" in str(e):
                    raise
                return False

        await wait_until(enrolled, "the agent to enrol over HTTPS with the private CA")
        # Without the city's CA the same server is refused: verification is never off.
        with pytest.raises(EnrollError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await enroll(base, secret, "TLS-AGENT", "laptop", timeout_s=5)
    finally:
        collector.stop()
