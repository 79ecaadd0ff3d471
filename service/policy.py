"""Version policy: which versions of a model serve (`all`, `latest:N`, `specific:V[,V...]`).

The policy picks from versions that can serve: a version refused by the loader is never among them, so it
never displaces one that serves (latest:N counts versions that serve, as TF Serving does).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from models import parse_version

POLICY_FORMS = "all, latest:N (N >= 1) or specific:V[,V...]"


@dataclass(frozen=True)
class VersionPolicy:
    text: str
    latest: int = 0  # > 0: the N highest versions
    specific: frozenset[int] = frozenset()  # non-empty: exactly these versions

    def pick(self, versions: Iterable[int]) -> list[int]:
        """The versions this policy serves out of `versions`, highest first."""
        ordered = sorted(set(versions), reverse=True)
        if self.latest:
            return ordered[: self.latest]
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered


def parse_policy(text: str) -> VersionPolicy:
    """`all`, `latest:N` or `specific:V[,V...]`; ValueError naming the accepted forms otherwise."""
    kind, _, argument = text.strip().partition(":")
    if kind == "all" and not argument:
        return VersionPolicy("all")
    if kind == "latest":
        count = parse_version(argument)
        if count is not None:
            return VersionPolicy(text, latest=count)
    if kind == "specific":
        numbers = [parse_version(part.strip()) for part in argument.split(",")]
        if numbers and all(n is not None for n in numbers):
            return VersionPolicy(text, specific=frozenset(n for n in numbers if n is not None))
    raise ValueError(f"invalid version policy {text!r}: use {POLICY_FORMS}")
