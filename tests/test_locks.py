"""The lock files pin every installable file by hash (issue 28): every requirement carries --hash lines, the
installers use --require-hashes, and torch's only hash is the CPU wheel's (so a CUDA build is refused, never
installed)."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT

LOCKS = ("requirements.lock", "requirements-dev.lock", "requirements-checkov.lock")
CPU_TORCH_SHA256 = "6746dbcbeb526eb61330b76b41ff1b4eb848951103a892eeb080dfa2b264667b"  # torch-2.13.0+cpu cp311 wheel


def requirements(lock: str) -> dict[str, list[str]]:
    """name==version -> its sha256 hashes, from a pip-compile style lock (continuation lines)."""
    text = (ROOT / lock).read_text().replace("\\\n", " ")
    found = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r "):
            continue
        pin = line.split()[0]
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", pin), f"{lock}: {pin} is not pinned with =="
        found[pin] = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_hashes(lock: str) -> None:
    pins = requirements(lock)
    assert len(pins) >= 40
    unhashed = sorted(pin for pin, hashes in pins.items() if not hashes)
    assert unhashed == []


def test_torch_is_locked_to_the_cpu_wheel_alone() -> None:
    assert requirements("requirements.lock")["torch==2.13.0+cpu"] == [CPU_TORCH_SHA256]
    assert not any(pin.startswith(("torch==", "nvidia", "triton==")) for pin in requirements("requirements-dev.lock"))


def test_the_locks_do_not_overlap_and_dev_includes_runtime() -> None:
    runtime, dev = requirements("requirements.lock"), requirements("requirements-dev.lock")
    names = {pin.split("==")[0].lower().replace("_", "-") for pin in runtime}
    assert not {pin.split("==")[0].lower().replace("_", "-") for pin in dev} & names
    assert "-r requirements.lock" in (ROOT / "requirements-dev.lock").read_text().splitlines()
    assert "checkov==3.3.30" in requirements("requirements-checkov.lock")


def test_every_installer_requires_the_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install [^\n]*--require-hashes \\\n\s+-r requirements-dev.lock", makefile)
    assert "--require-hashes -r requirements-checkov.lock" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("pip install --no-compile --require-hashes") == 2
    assert '--require-hashes -r "$LOCK"' in (ROOT / "deploy" / "wheelhouse.sh").read_text()
