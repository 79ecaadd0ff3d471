"""What the registry publishes: one immutable `Snapshot` of the served set, and the states and index lines
clients see. Plain data and the lookups a request makes in it: the registry (registry.py) builds and replaces it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from models.labels import STABLE
from models.versions import parse_version
from service.errors import NotFound, NotReady
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

    def names(self) -> list[str]:
        return sorted({*self.serving, *self.unserved})

    def has(self, name: str) -> bool:
        return name in self.serving or name in self.unserved

    def versions(self, name: str) -> list[int]:
        return sorted({*self.serving.get(name, {}), *self.unserved.get(name, {})})

    def find(self, name: str, version: str | None = None, label: str | None = None) -> ServedModel | NotServing:
        """The named version, the labelled one, or the one unversioned traffic gets (labels.py: `stable`, else
        the highest that serves; else the highest known); NotFound if unknown."""
        if label is not None:
            return self._labelled(name, label)
        if version is None:
            served = self.latest.get(name)
            if served is not None:
                return served
            if STABLE in self.labels.get(name, {}):
                return self._labelled(name, STABLE)
            unserved = self.unserved.get(name)
            if not unserved:
                raise NotFound(f"unknown model {name!r}; available: {self.names()}")
            return unserved[max(unserved)]
        number = parse_version(version)
        if number is not None:
            found = self.serving.get(name, {}).get(number) or self.unserved.get(name, {}).get(number)
            if found is not None:
                return found
        if not self.has(name):
            raise NotFound(f"unknown model {name!r}; available: {self.names()}")
        raise NotFound(f"model {name!r} has no version {version!r}; available: {self.versions(name)}")

    def _labelled(self, name: str, label: str) -> ServedModel | NotServing:
        if not self.has(name):
            raise NotFound(f"unknown model {name!r}; available: {self.names()}")
        labels = self.labels.get(name, {})
        number = labels.get(label)
        if number is None:
            raise NotFound(f"model {name!r} has no label {label!r}; labels: {sorted(labels)}")
        found = self.serving.get(name, {}).get(number) or self.unserved.get(name, {}).get(number)
        if found is None:
            raise NotFound(f"label {label!r} of model {name!r} names version {number}, which is not in the repository")
        return found
