"""What a model file is, and the strict pre-check of a torch.export program (`.pt2`, torch 2.13).

`torch.export.load` is not safe for untrusted files (its docstring; design notes, section 8): it unpickles
weights flagged `use_pickle`, custom/opaque constants and sample inputs (falling back to
`weights_only=False`), parses shape strings with `sympy.sympify` and `.module()` executes `guards_code`; it
also falls back to a legacy format of pickled members, and loads AOTInductor shared libraries. So a .pt2 is
accepted only through `check_pt2`, which reads the zip with Python's zipfile (stored members only, bounded
sizes), parses only the JSON members (models/pt2_program.py, models/pt2_graph.py) and refuses, naming the
reason, before torch sees a byte: pickled weights or constants and any .pkl/pickle member, shape expressions
other than the exact integer/size-symbol forms torch writes, non-empty guards code, node targets outside an
ATen allowlist, train-mode ops (random ops, dropout, BatchNorm with batch statistics, attention dropout),
mutated buffers, AOTInductor/ExecuTorch members, legacy members, extra files, more than one model.

What torch then gets is a new in-memory archive built here from the validated parts only: the rewritten
model.json (node metadata dropped, guards empty, only the root call-graph entry), the rewritten configs, the
raw weight members (bytes copied, read by torch as flat storage, never parsed) and an EMPTY sample-inputs
member (torch reads an empty one as "no example inputs" and never calls torch.load on it). Nothing else.

Every other zip-based PyTorch format is refused: AOTInductor packages carry a shared library, TorchScript
archives carry Python-like code and pickles, `torch.save` files are pickles, `.mar` archives run a handler.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.files import open_regular
from models.onnx_check import ImportRefused
from models.pt2_graph import ELEMENT_BYTES
from models.pt2_program import Pt2Signature, check_payload_config, check_program

ONNX_INSTEAD = (
    "export to ONNX instead: torch.onnx.export(model.eval(), (example,), 'model.onnx', dynamo=True, "
    "external_data=False, dynamic_shapes=({0: torch.export.Dim('batch')},))"
)
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_SHARED_LIBRARY_SUFFIXES = (".so", ".dll", ".dylib", ".cubin", ".fatbin")
MAX_ARCHIVE_MEMBERS = 100_000
MAX_JSON_BYTES = 64 * 2**20
MAX_ARCHIVE_BYTES = 2**31
ROOT = "archive"  # the root folder of the rebuilt archive
_MEMBER = re.compile(r"[A-Za-z0-9_.\-]{1,100}/([A-Za-z0-9_.\-/]{1,200})")
_FIXED = {
    "archive_format": {b"pt2"},
    "archive_version": {b"0"},
    "byteorder": {b"little"},
    ".data/version": {b"6\n", b"6"},
}
MODEL_JSON = "models/model.json"
CONFIGS = {
    "weights": "data/weights/model_weights_config.json",
    "constants": "data/constants/model_constants_config.json",
}
_DROPPED = {".data/serialization_id", "data/sample_inputs/model.pt"}


@dataclass(frozen=True)
class CheckedPt2:
    """A .pt2 that passed: the rebuilt archive (what torch.export.load gets) and its signature."""

    archive_bytes: bytes
    signature: Pt2Signature


def model_format(path: Path) -> str:
    """ "pt2" for a torch.export archive, "onnx" for anything else that is no zip or pickle (the ONNX
    pre-check then parses it); raises ImportRefused naming every other PyTorch format."""
    try:
        with open_regular(path) as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ImportRefused(f"cannot read model file {path.name}: {exc.strerror}") from None
    if head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
        raise ImportRefused(f"{path.name} is a pickle (torch.save or pickle.dump): never unpickled; {ONNX_INSTEAD}")
    if head in {_ZIP_MAGIC, _EMPTY_ZIP_MAGIC}:
        kind = describe_archive(path)
        if kind != "pt2":
            raise ImportRefused(f"{path.name} is {kind}; {ONNX_INSTEAD}")
        return "pt2"
    return "onnx"


def describe_archive(path: Path) -> str:
    """ "pt2", or which other PyTorch archive a zip file is and why it is refused, from its member names."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()[: MAX_ARCHIVE_MEMBERS + 1]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return "a damaged zip archive"
    if len(names) > MAX_ARCHIVE_MEMBERS:
        return f"a zip archive of over {MAX_ARCHIVE_MEMBERS} members"
    if any(name.lower().endswith(_SHARED_LIBRARY_SUFFIXES) or "/aotinductor/" in name for name in names):
        return "an AOTInductor package (it carries a shared library that would run as native code)"
    if any(name == "MAR-INF/MANIFEST.json" or name.endswith("/MAR-INF/MANIFEST.json") for name in names):
        return "a TorchServe .mar archive (its handler is Python code run on load)"
    if any("/code/" in name or name.endswith("constants.pkl") for name in names):
        return "a TorchScript archive (code and pickles)"
    if any(name.endswith("archive_format") or ("/models/" in name and name.endswith(".json")) for name in names):
        return "pt2"
    if any(name.endswith("data.pkl") for name in names):
        return "a torch.save archive (a pickle)"
    return "a zip archive of no served format"


def check_pt2(path: Path) -> CheckedPt2:
    """The pre-check of a .pt2 (module docstring): the rebuilt archive and signature, or ImportRefused."""
    members = _read_members(path)
    try:
        program, signature = check_program(_json(members, MODEL_JSON))
        configs = {kind: _json(members, name) for kind, name in CONFIGS.items()}
        payloads = {kind: check_payload_config(config, kind) for kind, config in configs.items()}
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:  # a shape no check foresaw
        raise _refused(f"malformed program JSON ({type(exc).__name__})") from None
    out = io.BytesIO()
    used = {MODEL_JSON, *CONFIGS.values()}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, expected in _FIXED.items():
            data = members.get(name)
            if data is None or data not in expected:
                raise _refused(f"member {name} is missing or not one of {sorted(expected)}")
            archive.writestr(f"{ROOT}/{name}", data)
            used.add(name)
        archive.writestr(f"{ROOT}/{MODEL_JSON}", json.dumps(program))  # re-serialized: exactly what was checked
        for kind, files in payloads.items():
            archive.writestr(f"{ROOT}/{CONFIGS[kind]}", json.dumps(configs[kind]))
            used |= _copy_payloads(archive, members, kind, files)
        archive.writestr(f"{ROOT}/data/sample_inputs/model.pt", b"")  # empty: torch reads "no example inputs"
    unused = sorted(set(members) - used - _DROPPED)
    if unused:
        raise _refused(f"member {unused[0][:80]!r} is not part of a checked torch.export program")
    return CheckedPt2(out.getvalue(), signature)


def _copy_payloads(
    archive: zipfile.ZipFile, members: dict[str, bytes], kind: str, files: dict[str, tuple[str, int, int]]
) -> set[str]:
    """The raw tensor members a config names, copied after their sizes are checked; their names."""
    copied = set()
    for file_name, (fqn, dtype, need) in files.items():
        member = f"data/{kind}/{file_name}"
        data = members.get(member)
        if data is None or len(data) < need or len(data) % ELEMENT_BYTES[dtype]:
            raise _refused(f"{kind} {fqn}: member {file_name} is missing, short of its shape or not whole elements")
        archive.writestr(f"{ROOT}/{member}", data)
        copied.add(member)
    return copied


def _refused(reason: str) -> ImportRefused:
    return ImportRefused(f"torch.export archive refused: {reason}")


def _read_members(path: Path) -> dict[str, bytes]:
    """Every member by its name under the one root folder; stored (uncompressed) members only, bounded."""
    try:
        with open_regular(path) as handle:
            raw = handle.read(MAX_ARCHIVE_BYTES + 1)
        if len(raw) > MAX_ARCHIVE_BYTES:
            raise _refused("the archive is over 2 GiB")
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_ARCHIVE_MEMBERS:
                raise _refused(f"over {MAX_ARCHIVE_MEMBERS} members")
            roots, members = set(), {}
            for info in infos:
                match = _MEMBER.fullmatch(info.filename)
                if not match or ".." in info.filename or "//" in info.filename:
                    raise _refused(f"member name {info.filename[:80]!r} is not a plain archive path")
                name = match.group(1)
                _refuse_member_kind(name)
                if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_ARCHIVE_BYTES:
                    raise _refused(f"member {name} is compressed or oversized (torch writes stored members)")
                if name in members:
                    raise _refused(f"member {name} appears twice")
                roots.add(info.filename.split("/", 1)[0])
                members[name] = archive.read(info)
    except OSError as exc:
        raise ImportRefused(f"cannot read model file {path.name}: {exc.strerror}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise _refused(f"damaged zip archive ({str(exc)[:80]})") from None
    if len(roots) != 1:
        raise _refused("the members are not under one root folder")
    return members


def _refuse_member_kind(name: str) -> None:
    lowered = name.lower()
    if lowered.endswith((".pkl", ".pickle")) or "pickle" in lowered:
        raise _refused(f"member {name[:80]} is a pickle")
    if name.startswith(("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")):
        raise _refused(f"member {name[:80]} is a compiled (AOTInductor/ExecuTorch/MTIA) artifact")
    if name.startswith("models/") and name != "models/model.json":
        raise _refused(f"more than one model in the archive ({name[:80]})")
    if name.startswith("data/sample_inputs/") and name != "data/sample_inputs/model.pt":
        raise _refused(f"sample inputs of another model ({name[:80]})")
    if name in ("version", "data.pkl") or name.startswith(("data/weights/model.pt", "data/constants/model.pt")):
        raise _refused(f"legacy member {name} (pickled weights)")


def _json(members: dict[str, bytes], name: str) -> Any:
    data = members.get(name)
    if data is None:
        raise _refused(f"member {name} is missing")
    if len(data) > MAX_JSON_BYTES:
        raise _refused(f"member {name} is over {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _refused(f"member {name} is not JSON") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")
