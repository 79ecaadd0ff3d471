"""`python -m service.replay --repository R --receipts LOG --inputs ROWS.jsonl --receipts-key-file KEYS`:
re-derive every logged decision on this machine and say whether each is the one its receipt records.

Each receipt is checked as POST /v2/receipts/verify does (service/receipts/verdict.py): signature, model
version and checkpoint, numerics fingerprint, input, then its row recomputed alone through the same executor
at the same execution shape C (and thread count, dtype) the receipt names, the model loaded and self-tested
exactly as the server loads it (service/lifecycle/loader.verify_version). Rows are found by their digest in
ROWS.jsonl (one V1 row per line: a list of numbers, nested lists or an object of features), so the inputs may
come in any order. Prints a table per model version; exit status 0 only when every receipt matches, 1 when
one does not (or the log holds damaged lines, or no receipt), 2 for bad arguments or files. A torn last
line (a write cut short by a crash or a full disk) is skipped and counted, not a failure.

With --portable-numerics the CPU kernels are pinned as the server's flag pins them (needed on both sides).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from service.receipts import LogReading, Receipt, SigningKeys, Verdict, read_log
from service.receipts.receipt import ModelIdentity, input_digest, output_digest
from service.receipts.verdict import (
    REASONS,
    bits_verdict,
    checkpoint_verdict,
    fingerprint_verdict,
    not_served,
    signature_verdict,
)

if TYPE_CHECKING:
    from service.engine.types import Executor, Float32Array

PROG = "python -m service.replay"
MAX_INPUT_LINE = 64 * 1024 * 1024  # one row as JSON: a 3x224x224 image is about 2 MB
SHOWN_MISMATCHES = 10


def usage_error(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class Loaded:
    identity: ModelIdentity
    executor: Executor
    spec_key: tuple[tuple[int, ...], tuple[str, ...]]


class Replayer:
    """Loads each model version a receipt names once, at the receipt's execution shape."""

    def __init__(self, repository: Path, inputs: Path, keys: SigningKeys) -> None:
        self.repository = repository
        self.inputs = inputs
        self.keys = keys
        self._models: dict[tuple[Any, ...], Loaded | str] = {}
        self._rows: dict[tuple[tuple[int, ...], tuple[str, ...]], dict[str, Float32Array]] = {}
        self._threads = 0

    def check(self, receipt: Receipt) -> Verdict:
        verdict = signature_verdict(receipt, self.keys)
        if verdict is not None:
            return verdict
        loaded = self._model(receipt)
        if not isinstance(loaded, Loaded):
            return not_served(receipt, f" ({loaded})")
        verdict = checkpoint_verdict(receipt, loaded.identity) or fingerprint_verdict(receipt, loaded.identity)
        if verdict is not None:
            return verdict
        row = self._index(loaded).get(receipt.input_sha256)
        if row is None:
            return Verdict("mismatch", "other_input", f"no row of {self.inputs.name} hashes to {receipt.input_sha256}")
        self._pin(int(receipt.numerics.get("threads", 1)))
        outputs = loaded.executor.run(row[None])  # the row alone: one C-row forward
        logits, probabilities = outputs.logits[0], outputs.probabilities[0]
        return bits_verdict(receipt, output_digest(logits, probabilities, int(outputs.class_index[0])))

    def _pin(self, threads: int) -> None:
        if threads != self._threads:
            from service.engine.numerics import pin_numerics

            pin_numerics(threads)
            self._threads = threads

    def _model(self, receipt: Receipt) -> Loaded | str:
        numerics = receipt.numerics
        shape = (numerics.get("chunk_rows"), numerics.get("threads"), numerics.get("dtype"), numerics.get("device"))
        key = (receipt.model, receipt.version, *shape)
        if key not in self._models:
            self._models[key] = self._load(receipt.model, receipt.version, numerics)
        return self._models[key]

    def _load(self, name: str, version: str, numerics: dict[str, Any]) -> Loaded | str:
        from service.lifecycle.loader import Refusal, verify_version
        from service.observability.metrics import Metrics
        from service.settings import Settings

        path = self.repository / name / version
        if not version.isdigit() or not path.is_dir():
            return f"no directory {name}/{version} in the repository"
        try:
            settings = Settings(
                repository=self.repository, chunk_rows=numerics.get("chunk_rows"), threads=numerics.get("threads", 1),
                dtype=numerics.get("dtype", "float32"), device="cpu" if numerics.get("device") == "cpu" else "cuda",
                audit_fraction=0.0,
            )  # fmt: skip
        except ValueError as exc:
            return f"the receipt's execution shape cannot be set up here: {str(exc).splitlines()[0]}"
        self._pin(settings.threads)
        verified = verify_version(name, int(version), path, settings, Metrics())
        if isinstance(verified, Refusal):
            return f"refused here: {verified.reason}"
        shape = f"C = {verified.executor.chunk_rows}, fingerprint {verified.numerics.fingerprint}"
        print(f"loaded {name} version {version} ({shape}, self-test {verified.self_test.summary()})", file=sys.stderr)
        spec = verified.manifest.input
        identity = ModelIdentity(
            name, version, verified.manifest.weights_sha256, verified.numerics.fingerprint, verified.numerics.parts
        )
        return Loaded(identity, verified.executor, (spec.shape, spec.feature_names))

    def _index(self, loaded: Loaded) -> dict[str, Float32Array]:
        """input digest -> row, for every row of the inputs file that fits this model's input."""
        if loaded.spec_key not in self._rows:
            from service.dataplane.rows import rows_from_instances
            from service.errors import ServiceError

            shape, names = loaded.spec_key
            index: dict[str, Float32Array] = {}
            for row in _input_rows(self.inputs):
                try:
                    decoded = rows_from_instances([row], shape, names)[0]
                except ServiceError:
                    continue  # a row of another model's input
                index[input_digest(decoded)] = decoded
            self._rows[loaded.spec_key] = index
        return self._rows[loaded.spec_key]


def _input_rows(path: Path) -> Iterator[Any]:
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(iter(lambda: lines.readline(MAX_INPUT_LINE + 1), b""), start=1):
                if len(line) > MAX_INPUT_LINE:
                    usage_error(f"{path} line {number}: longer than {MAX_INPUT_LINE} bytes")
                if not line.strip():
                    continue
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    usage_error(f"{path} line {number}: not JSON ({exc})")
    except OSError as exc:
        usage_error(f"--inputs {path}: {exc.strerror}")


def replay(repository: Path, log_path: Path, inputs: Path, keys: SigningKeys) -> int:
    replayer = Replayer(repository, inputs, keys)
    reading = LogReading()
    tally: dict[tuple[str, str], Counter[str]] = {}
    mismatches: list[str] = []
    for receipt in read_log(log_path, reading):
        verdict = replayer.check(receipt)
        counts = tally.setdefault((receipt.model, receipt.version), Counter())
        counts["receipts"] += 1
        counts[verdict.reason or "match"] += 1
        if verdict.reason and len(mismatches) < SHOWN_MISMATCHES:
            mismatches.append(f"  {receipt.request_id} row {receipt.row}: {verdict.reason}: {verdict.detail}")
    print(summary_table(tally))
    print(f"log: {reading.files} files, {reading.receipts} receipts, {reading.torn} torn last lines skipped, "
          f"{len(reading.corrupt)} damaged lines")  # fmt: skip
    for line in [*mismatches, *(f"  damaged: {where}" for where in reading.corrupt[:SHOWN_MISMATCHES])]:
        print(line)
    matched = sum(counts["match"] for counts in tally.values())
    every = reading.receipts > 0 and matched == reading.receipts and not reading.corrupt
    print(f"{matched}/{reading.receipts} receipts match" + ("" if every else ": FAILED"))
    return 0 if every else 1


def summary_table(tally: dict[tuple[str, str], Counter[str]]) -> str:
    columns = ["model", "version", "receipts", "match", *REASONS]
    rows = [
        [name, version, *(str(counts[c]) for c in columns[2:])] for (name, version), counts in sorted(tally.items())
    ]
    widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [columns, *rows])
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repository", type=Path, required=True, help="The model repository the server served")
    parser.add_argument("--receipts", type=Path, required=True, help="A receipts log directory, or one log file")
    parser.add_argument("--inputs", type=Path, required=True, help="JSON lines, one input row per line")
    parser.add_argument("--receipts-key-file", type=Path, required=True, help="The server's receipts key file")
    parser.add_argument("--portable-numerics", action="store_true", help="As the server's --portable-numerics")
    args = parser.parse_args(argv)
    for flag, path in (("--repository", args.repository), ("--receipts", args.receipts), ("--inputs", args.inputs)):
        if not path.exists():
            usage_error(f"{flag} {path}: no such file or directory")
    keys = SigningKeys(args.receipts_key_file)
    if not keys.file.digests():
        usage_error(f"--receipts-key-file {args.receipts_key_file}: cannot be read or holds no key")
    if args.portable_numerics:
        from service.engine.numerics_env import apply_portable_numerics

        apply_portable_numerics(os.environ)  # before torch is imported, as the server's CLI does
    raise SystemExit(replay(args.repository, args.receipts, args.inputs, keys))


if __name__ == "__main__":
    main()
