"""Version labels in the registry: which version unversioned traffic gets, and which versions labels pin.

The rule (models/labels.py holds the file format):
- no labels.json, or one without `stable`: unversioned traffic gets the highest version that serves;
- `stable` names version S: unversioned traffic gets S once S serves. Until then (S loading, refused, not
  on disk) it stays on the version it had, if that one still serves, so a promotion never fails a request;
  a process that starts with S not serving answers unversioned requests 503 with the reason.
- a labelled version serves whatever the version policy says, and so does the version unversioned traffic
  gets now (until the new one takes over), so neither can be unloaded under it.
A labels.json that cannot be used (too large, not {label: version}) is logged and shown in the repository
index; the labels read before stay in force (none at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from models.labels import LABELS_FILE, STABLE
from service.lifecycle.loader import ModelDir

log = logging.getLogger("invariant.registry")


class LabelBook:
    """The labels in force per model and why a model's labels.json is not used, updated from each scan."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, int]] = {}
        self.problems: dict[str, str] = {}
        self.defaults: dict[str, int] = {}  # model -> the version unversioned traffic got at the last publish

    def update(self, name: str, model_dir: ModelDir) -> None:
        if model_dir.labels_problem:
            if self.problems.get(name) != model_dir.labels_problem:
                kept = self.labels.get(name)
                log.error("model %s: %s; labels kept: %s", name, model_dir.labels_problem, kept or "none")
            self.problems[name] = model_dir.labels_problem
            return
        self.problems.pop(name, None)
        labels = model_dir.labels or {}
        if labels != self.labels.get(name, {}):
            log.info("model %s labels: %s", name, labels or f"none (no {LABELS_FILE}: the highest version serves)")
        if labels:
            self.labels[name] = labels
        else:
            self.labels.pop(name, None)

    def stable(self, name: str) -> int | None:
        return self.labels.get(name, {}).get(STABLE)

    def pinned(self, name: str, candidates: Collection[int]) -> set[int]:
        """The candidates that must serve whatever the policy says: labelled ones, and the current default."""
        held = {*self.labels.get(name, {}).values()}
        default = self.defaults.get(name)
        if default is not None:
            held.add(default)
        return held & set(candidates)

    def choose_defaults(self, serving: Mapping[str, Collection[int]]) -> dict[str, int]:
        """model -> the version unversioned traffic gets now (models with none left out); remembered."""
        chosen: dict[str, int] = {}
        for name, versions in serving.items():
            version = default_version(self.stable(name), versions, self.defaults.get(name))
            if version is not None:
                chosen[name] = version
        if chosen != self.defaults:
            for name, version in chosen.items():
                if self.defaults.get(name) != version:
                    log.info("model %s: unversioned requests go to version %d", name, version)
        self.defaults = chosen
        return chosen


def default_version(stable: int | None, serving: Collection[int], previous: int | None) -> int | None:
    """The version unversioned traffic gets, out of the versions that serve (see the module's rule)."""
    if not serving:
        return None
    if stable is None:
        return max(serving)
    if stable in serving:
        return stable
    return previous if previous in serving else None
