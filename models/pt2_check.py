"""What a model file is, told from its first bytes and (for zip archives) the names in the zip's central
directory: nothing inside the file is decompressed, unpickled, parsed as a program or executed.

Only ONNX is served. Every zip-based PyTorch format is refused with the reason:
- torch.export programs (`.pt2`): `torch.export.load` deserializes with pickle (weights flagged `use_pickle`,
  pickled constants, sample inputs that fall back to `weights_only=False`), parses symbolic shape strings with
  `sympy.sympify` and executes `guards_code` in `.module()` (design notes, section 8: each ran attacker code
  here). A pre-check sound against all of those would have to re-implement the archive's schema; until then
  such archives are refused as a whole, before any member is read.
- AOTInductor packages carry a shared library, TorchScript archives carry Python-like code and pickles,
  `torch.save` files and plain pickles are pickles, TorchServe `.mar` archives run their handler's code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from models.files import open_regular
from models.onnx_check import ImportRefused

ONNX_INSTEAD = (
    "export to ONNX instead: torch.onnx.export(model.eval(), (example,), 'model.onnx', dynamo=True, "
    "external_data=False, dynamic_shapes=({0: torch.export.Dim('batch')},))"
)
_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_SHARED_LIBRARY_SUFFIXES = (".so", ".dll", ".dylib", ".cubin", ".fatbin")
MAX_ARCHIVE_MEMBERS = 100_000


def refuse_non_onnx(path: Path) -> None:
    """Raise ImportRefused when the file's first bytes say it is a pickle or a zip archive (every PyTorch
    archive format), naming which; return for anything else, which the ONNX pre-check then parses."""
    try:
        with open_regular(path) as handle:
            head = handle.read(4)
    except OSError as exc:
        raise ImportRefused(f"cannot read model file {path.name}: {exc.strerror}") from None
    if head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
        raise ImportRefused(f"{path.name} is a pickle (torch.save or pickle.dump): never unpickled; {ONNX_INSTEAD}")
    if head in {_ZIP_MAGIC, _EMPTY_ZIP_MAGIC}:
        raise ImportRefused(f"{path.name} is {describe_archive(path)}; {ONNX_INSTEAD}")


def describe_archive(path: Path) -> str:
    """Which PyTorch archive a zip file is and why it is refused, from its member names only."""
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
        return (
            "a torch.export program (.pt2): torch.export.load unpickles weights, constants and sample inputs, "
            "parses shape strings with sympy and runs guard code, so .pt2 files are not served"
        )
    if any(name.endswith("data.pkl") for name in names):
        return "a torch.save archive (a pickle)"
    return "a zip archive of no served format"
