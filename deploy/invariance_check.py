#!/usr/bin/env python3
"""Endpoint invariance check: a row's prediction must not depend on the batch it arrives in. Stdlib only.

Sends one probe row alone, then at EVERY position of batches of several sizes (1, 2, 3, C-1, C, C+1, 2C+1,
where C is the model's `chunk_rows` from its V2 metadata, 16 if absent) filled with random co-rows, through
the V1 API (`POST /v1/models/{m}[/versions/{v}]:predict`), and compares the probe's returned values
(label, probabilities, logits) with the lone answer EXACTLY: the JSON floats must be equal, no tolerance.
With --v2 it also sends the probe through `POST /v2/models/{m}[/versions/{v}]/infer` and checks that it
answers, and that an output named like a V1 field holds the same values.

Exit status: 0 all equal; 1 a mismatch (the first ones are printed); 2 a request or protocol failure.

    python3 deploy/invariance_check.py --url http://127.0.0.1:8000 --model digits [--version 2] [--v2]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import urllib.error
import urllib.request
from typing import Any

DEFAULT_CHUNK_ROWS = 16
DEFAULT_FEATURES = 64
COMPARED_FIELDS = ("label", "probabilities", "logits")


class CheckError(Exception):
    """A request failed or an answer was not what the protocol says."""


def request(url: str, body: Any = None, timeout: float = 30.0) -> tuple[Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            headers = {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as err:
        detail = err.read()[:500].decode(errors="replace")
        raise CheckError(f"{req.get_method()} {url} -> HTTP {err.code}: {detail}") from err
    except (urllib.error.URLError, OSError) as err:
        raise CheckError(f"{req.get_method()} {url} failed: {err}") from err
    try:
        return json.loads(payload), headers
    except ValueError as err:
        raise CheckError(f"{url}: answer is not JSON: {payload[:200]!r}") from err


def batch_sizes(chunk_rows: int) -> list[int]:
    c = chunk_rows
    return sorted({n for n in (1, 2, 3, c - 1, c, c + 1, 2 * c + 1) if n >= 1})


def feature_count(metadata: dict[str, Any], override: int | None) -> int:
    if override:
        return override
    try:
        # [-1, 64] for an MLP, [-1, 1, 8, 8] for a CNN: a V1 row is the flattened sample.
        dims = [int(d) for d in metadata["inputs"][0]["shape"][1:]]
    except (KeyError, IndexError, TypeError, ValueError):
        return DEFAULT_FEATURES
    n = 1
    for d in dims:
        n *= d
    return n if dims and n > 0 else DEFAULT_FEATURES


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    ap.add_argument("--model", required=True)
    ap.add_argument("--version", default=None, help="check this version (versioned paths); default: latest")
    ap.add_argument("--sizes", default=None, help="comma-separated batch sizes (default from chunk_rows)")
    ap.add_argument("--features", type=int, default=None, help="values per row (default: from V2 metadata, else 64)")
    ap.add_argument("--seed", type=int, default=20251126)
    ap.add_argument("--scale", type=float, default=16.0, help="probe and co-row values lie in [0, scale)")
    ap.add_argument("--v2", action="store_true", help="also send the probe through the V2 infer endpoint")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args(argv)

    base = args.url.rstrip("/")
    vpath = f"/versions/{args.version}" if args.version else ""
    v1_url = f"{base}/v1/models/{args.model}{vpath}:predict"
    try:
        return run(args, base, vpath, v1_url)
    except CheckError as err:
        print(f"invariance check: ERROR: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, base: str, vpath: str, v1_url: str) -> int:
    started = time.monotonic()
    metadata, _ = request(f"{base}/v2/models/{args.model}{vpath}", timeout=args.timeout)
    params = metadata.get("parameters") or {}
    chunk_rows = int(params.get("chunk_rows", DEFAULT_CHUNK_ROWS))
    features = feature_count(metadata, args.features)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else batch_sizes(chunk_rows)
    rng = random.Random(args.seed)

    def row(scale: float = args.scale) -> list[float]:
        return [rng.random() * scale for _ in range(features)]

    def predict(rows: list[list[float]]) -> tuple[list[dict[str, Any]], str | None]:
        answer, headers = request(v1_url, {"instances": rows}, timeout=args.timeout)
        preds = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(preds, list) or len(preds) != len(rows):
            raise CheckError(f"{v1_url}: expected {len(rows)} predictions, got {str(answer)[:200]}")
        version = answer.get("model_version") or headers.get("x-model-version")
        if args.version and version is not None and str(version) != str(args.version):
            raise CheckError(f"{v1_url}: asked for version {args.version}, answered by version {version}")
        return preds, None if version is None else str(version)

    probe = row()
    (alone,), version = predict([probe])
    missing = [f for f in COMPARED_FIELDS if f not in alone]
    if len(missing) == len(COMPARED_FIELDS):
        raise CheckError(f"prediction has none of the fields {COMPARED_FIELDS}: {str(alone)[:200]}")
    reference = {f: alone[f] for f in COMPARED_FIELDS if f in alone}
    print(
        f"invariance check: {args.model} version {version or '?'}, chunk_rows={chunk_rows}, "
        f"features={features}, batch sizes {sizes}, fields {sorted(reference)}"
    )

    mismatches: list[str] = []
    cases = 0

    def compare(got: dict[str, Any], where: str) -> None:
        nonlocal cases
        cases += 1
        for field, want in reference.items():
            have = got.get(field)
            if have != want:  # exact: JSON floats parsed to doubles, compared with ==
                mismatches.append(f"{where}: field {field!r} differs: {describe(want, have)}")
                return

    # The same input twice, alone: catches dropout or batch statistics left on in eval mode.
    (again,), _ = predict([probe])
    compare(again, "alone, second request")

    for size in sizes:
        for position in range(size):
            # Every third batch has co-rows with large values, to shake any cross-row dependence.
            scale = args.scale * (1000.0 if (size + position) % 3 == 0 else 1.0)
            rows = [row(scale) for _ in range(size)]
            rows[position] = probe
            preds, _ = predict(rows)
            compare(preds[position], f"batch of {size}, position {position}")

    if args.v2:
        v2_check(args, base, vpath, metadata, probe, reference)

    elapsed = time.monotonic() - started
    if mismatches:
        print(f"invariance check: FAILED: {len(mismatches)} of {cases} cases differ from the row alone:")
        for line in mismatches[:20]:
            print(f"  {line}")
        return 1
    print(f"invariance check: OK: {cases} cases checked, all bitwise equal to the row alone ({elapsed:.1f} s)")
    return 0


def v2_check(
    args: argparse.Namespace,
    base: str,
    vpath: str,
    metadata: dict[str, Any],
    probe: list[float],
    reference: dict[str, Any],
) -> None:
    inputs = metadata.get("inputs") or [{}]
    name = inputs[0].get("name", "input")
    datatype = inputs[0].get("datatype", "FP32")
    dims = inputs[0].get("shape", [-1, len(probe)])[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        dims = [len(probe)]
    body = {
        "id": "invariance-check",
        "inputs": [{"name": name, "shape": [1, *dims], "datatype": datatype, "data": probe}],
    }
    url = f"{base}/v2/models/{args.model}{vpath}/infer"
    answer, _ = request(url, body, timeout=args.timeout)
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if not outputs:
        raise CheckError(f"{url}: no outputs in {str(answer)[:200]}")
    compared = []
    for out in outputs:
        field = out.get("name")
        if field in reference:
            want = reference[field]
            want_flat = want if isinstance(want, list) else [want]
            if out.get("data") != want_flat:
                raise CheckError(f"{url}: output {field!r} differs from V1: {describe(want_flat, out.get('data'))}")
            compared.append(field)
    names = [o.get("name") for o in outputs]
    print(f"invariance check: V2 infer answered outputs {names}; equal to V1 for {compared or 'none compared'}")


def describe(want: Any, have: Any) -> str:
    if isinstance(want, list) and isinstance(have, list) and len(want) == len(have):
        for i, (a, b) in enumerate(zip(want, have, strict=True)):
            if a != b:
                return f"index {i}: alone {a!r} vs in batch {b!r}"
    return f"alone {str(want)[:120]} vs in batch {str(have)[:120]}"


if __name__ == "__main__":
    sys.exit(main())
