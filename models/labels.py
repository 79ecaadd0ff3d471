"""Version labels: `<repository>/<name>/labels.json`, e.g. {"stable": 3, "canary": 4}.

Training publishes versions; which one unversioned traffic gets is a separate decision, recorded here:
the version labelled `stable` (when the file names one), else the highest version that serves. The file
is written atomically (temporary file, fsync, rename) under a lock, so a reader sees the old labels or the
new ones, and two writers never lose each other's label. It is read by the server's repository scan on
every poll, so it is untrusted input: bounded in size and count, and every name and number checked.

Torch-free: the server's scan and `python -m training.promote` import it without torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from models.files import open_regular
from models.versions import parse_version

LABELS_FILE = "labels.json"
STABLE = "stable"  # the label unversioned traffic follows
MAX_LABELS_BYTES = 4096  # a label file of 16 short labels is a few hundred bytes
MAX_LABELS = 16
LABEL_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
LABEL_FORM = "lowercase ASCII letters, digits, '_' or '-', starting with a letter, at most 32 characters"
_LOCK_FILE = ".labels.lock"


class LabelsError(ValueError):
    """A labels.json that cannot be used (or a label to write that is not valid), and why."""


def parse_label(text: str) -> str | None:
    """The label if it is spelled as labels are, else None."""
    return text if LABEL_PATTERN.fullmatch(text) else None


def read_labels(model_dir: Path) -> dict[str, int] | None:
    """The labels of the model in `model_dir`; None when there is no labels.json; LabelsError (naming the
    file, never the server's paths) when it is unreadable, too large or not {label: version, ...}."""
    path = model_dir / LABELS_FILE
    try:
        with open_regular(path) as handle:
            raw = handle.read(MAX_LABELS_BYTES + 1)  # never more than the bound, whatever the file's size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LabelsError(f"{LABELS_FILE} unreadable: {exc.strerror or exc}") from None
    if len(raw) > MAX_LABELS_BYTES:
        raise LabelsError(f"{LABELS_FILE} is larger than {MAX_LABELS_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LabelsError(f"{LABELS_FILE} is not valid JSON: {exc}") from None
    return validate_labels(data)


def validate_labels(data: object) -> dict[str, int]:
    if not isinstance(data, dict):
        raise LabelsError(f'{LABELS_FILE} must be a JSON object {{"label": version, ...}}')
    if len(data) > MAX_LABELS:
        raise LabelsError(f"{LABELS_FILE} has {len(data)} labels, more than {MAX_LABELS}")
    labels: dict[str, int] = {}
    for label, version in data.items():
        if parse_label(label) is None:
            raise LabelsError(f"{LABELS_FILE}: label {label[:40]!r} is not valid: use {LABEL_FORM}")
        # bool is an int in Python and JSON's true is not a version; 18 digits as parse_version allows.
        if type(version) is not int or parse_version(str(version)) is None:
            raise LabelsError(f"{LABELS_FILE}: label {label!r} must name a version (an integer >= 1)")
        labels[label] = version
    return labels


@contextlib.contextmanager
def labels_lock(model_dir: Path) -> Iterator[None]:
    """Serialises label writers of one model (read-modify-write); readers need no lock (rename is atomic)."""
    fd = os.open(model_dir / _LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_labels(model_dir: Path, labels: Mapping[str, int]) -> None:
    """Replace the model's labels.json atomically: a reader sees the old file or the new one, whole."""
    content = json.dumps(validate_labels(dict(labels)), indent=2, sort_keys=True) + "\n"
    fd, temporary = tempfile.mkstemp(prefix=".labels-", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # readable by a server running as another user, like the versions
        os.replace(temporary, model_dir / LABELS_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(model_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def set_label(model_dir: Path, label: str, version: int) -> int | None:
    """Point `label` at `version` (other labels kept); returns the version it named before, if any."""
    if parse_label(label) is None:
        raise LabelsError(f"label {label[:40]!r} is not valid: use {LABEL_FORM}")
    with labels_lock(model_dir):
        labels = read_labels(model_dir) or {}
        previous = labels.get(label)
        write_labels(model_dir, {**labels, label: version})
    return previous
