#!/usr/bin/env python3
"""Endpoint invariance check: a row's prediction must not depend on the batch it arrives in.

Runs the one probe (service/guarantee/probe.py) over HTTP against a running server (or a load balancer): the probe row
alone, then at EVERY position of batches of 1, 2, 3, C-1, C, C+1 and 2C+1 rows, where C is the `chunk_rows`
the server publishes in the model's V2 metadata, next to random, zero and huge co-rows, through the V1 API;
each answer's logits, probabilities and label must have exactly the bits of the lone answer. With --v2 it
also sends probe rows through V2 infer and compares their float32 outputs with V1's bit for bit.

Exit status: 0 all equal; 1 a mismatch; 2 a request or protocol failure.

    python deploy/invariance_check.py --url http://127.0.0.1:8000 --model digits [--version 2] [--v2]

Needs the project installed (`make venv`, then .venv/bin/python): it imports service.guarantee.probe_http.
"""

from __future__ import annotations

import argparse
import sys

from service.guarantee.probe_http import ProbeClient, ProbeError, bearer_headers, check_invariance, check_v2_matches_v1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", default=None, help="check this version (versioned paths); default: latest")
    parser.add_argument("--v2", action="store_true", help="also compare V2 infer's outputs with V1's bits")
    parser.add_argument("--seed", type=int, default=20251126, help="seed of the probe row and co-rows")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--key-file", default=None, help="file whose first key is sent (Authorization: Bearer)")
    args = parser.parse_args(argv)
    try:
        client = ProbeClient(args.url, args.timeout, bearer_headers(args.key_file))
        model = client.model(args.model, args.version)
        print(
            f"invariance check: {model.name} version {model.version}, C={model.chunk_rows}"
            + (f" and C_small={model.small_chunk_rows}" if model.small_chunk_rows else "")
            + f" (from the server's metadata), input shape {list(model.input_shape)}"
        )
        report = check_invariance(client, model, args.version, args.seed)
        if args.v2:
            compared = check_v2_matches_v1(client, model, args.version, args.seed)
            print(f"invariance check: V2 infer outputs {compared} have V1's bits")
    except ProbeError as err:
        print(f"invariance check: ERROR: {err}", file=sys.stderr)
        return 2
    print(f"invariance check: batch sizes {list(report.batch_sizes)}, {report.summary()} ({report.seconds:.1f} s)")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
