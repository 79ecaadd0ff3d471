"""Prometheus series. One `Metrics` per app; with several worker processes, prometheus-client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the CLI) aggregates them across processes.

The standard process_* series (CPU seconds, resident memory, open fds, ...) describe one process: with one
worker they are unlabelled; with several, every worker's appear, labelled `pid` (whichever worker answers
/metrics reads its siblings' /proc entries)."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

MODEL = ("model", "version")
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FRACTION_BUCKETS = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.97, 1.0)


class Metrics:
    def __init__(self, chunk_rows: int | None = None) -> None:
        self._multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = CollectorRegistry()
        # In multiprocess mode the values live in files; registering them here would double count.
        own = None if self._multiprocess else self.registry
        if not self._multiprocess:
            ProcessCollector(registry=self.registry)
        # Set at once, so every worker has a metric file from its start (WorkerProcesses finds it by that).
        self.worker_processes = Gauge(
            "invariant_worker_processes", "Live server worker processes", multiprocess_mode="livesum", registry=own
        )
        self.worker_processes.set(1)
        # Powers of two cover every C (fixed, per-device default, or calibrated per model); a fixed C too.
        row_buckets = tuple(sorted({2**power for power in range(13)} | ({chunk_rows} if chunk_rows else set())))
        self._counters: dict[tuple[str, str, str, str], Any] = {}
        self._histograms: dict[tuple[str, str, str], Callable[[float], None]] = {}
        self.requests = Counter(
            "invariant_requests", "Inference requests", (*MODEL, "protocol", "status"), registry=own
        )
        self.request_seconds = Histogram(
            "invariant_request_seconds", "Total request latency", (*MODEL, "protocol"),
            buckets=LATENCY_BUCKETS, registry=own,
        )  # fmt: skip
        per_model = functools.partial(Histogram, labelnames=MODEL, registry=own)  # the chunk-level series
        self.queue_seconds = per_model(
            "invariant_queue_seconds", "Time rows wait before their chunk runs", buckets=LATENCY_BUCKETS
        )
        self.compute_seconds = per_model(
            "invariant_compute_seconds", "Time of one C-row forward pass", buckets=LATENCY_BUCKETS
        )
        self.chunk_rows = per_model(
            "invariant_chunk_rows", "Real (non-padding) rows per executed chunk", buckets=row_buckets
        )
        self.padding_fraction = per_model(
            "invariant_chunk_padding_fraction", "Fraction of each chunk that is zero padding", buckets=FRACTION_BUCKETS
        )
        self.queue_rows = Gauge(
            "invariant_queue_rows",
            "Rows waiting to be computed",
            MODEL,
            multiprocess_mode="livesum",
            registry=own,
        )
        self.model_ready = Gauge(
            "invariant_model_ready",
            "1 when the model serves",
            MODEL,
            multiprocess_mode="livemin",
            registry=own,
        )
        self.self_test_passed = Gauge(
            "invariant_self_test_passed", "1 when the start-up self-test passed", MODEL,
            multiprocess_mode="livemin", registry=own,
        )  # fmt: skip
        self.self_test_cases = Gauge(
            "invariant_self_test_cases", "Cases the start-up self-test compared", MODEL,
            multiprocess_mode="livemax", registry=own,
        )  # fmt: skip
        self.model_state = Gauge(
            "invariant_model_state",
            "1 for the state each model version is in (READY, LOADING, UNAVAILABLE, UNLOADING), else 0",
            (*MODEL, "state"),
            multiprocess_mode="livesum",
            registry=own,
        )
        self.loads = Counter(
            "invariant_model_loads", "Version loads by result (ready, refused)", ("model", "result"), registry=own
        )
        self.load_seconds = Histogram(
            "invariant_model_load_seconds", "Time to load, verify and self-test one version", ("model",),
            buckets=LOAD_BUCKETS, registry=own,
        )  # fmt: skip
        self.unloads = Counter("invariant_model_unloads", "Versions drained and unloaded", ("model",), registry=own)
        self.audit_checks = Counter(
            "invariant_audit_checks", "Served rows re-run alone and compared bitwise", MODEL, registry=own
        )
        self.compute_failures = Counter(
            "invariant_compute_thread_failures", "Times a model's compute thread died (the model then stops serving)",
            MODEL, registry=own,
        )  # fmt: skip
        self.client_disconnects = Counter(
            "invariant_client_disconnects", "Clients that hung up before sending their whole request body",
            registry=own,
        )  # fmt: skip
        self.body_timeouts = Counter(
            "invariant_body_timeouts", "Request bodies not received within read_timeout_s (answered 408)",
            registry=own,
        )  # fmt: skip
        self.audit_mismatches = Counter(
            "invariant_audit_mismatches",
            "Audited rows whose bits differed (should stay 0)",
            MODEL,
            registry=own,
        )
        # Receipts (service/receipts/): rows answered with a receipt, and what the receipts log took or lost.
        self.receipts_issued = Counter(
            "invariant_receipts_issued", "Answered rows whose signed receipt went back to the client", registry=own
        )
        self.receipts_logged = Counter(
            "invariant_receipts_logged", "Receipts written (and fsync'd) to the receipts log", registry=own
        )
        self.receipts_unlogged = Counter(
            "invariant_receipts_unlogged",
            "Answered rows whose receipt the log lost (disk: full disk or file size limit, key: unreadable key "
            "file, backlog: the writer fell behind); the answers were still sent",
            ("reason",), registry=own,
        )  # fmt: skip

    def record_request(self, name: str, version: str, protocol: str, status: int, started: float) -> None:
        """One inference call, counted with the status its client was sent. Every label is a value the server
        defines (a known model name or "<unknown>", a served version or "unknown", a protocol, a status)."""
        key = (name, version, protocol)
        observe = self._histograms.get(key)
        if observe is None:  # labels() costs a lock and a dict lookup: once per label set, not per request
            observe = self._histograms[key] = observer(self.request_seconds.labels(*key))
        observe(time.perf_counter() - started)
        counter_key = (*key, str(status))
        counter = self._counters.get(counter_key)
        if counter is None:
            counter = self._counters[counter_key] = self.requests.labels(*counter_key)
        counter.inc()

    def render(self) -> bytes:
        if self._multiprocess:
            forget_dead_processes()
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            registry.register(WorkerProcesses(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
            return generate_latest(registry)
        return generate_latest(self.registry)


def observer(child: Histogram) -> Callable[[float], None]:
    """`child.observe` for one labelled histogram child, as the hot path calls it: the bucket found by bisection
    instead of prometheus-client's walk over every bound, and no per-call checks (the child is a labelled one,
    never an exemplar). The same values change (the sum, then the one bucket prometheus-client counts the
    amount in: the first bound >= amount), in memory or in the multiprocess files alike;
    tests/test_metrics_observer.py compares the two exposition texts. The amounts are durations and row
    counts, never NaN (which prometheus-client counts in no bucket, and this in the first)."""
    bounds: list[float] = child._upper_bounds  # ascending, the last +Inf
    buckets = child._buckets
    total = child._sum
    if len(bounds) != len(buckets) or bounds[-1] != float("inf"):
        raise RuntimeError("prometheus-client's Histogram is not laid out as observer() expects")

    def observe(amount: float) -> None:
        total.inc(amount)
        buckets[bisect_left(bounds, amount)].inc(1)

    return observe


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def forget_dead_processes() -> None:
    """Remove the live-gauge files of worker processes that no longer exist (e.g. after `kill -9`).

    A worker that exits cleanly is forgotten by its parent; one that is killed is not, and its last queue
    length and readiness would be summed forever. Counters and histograms stay: their counts happened.
    """
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    pids = {int(m.group(1)) for m in map(_LIVE_GAUGE_FILE.fullmatch, os.listdir(folder)) if m}
    for pid in pids:
        if not _alive(pid):
            with contextlib.suppress(FileNotFoundError):  # another worker forgot it at the same moment
                mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


_METRIC_FILE = re.compile(r"_(\d+)\.db$")


class WorkerProcesses(Collector):
    """process_* series of every live worker, each sample labelled with its worker's pid.

    Workers are the pids in the metric files' names (`<kind>_<pid>.db`) whose process is alive and shares
    this worker's parent (the uvicorn supervisor), so an exited worker or a reused pid is not reported.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def worker_pids(self) -> list[int]:
        named = {int(m.group(1)) for f in self.folder.iterdir() if (m := _METRIC_FILE.search(f.name))}
        return sorted(pid for pid in named | {os.getpid()} if parent_of(pid) == os.getppid())

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in self.worker_pids():
            for family in ProcessCollector(pid=functools.partial(int, pid), registry=None).collect():
                target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    target.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(merged.values())


def parent_of(pid: int) -> int | None:
    """The parent pid of a live process, from /proc/<pid>/stat; None once it has exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:  # exited
        return None
    return int(stat.rsplit(b")", 1)[1].split()[1])  # the fields after the command name: state, ppid, ...


def workers_of(supervisor: int) -> set[int]:
    """The live worker processes of a `--workers N` supervisor: its children, less multiprocessing's resource
    tracker (which every spawning parent starts). For the fault tests and benches, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:  # exited meanwhile
                continue
            if parent_of(int(entry.name)) == supervisor and b"resource_tracker" not in command:
                found.add(int(entry.name))
    return found
