"""docker-compose.yml is safe by default (issue 28): every container drops all capabilities, cannot gain
privileges and has a memory limit; only the balancer publishes a port (on loopback); the admin routes are
closed, with keys that the one-shot `keys` service generates into a volume on the first start (never into the
image or the environment); the balancer image has a HEALTHCHECK. Plus service.keygen itself."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT

from service.http.auth import auth_enabled, read_keys, startup_problem
from service.keyfile import key_weakness
from service.keygen import KEY_FILES
from service.settings import Settings

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _bytes(limit: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kmg])", limit).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** {"k": 1, "m": 2, "g": 3}[unit]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_drops_capabilities_cannot_gain_privileges_and_has_a_memory_limit(name: str) -> None:
    service = SERVICES[name]
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service
    assert service["security_opt"] == ["no-new-privileges:true"]
    assert 64 * 1024**2 <= _bytes(service["mem_limit"]) <= 4 * 1024**3
    assert service.get("privileged", False) is False


def test_only_the_balancer_publishes_a_port_and_only_on_loopback() -> None:
    published = {name: service["ports"] for name, service in SERVICES.items() if "ports" in service}
    assert published == {  # HTTP and gRPC (h2) through the balancer
        "balancer": ["127.0.0.1:${INVARIANT_HOST_PORT:-8000}:8080", "127.0.0.1:${INVARIANT_HOST_GRPC_PORT:-8001}:8081"]
    }
    for name in ("keys", "train"):
        assert SERVICES[name]["network_mode"] == "none", name


def server_environment() -> dict[str, str]:
    """The server's environment as compose resolves it with nothing set: ${VAR:-default} -> default."""
    environment = SERVICES["server"]["environment"]
    return {name: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value)) for name, value in environment.items()}


def test_the_server_is_closed_by_default_with_the_generated_keys(tmp_path: Path) -> None:
    environment = server_environment()
    assert "INVARIANT_ALLOW_UNAUTHENTICATED" not in environment
    assert environment["INVARIANT_API_KEYS_FILE"] == "/keys/api-keys"
    assert environment["INVARIANT_ADMIN_KEYS_FILE"] == "/keys/admin-keys"
    assert environment["INVARIANT_PROTECT_METRICS"] == "true"
    assert "keys:/keys:ro" in SERVICES["server"]["volumes"]
    assert SERVICES["server"]["depends_on"]["keys"] == {"condition": "service_completed_successfully"}
    assert SERVICES["keys"]["volumes"] == ["keys:/keys"]
    assert SERVICES["keys"]["entrypoint"] == ["python", "-m", "service.keygen", "/keys"]
    assert "keys" in COMPOSE["volumes"]
    # No key in any environment (only file paths): nothing that `docker inspect` shows holds a key.
    for service in SERVICES.values():
        for name, value in (service.get("environment") or {}).items():
            assert "KEY" not in name or str(value).startswith("/keys/"), name
    # The settings the replicas get, with keys as the keys service writes them: auth on, the server starts.
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    generate(keys_dir)
    settings = Settings(
        host=environment["INVARIANT_HOST"],
        api_keys_file=keys_dir / "api-keys",
        admin_keys_file=keys_dir / "admin-keys",
        protect_metrics=environment["INVARIANT_PROTECT_METRICS"] == "true",
    )
    assert auth_enabled(settings)
    assert startup_problem(settings) is None


def generate(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.keygen", str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keygen_writes_strong_keys_once_and_keeps_them(tmp_path: Path) -> None:
    first = generate(tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "".join(f"keygen: {tmp_path / name}: generated a new key\n" for name in KEY_FILES)
    contents = {}
    for name in KEY_FILES:
        path = tmp_path / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o400
        assert len(read_keys(path)) == 1
        key = path.read_text().splitlines()[-1]
        assert key_weakness(key) is None
        contents[name] = path.read_text()
    assert contents["api-keys"] != contents["admin-keys"]
    again = generate(tmp_path)
    assert again.returncode == 0
    assert again.stdout == "".join(f"keygen: {tmp_path / name}: exists, kept\n" for name in KEY_FILES)
    assert {name: (tmp_path / name).read_text() for name in KEY_FILES} == contents
    assert sorted(entry.name for entry in tmp_path.iterdir()) == sorted(KEY_FILES)  # no staging file left


def test_keygen_into_a_missing_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    done = generate(tmp_path / "missing")
    assert done.returncode == 2
    assert done.stderr == f"keygen: error: cannot write keys into {tmp_path / 'missing'}: No such file or directory\n"


def test_the_balancer_has_a_healthcheck_on_a_loopback_health_frontend() -> None:
    dockerfile = (ROOT / "deploy" / "balancer" / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*\n\s+CMD \[(.*)\]$", dockerfile, re.M)
    assert healthcheck is not None
    assert "/dev/tcp/127.0.0.1/8081" in healthcheck.group(1)
    assert "GET /healthz" in healthcheck.group(1)
    haproxy = (ROOT / "deploy" / "balancer" / "haproxy.cfg").read_text()
    health = re.search(r"^frontend health\n((?:    .*\n)+)", haproxy, re.M)
    assert health is not None
    assert health.group(1).split("\n")[:3] == [
        "    bind 127.0.0.1:8081",
        "    monitor-uri /healthz",
        "    monitor fail if { nbsrv(replicas) lt 1 }",
    ]


def test_the_image_owns_the_keys_mount_point_for_the_app_user_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "chown 10001:10001 /home/app /models /keys" in dockerfile
    assert "chmod 0700 /keys" in dockerfile
