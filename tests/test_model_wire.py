"""The encoded parts every answer of a served version shares (service/protocols/exchange.py `wire_of`): built
once per version, and never the reason an unloaded version's memory stays (held weakly)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import orjson
from checkpoints import write_checkpoint

from service.lifecycle.loader import ServedModel, Verified, start_serving, verify_version
from service.observability.metrics import Metrics
from service.protocols.exchange import wire_of
from service.settings import Settings


def served_tiny(tmp_path: Path) -> ServedModel:
    settings = Settings(repository=tmp_path, placement="loop")
    write_checkpoint(tmp_path, "tiny")
    verified = verify_version("tiny", 1, tmp_path / "tiny" / "1", settings, Metrics())
    assert isinstance(verified, Verified)
    return start_serving(verified, settings, Metrics())


def test_a_version_wire_is_built_once_and_does_not_keep_the_version_alive(tmp_path: Path) -> None:
    served = served_tiny(tmp_path)
    wire = wire_of(served, "replica-a")
    assert wire_of(served, "replica-a") is wire
    assert dict(wire.headers)[b"x-model-name"] == b"tiny"
    assert dict(wire.headers)[b"x-model-version"] == b"1"
    assert dict(wire.headers)[b"x-replica"] == b"replica-a"
    assert orjson.loads(wire.v1_head + b"[]}") == {"model_name": "tiny", "model_version": "1", "predictions": []}
    assert wire_of(served, "replica-b") is not wire  # another replica name: other headers
    served.batcher.stop()
    gone = weakref.ref(served)
    del served
    gc.collect()
    assert gone() is None
