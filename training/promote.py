"""`python -m training.promote REPO/NAME VERSION [--label stable]`: point a version label at a version.

Writes `REPO/NAME/labels.json` atomically (models/labels.py). A server polling the repository sends
unversioned requests to the version labelled `stable` once that version serves; until then the version it
served keeps them, so a promotion fails no request. Other labels (e.g. canary) are reached by
`/v1/models/NAME/labels/LABEL:predict` or the V2 request parameter `label`.
Exit codes: 0 written; 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from models.labels import STABLE, LabelsError, parse_label, set_label
from models.versions import parse_version

PROG = "python -m training.promote"
MANIFEST_FILE = "manifest.json"  # models.checkpoint.MANIFEST_FILE, without importing torch


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="REPO/NAME", help="the model's directory in the repository")
    parser.add_argument("version", metavar="VERSION", help="the version the label will name")
    parser.add_argument("--label", default=STABLE, help=f"the label to set (default: {STABLE})")
    arguments = parser.parse_args(argv)
    model_dir = Path(arguments.model)
    version = parse_version(arguments.version)
    if version is None:
        fail(f"VERSION must be a version number (1, 2, ...), got {arguments.version!r}")
    if parse_label(arguments.label) is None:
        fail(f"--label {arguments.label!r} is not a valid label: lowercase letters, digits, '_' or '-'")
    if not model_dir.is_dir():
        fail(f"{model_dir}: no such model directory")
    if not (model_dir / str(version) / MANIFEST_FILE).is_file():
        fail(f"{model_dir} has no version {version} (no {version}/{MANIFEST_FILE})")
    try:
        previous = set_label(model_dir, arguments.label, version)
    except (LabelsError, OSError) as exc:
        fail(f"{model_dir}: cannot update labels.json: {exc}")
    was = f" (was version {previous})" if previous is not None else ""
    print(f"{model_dir.name}: label {arguments.label!r} -> version {version}{was}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
