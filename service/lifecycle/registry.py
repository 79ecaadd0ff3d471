"""The models this process serves, as one immutable `Snapshot` (name -> version -> served model) that is
replaced whole, so a request sees either the old set or the new one, never half.

Everything that changes the set runs on the event loop: loads run in a thread (loader.py) and their result
is published when they finish; a version that goes away stops receiving requests at once, finishes the
ones it holds (drain), then stops its batcher and frees its memory. With `model_control=poll` a background
task rescans the repository every `poll_interval_s`; a failed or slow load never holds up a poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from typing import Any

from models import parse_version
from models.labels import LABELS_FILE
from service.engine.types import Executor
from service.errors import BadRequest
from service.lifecycle.labels import LabelBook
from service.lifecycle.loader import (
    EMPTY_MODEL_DIR,
    DirStamp,
    ModelDir,
    Refusal,
    ServedModel,
    Verified,
    content_of,
    scan_model,
    scan_repository,
    start_serving,
    verify_within,
)
from service.lifecycle.memory import freeze_survivors, release_memory
from service.lifecycle.snapshot import IndexEntry, Key, NotServing, Snapshot, State
from service.observability.metrics import Metrics
from service.policy import parse_policy
from service.settings import Settings

log = logging.getLogger("invariant.registry")


# Bench only, reachable from code (create_app) and never from settings: wraps the executor that passed the
# self-test into the one that serves (the bench's variable-shape comparison). A failed self-test refuses the
# model before this is ever called.
ServingExecutorFactory = Callable[[Executor], Executor]


class ModelRegistry:
    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        executor_factory: ServingExecutorFactory | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_fatal = on_fatal
        self.fatal = ""  # set when a compute thread died: this process should be replaced by a fresh one
        self.metrics = metrics
        self.executor_factory = executor_factory
        self.policy = parse_policy(settings.version_policy)
        self.labels = LabelBook()  # labels.json of each model: the version unversioned traffic gets
        self._snapshot = Snapshot()
        # Working state, touched only on the event loop; `_publish` turns it into the next snapshot.
        self._disk: dict[str, ModelDir] = {}
        self._serving: dict[Key, ServedModel] = {}
        self._loading: dict[Key, asyncio.Task[None]] = {}
        self._refused: dict[Key, Refusal] = {}  # versions that do not serve, until their files change
        self._reload_refused: dict[Key, Refusal] = {}  # serving versions whose changed files were refused
        self._draining: dict[Key, int] = {}  # copies still finishing their requests
        self._retired: list[tuple[Key, ServedModel]] = []  # out of the working set, drained once published
        self._unloaded: set[str] = set()  # explicit mode: unloaded through the API
        self._tasks: set[asyncio.Task[Any]] = set()
        self._metric_keys: set[Key] = set()
        self._closing = False
        self._poller: asyncio.Task[None] | None = None

    # --- the request path: one read of the current snapshot -------------------------------------------

    def names(self) -> list[str]:
        return self._snapshot.names()

    def has(self, name: str) -> bool:
        return self._snapshot.has(name)

    def versions(self, name: str) -> list[int]:
        return self._snapshot.versions(name)

    def any_ready(self) -> bool:
        return bool(self._snapshot.latest)

    def find(self, name: str, version: str | None = None, label: str | None = None) -> ServedModel | NotServing:
        """The named version, the labelled one, or the one unversioned traffic gets (Snapshot.find)."""
        return self._snapshot.find(name, version, label)

    def labels_of(self, name: str) -> dict[str, int]:
        return dict(self._snapshot.labels.get(name, {}))

    def get_ready(self, name: str, version: str | None = None) -> ServedModel:
        found = self.find(name, version)
        if isinstance(found, NotServing):
            raise found.error()
        return found

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Scan, load what the policy serves (the process accepts connections after this), then poll."""
        self._disk = await asyncio.to_thread(scan_repository, self.settings.repository)
        if not self._disk:
            log.warning("no models found in repository %s", self.settings.repository)
        loads = self._reconcile(self._disk)
        if loads:
            await asyncio.wait(loads)
        if self.settings.model_control == "poll":
            self._poller = self._spawn(self._poll_forever())

    async def close(self) -> None:
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
        pending = [task for task in self._tasks if task is not self._poller]  # loads and drains
        if pending:
            await asyncio.wait(pending, timeout=60)
        for served in self._serving.values():
            served.batcher.stop()

    async def index(self, ready_only: bool = False) -> list[IndexEntry]:
        if self.settings.model_control != "poll":  # nothing else rescans: show what is on disk now
            self._disk = await asyncio.to_thread(scan_repository, self.settings.repository)
            self._publish()
        return [entry for entry in self._snapshot.index if entry.state is State.READY or not ready_only]

    async def load(self, name: str) -> list[int]:
        """Explicit mode: (re)load `name` as the policy says; the versions that serve, or BadRequest why not."""
        self._require_explicit("load")
        model_dir = await asyncio.to_thread(scan_model, self.settings.repository, name)
        if not model_dir.versions:
            raise BadRequest(f"model {name!r} has no version directory in the repository")
        self._disk[name] = model_dir
        self._unloaded.discard(name)
        loads = self._reconcile([name], force=True)
        if loads:
            await asyncio.wait(loads)  # not gather: a client that disconnects must not cancel the loads
        serving = sorted(version for model, version in self._serving if model == name)
        if not serving:
            reasons = "; ".join(f"version {e.version}: {e.reason}" for e in self._snapshot.index if e.name == name)
            raise BadRequest(f"model {name!r} does not serve: {reasons}")
        return serving

    async def unload(self, name: str) -> None:
        """Explicit mode: stop routing to every version of `name`, wait for their requests, free them."""
        self._require_explicit("unload")
        if not self.has(name):
            raise BadRequest(f"unknown model {name!r}; available: {self.names()}")
        self._unloaded.add(name)
        for key in [key for key in self._serving if key[0] == name]:
            self._retire(key)
        drains = self._publish()
        if drains:
            await asyncio.wait(drains)

    def _require_explicit(self, action: str) -> None:
        mode = self.settings.model_control
        if mode == "explicit":
            return
        how = (
            f"the server follows the repository on its own (every {self.settings.poll_interval_s:g} s)"
            if mode == "poll"
            else "models load at start-up only"
        )
        raise BadRequest(f"model control mode is {mode!r}: {how}; {action} needs --model-control explicit")

    # --- reconciling the working state with the repository --------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                self._disk = await asyncio.to_thread(scan_repository, self.settings.repository)
                self._reconcile({*self._disk, *(name for name, _ in self._serving)})
            except Exception:  # a failed poll never stops the next one
                log.exception("repository poll failed")

    def _reconcile(self, names: Iterable[str], force: bool = False) -> list[asyncio.Task[None]]:
        """Start the loads the policy asks for, retire what it no longer serves; returns the loads pending."""
        pending: list[asyncio.Task[None]] = []
        for name in names:
            if name in self._unloaded:
                continue
            self.labels.update(name, self._disk.get(name, EMPTY_MODEL_DIR))
            on_disk = self._disk.get(name, EMPTY_MODEL_DIR).versions
            for gone in [key for key in self._refused if key[0] == name and key[1] not in on_disk]:
                del self._refused[gone]  # a directory made again under this number is tried afresh
            for version in self._wanted(name, force):
                key = (name, version)
                if key not in self._loading and self._needs_load(key, on_disk[version], force):
                    self._loading[key] = self._spawn(self._load(key))
                if key in self._loading:
                    pending.append(self._loading[key])
            self._retire_displaced(name)
        self._publish()
        return pending

    def _wanted(self, name: str, force: bool = False) -> list[int]:
        """The versions the policy would serve out of those on disk that can serve (not refused as they are)."""
        on_disk = self._disk.get(name, EMPTY_MODEL_DIR).versions
        usable = [
            version
            for version, stamp in on_disk.items()
            if force or (name, version) in self._serving or not _refused_as_is(self._refused, (name, version), stamp)
        ]
        # Labelled versions, and the one unversioned traffic gets now, serve whatever the policy says.
        return sorted({*self.policy.pick(usable), *self.labels.pinned(name, usable)}, reverse=True)

    def _needs_load(self, key: Key, stamp: DirStamp, force: bool) -> bool:
        served = self._serving.get(key)
        if served is None or force:
            return True
        return served.stamp != stamp and not _refused_as_is(self._reload_refused, key, stamp)

    def _retire_displaced(self, name: str) -> None:
        """Unload versions deleted from disk and those the policy no longer picks among the serving ones."""
        serving = {version for model, version in self._serving if model == name}
        present = serving & set(self._disk.get(name, EMPTY_MODEL_DIR).versions)
        keep = set(self.policy.pick(present)) | self.labels.pinned(name, present)
        for version in sorted(serving - keep):
            self._retire((name, version))

    async def _load(self, key: Key) -> None:
        name, version = key
        path = self.settings.repository / name / str(version)
        loop = asyncio.get_running_loop()

        def on_failure(reason: str) -> None:  # called on the compute thread; state changes on the loop
            loop.call_soon_threadsafe(self._compute_failed, key, reason)

        stamp = self._disk.get(name, EMPTY_MODEL_DIR).versions.get(version, ())
        try:
            if await self._unchanged(key, stamp):
                return
            verified = await verify_within(name, version, path, self.settings, self.metrics, stamp)
        finally:
            del self._loading[key]
        serve = isinstance(verified, Verified) and not (self._closing or name in self._unloaded)
        if serve or isinstance(verified, Refusal):  # a verified version nobody wants anymore never starts
            self._record_outcome(key, self._start(verified, on_failure) if isinstance(verified, Verified) else verified)
        self._retire_displaced(name)
        self._publish()
        if serve:
            await asyncio.to_thread(freeze_survivors)

    async def _unchanged(self, key: Key, stamp: DirStamp) -> bool:
        """A serving version whose stamp moved but whose files hold what it loaded (`touch manifest.json`):
        keep the loaded copy under the new stamp instead of reloading it."""
        served = self._serving.get(key)
        if served is None or not served.content or served.stamp == stamp:
            return False
        if await asyncio.to_thread(content_of, served.path) != served.content:
            return False
        if self._serving.get(key) is served:
            self._serving[key] = replace(served, stamp=stamp)
            self._publish()
        log.info("model %s version %d: files touched, content unchanged; not reloaded", *key)
        return True

    def _record_outcome(self, key: Key, result: ServedModel | Refusal) -> None:
        if isinstance(result, ServedModel):
            self._refused.pop(key, None)
            self._reload_refused.pop(key, None)
            previous = self._serving.get(key)
            self._serving[key] = result
            if previous is not None:  # a reload: the old copy finishes its requests
                self._retired.append((key, previous))
        elif key in self._serving:
            self._reload_refused[key] = result
        else:
            self._refused[key] = result

    def _start(self, verified: Verified, on_failure: Callable[[str], None]) -> ServedModel:
        """The one place a batcher starts; `_drain_then_free`, `_compute_failed` and `close` stop them."""
        if self.executor_factory is not None:  # bench only: serve through another executor
            verified = replace(verified, executor=self.executor_factory(verified.executor))
        return start_serving(verified, self.settings, self.metrics, on_failure)

    def _compute_failed(self, key: Key, reason: str) -> None:
        """A version whose compute thread died stops serving (its requests already failed with 503); the
        reason shows in its metadata and the index. A fresh process is the dependable way back."""
        served = self._serving.get(key)
        if served is None or not served.batcher.failure:
            return  # replaced or unloaded meanwhile
        del self._serving[key]
        self._refused[key] = Refusal(reason, served.stamp)  # not reloaded by polls until files change
        served.batcher.stop()
        log.critical("model %s version %d FAILED: %s", *key, reason)
        self._publish()
        self.fatal = f"model {key[0]} version {key[1]}: {reason}"
        if self._on_fatal is not None:
            self._on_fatal(self.fatal)

    def _retire(self, key: Key) -> None:
        self._retired.append((key, self._serving.pop(key)))

    async def _drain_then_free(self, key: Key, served: ServedModel) -> None:
        # Requests that looked this version up before the swap are already in its queue (lookup and enqueue
        # happen with no await between them), so once the queue is empty nothing more arrives.
        stopped = await asyncio.to_thread(served.batcher.drain_and_stop, self.settings.request_timeout_s + 5)
        if not stopped:
            log.warning("model %s version %d: batcher still busy after draining", *key)
        del served
        left = self._draining.pop(key) - 1
        if left:
            self._draining[key] = left
        self.metrics.unloads.labels(key[0]).inc()
        log.info("model %s version %d unloaded", *key)
        await asyncio.to_thread(release_memory)
        self._publish()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return task

    # --- publishing ------------------------------------------------------------------------------------

    def _publish(self) -> list[asyncio.Task[None]]:
        """Replace the snapshot with the working state, then start draining the copies it no longer holds:
        only after the swap, so no request can look up a copy that already refuses new work."""
        retired, self._retired = self._retired, []
        for key, _ in retired:
            self._draining[key] = self._draining.get(key, 0) + 1
        serving: dict[str, dict[int, ServedModel]] = {}
        for (name, version), served in sorted(self._serving.items()):
            serving.setdefault(name, {})[version] = served
        unserved: dict[str, dict[int, NotServing]] = {}
        index: list[IndexEntry] = []
        known = {*self._serving, *self._loading, *self._draining}
        for name in sorted({*self._disk, *(model for model, _ in known)}):
            model_dir = self._disk.get(name, EMPTY_MODEL_DIR)
            wanted = set(self._wanted(name))
            for version in sorted({*model_dir.versions, *(v for model, v in known if model == name)}):
                state, reason = self._state_of((name, version), version in wanted)
                index.append(IndexEntry(name, str(version), state, reason))
                if state is not State.READY:
                    unserved.setdefault(name, {})[version] = NotServing(name, version, state, reason)
            index.extend(IndexEntry(name, entry.name, State.UNAVAILABLE, entry.reason) for entry in model_dir.ignored)
            if name in self.labels.problems:
                index.append(IndexEntry(name, LABELS_FILE, State.UNAVAILABLE, self.labels.problems[name]))
        defaults = self.labels.choose_defaults(serving)
        latest = {name: serving[name][version] for name, version in defaults.items()}
        labels = {name: dict(labels) for name, labels in self.labels.labels.items()}
        self._snapshot = Snapshot(serving, latest, unserved, tuple(index), labels)  # the one atomic step
        self._record_states(index)
        return [self._spawn(self._drain_then_free(key, served)) for key, served in retired]

    def _state_of(self, key: Key, wanted: bool) -> tuple[State, str]:
        served = self._serving.get(key)
        if served is not None:
            refusal = self._reload_refused.get(key)
            if refusal is not None:
                return State.READY, f"changed files refused, the loaded copy serves: {refusal.reason}"
            chosen, preferred = served.execution["chunk_rows"], served.execution.get("chunk_rows_preferred", 0)
            return State.READY, served.execution.get("chunk_rows_reason", "") if chosen != preferred else ""
        if key in self._loading:
            return State.LOADING, ""
        if key in self._draining:
            return State.UNLOADING, "finishing its queued requests before unloading"
        refusal = self._refused.get(key)
        if refusal is not None:
            return State.UNAVAILABLE, refusal.reason
        if key[0] in self._unloaded:
            return State.UNAVAILABLE, "unloaded through the repository API"
        if wanted and self.settings.model_control != "poll":
            return State.UNAVAILABLE, f"not loaded (model control {self.settings.model_control})"
        return State.UNAVAILABLE, f"not served under version policy {self.policy.text}"

    def _record_states(self, index: list[IndexEntry]) -> None:
        states = {(e.name, int(e.version)): e.state for e in index if parse_version(e.version) is not None}
        for key in self._metric_keys | set(states):
            current = states.get(key)
            labels = (key[0], str(key[1]))
            for state in State:
                self.metrics.model_state.labels(*labels, state.value).set(1 if state is current else 0)
            self.metrics.model_ready.labels(*labels).set(1 if current is State.READY else 0)
        self._metric_keys = set(states)


def _refused_as_is(refusals: Mapping[Key, Refusal], key: Key, stamp: DirStamp) -> bool:
    refusal = refusals.get(key)
    return refusal is not None and refusal.stamp == stamp
