#!/usr/bin/env python3
"""Checks of a scaled deployment, through its load balancer (the deployment test's scale-out phase).

    replica_check.py spread --url URL --model M --replicas N
        Requests spread over all N replicas (X-Replica), every replica has the same numerics fingerprint
        (X-Numerics-Fingerprint) and gives bitwise identical answers to the same probe rows (C+1 rows).
    replica_check.py kill --url URL --model M --kill-command 'docker kill'
        Closed-loop load from several clients; after a while the replica that answered last is killed with
        KILL-COMMAND REPLICA (X-Replica is the container id). Failed requests: at most one per client, all
        sent before the balancer noticed (--settle-s); nothing sent after the kill is answered by the dead
        replica; everything sent later succeeds; every answer has the bits of the reference answer. The
        caller compares the failures with the sessions the balancer had open to the replica (its log).
    replica_check.py versions --url URL --model M --version V --replicas N [--since EPOCH]
        Waits until every replica answers unversioned requests with version V; prints when (epoch seconds)
        each replica first answered from V, relative to EPOCH when given. Every request must succeed.

Exit status: 0 passed; 1 a check failed; 2 a request or protocol failure. Needs the project installed.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass

from service.guarantee.probe import answers_digest, group_by_digest, probe_rows
from service.guarantee.probe_http import ProbeClient, ProbeError, bearer_headers, prediction_bits, replica_digest


class CheckFailed(Exception):
    pass


def spread(client: ProbeClient, model: str, replicas: int, requests: int) -> None:
    probe = client.model(model)
    digests: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    answered: Counter[str] = Counter()
    for _ in range(requests):
        digest, answer = replica_digest(client, probe, None)
        replica = answer.headers.get("x-replica", "?")
        answered[replica] += 1
        fingerprints.setdefault(replica, answer.headers.get("x-numerics-fingerprint", "?"))
        if digests.setdefault(replica, digest) != digest:
            raise CheckFailed(f"replica {replica} answered the same rows with different bits between requests")
    print(f"replicas: {requests} requests of C+1 = {probe.chunk_rows + 1} probe rows through the balancer")
    print(f"  {'replica':<16} {'answers':>7}  {'numerics fingerprint':<20}  answers digest")
    for replica in sorted(answered):
        print(f"  {replica:<16} {answered[replica]:>7}  {fingerprints[replica]:<20}  {digests[replica]}")
    if len(answered) != replicas:
        raise CheckFailed(f"{len(answered)} replicas answered ({sorted(answered)}), expected {replicas}")
    if len(set(fingerprints.values())) != 1:
        raise CheckFailed(f"replicas report different numerics fingerprints: {fingerprints}")
    groups = group_by_digest(digests)
    if len(groups) != 1:
        raise CheckFailed(f"replicas disagree on the probe rows' bits: {groups}")
    print(f"replicas: spread over all {replicas}, one fingerprint, bitwise identical answers")


@dataclass(frozen=True)
class Outcome:
    started: float
    ended: float
    replica: str  # "" when it failed
    error: str  # "" when it was answered with the reference bits


def kill(client: ProbeClient, model: str, args: argparse.Namespace) -> None:
    probe = client.model(model)
    rows = probe_rows(probe.input_shape, 4, seed=1)  # small: the balancer can replay it on another replica
    reference = answers_digest(client.answers(model, None, rows))
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    stop = threading.Event()

    def one_client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            replica, error = "", ""
            try:
                answer = client.predict(model, None, rows)
                replica = answer.headers.get("x-replica", "?")
                if answers_digest(prediction_bits(p) for p in answer.body["predictions"]) != reference:
                    error = f"different bits from replica {replica}"
            except ProbeError as exc:
                error = str(exc)
            with lock:
                outcomes.append(Outcome(started, time.monotonic(), replica, error))

    threads = [threading.Thread(target=one_client, daemon=True) for _ in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(args.kill_after)
    with lock:
        victim = outcomes[-1].replica
    subprocess.run([*shlex.split(args.kill_command), victim], check=True, capture_output=True, timeout=30)
    killed_at = time.monotonic()  # when the kill command returned: the replica is dead from here on
    time.sleep(args.seconds - args.kill_after)
    stop.set()
    for thread in threads:
        thread.join(timeout=args.timeout)
    report_kill(outcomes, victim, killed_at - started, started, args)


def report_kill(outcomes: list[Outcome], victim: str, kill_s: float, t0: float, args: argparse.Namespace) -> None:
    killed_at = t0 + kill_s
    failed = [o for o in outcomes if o.error]
    in_flight = [o for o in outcomes if o.started <= killed_at <= o.ended]
    from_victim_after = [o for o in outcomes if o.replica == victim and o.started > killed_at]
    last_victim = max((o.ended for o in outcomes if o.replica == victim), default=t0)
    answered_by = Counter(o.replica for o in outcomes if not o.error)
    settled = [o for o in outcomes if o.started > killed_at + args.settle_s]
    print(
        f"kill: {len(outcomes)} requests from {args.clients} clients over {args.seconds:.0f} s; replica {victim} "
        f"killed at {kill_s:.1f} s with {len(in_flight)} requests in flight (all replicas)"
    )
    print(f"  failed: {len(failed)}; answered by: {dict(sorted(answered_by.items()))}")
    print(f"  last answer from the killed replica {last_victim - killed_at:+.2f} s after the kill")
    print(
        f"  requests sent > {args.settle_s:.0f} s after the kill: {len(settled)}, "
        f"failed {sum(bool(o.error) for o in settled)}"
    )
    for outcome in failed[:5]:
        print(f"    failed ({outcome.started - t0:.2f}-{outcome.ended - t0:.2f} s): {outcome.error[:160]}")
    wrong_bits = [o for o in failed if o.error.startswith("different bits")]
    if wrong_bits:
        raise CheckFailed(f"{len(wrong_bits)} answers had other bits than the reference")
    late = [o for o in failed if o.started > killed_at + args.settle_s]
    if late:
        raise CheckFailed(f"{len(late)} failed requests were sent after the balancer should have noticed")
    # Per client at most two: the request its replica was answering when it died (a 502 if the answer had
    # begun), and one the balancer sent there before its health checks marked it down (cut then).
    if len(failed) > 2 * args.clients:
        raise CheckFailed(f"{len(failed)} failed requests, more than 2 per client ({args.clients} clients)")
    if from_victim_after:
        raise CheckFailed(f"{len(from_victim_after)} requests sent after the kill were answered by {victim}")
    if not settled or any(o.error for o in settled):
        raise CheckFailed("requests after the balancer noticed the kill did not all succeed")
    print(f"kill: passed: failed={len(failed)} (all in flight to the replica before the balancer took it out)")


def versions(client: ProbeClient, model: str, args: argparse.Namespace) -> None:
    probe = client.model(model)
    rows = probe_rows(probe.input_shape, 1, seed=2)
    first_seen: dict[str, float] = {}  # replica -> epoch seconds of its first answer from the version
    replicas: set[str] = set()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            answer = client.predict(model, None, rows)
        except ProbeError as exc:
            raise CheckFailed(f"a request failed while waiting for version {args.version}: {exc}") from exc
        replica = answer.headers.get("x-replica", "?")
        replicas.add(replica)
        if answer.headers.get("x-model-version") == args.version:
            first_seen.setdefault(replica, time.time())
        if len(first_seen) >= args.replicas:
            since = args.since or min(first_seen.values())
            print(f"versions: version {args.version} answered from every replica ({args.replicas}):")
            for name, at in sorted(first_seen.items(), key=lambda item: item[1]):
                print(f"  {name:<16} first answer from version {args.version} at {at:.3f} ({at - since:+.2f} s)")
            print(f"versions: first at {min(first_seen.values()):.3f}, all replicas at {max(first_seen.values()):.3f}")
            return
        time.sleep(0.05)
    raise CheckFailed(
        f"after {args.timeout:.0f} s only {sorted(first_seen)} of {sorted(replicas)} answer {args.version}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("check", choices=["spread", "kill", "versions"])
    parser.add_argument("--url", required=True, help="the load balancer's base URL")
    parser.add_argument("--model", required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--requests", type=int, default=12, help="spread: probe requests")
    parser.add_argument("--clients", type=int, default=6, help="kill: concurrent closed-loop clients")
    parser.add_argument("--seconds", type=float, default=8.0, help="kill: load duration")
    parser.add_argument("--kill-after", type=float, default=3.0, help="kill: seconds of load before the kill")
    parser.add_argument("--settle-s", type=float, default=3.0, help="kill: the balancer's detection allowance")
    parser.add_argument("--kill-command", default="docker kill")
    parser.add_argument("--version", default="2", help="versions: the version every replica must serve")
    parser.add_argument("--since", type=float, default=0.0, help="versions: reference time (epoch seconds)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--key-file", default=None, help="file whose first key is sent (Authorization: Bearer)")
    args = parser.parse_args(argv)
    try:
        client = ProbeClient(args.url, timeout=30.0, headers=bearer_headers(args.key_file))
        if args.check == "spread":
            spread(client, args.model, args.replicas, args.requests)
        elif args.check == "kill":
            kill(client, args.model, args)
        else:
            versions(client, args.model, args)
    except CheckFailed as exc:
        print(f"replica check {args.check}: FAILED: {exc}", file=sys.stderr)
        return 1
    except (ProbeError, subprocess.SubprocessError) as exc:
        print(f"replica check {args.check}: ERROR: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
