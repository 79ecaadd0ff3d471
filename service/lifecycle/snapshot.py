"""What the registry publishes: one immutable `Snapshot` of the served set, and the states and index lines
clients see. Plain data, no behaviour beyond rendering: the registry (registry.py) builds and replaces it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from service.errors import NotReady
from service.lifecycle.loader import ServedModel

Key = tuple[str, int]  # (model name, version)


class State(StrEnum):
    READY = "READY"
    LOADING = "LOADING"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class IndexEntry:
    """One line of the repository index: a version on disk or loaded, or a directory that is not one."""

    name: str
    version: str
    state: State
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "state": self.state.value, "reason": self.reason}


@dataclass(frozen=True)
class NotServing:
    """A known version that does not serve now, and why."""

    name: str
    version: int
    state: State
    reason: str

    def error(self) -> NotReady:
        if self.state is State.LOADING:
            return NotReady(f"model {self.name!r} version {self.version} is still loading")
        return NotReady(f"model {self.name!r} version {self.version} is not served: {self.reason}")


@dataclass(frozen=True)
class Snapshot:
    serving: Mapping[str, Mapping[int, ServedModel]] = field(default_factory=dict)
    latest: Mapping[str, ServedModel] = field(default_factory=dict)  # what unversioned requests get, per model
    unserved: Mapping[str, Mapping[int, NotServing]] = field(default_factory=dict)
    index: tuple[IndexEntry, ...] = ()
    labels: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # model -> label -> version
