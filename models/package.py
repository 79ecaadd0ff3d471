"""`python -m models.package --model FILE --name NAME --repository REPO [--labels a,b,c] [--feature-names f1,f2]`

Bring your own model: the file is checked (format, inference mode, signature read from the graph; see
models/onnx_check.py and models/pt2_check.py) and published as the next version directory of NAME, atomically,
with a manifest naming its format, sha256, input name and shape, output and labels. The server loads it like
any version, and checks it again at load exactly as it checks a file dropped into a version directory by hand.

Exit codes: 0 published (the version directory's path on stdout); 2 refused or bad input (one line on stderr,
nothing written); 1 the version could not be written (one line on stderr).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import NoReturn

from models.checkpoint import CheckpointError, Manifest, save_imported, sha256_of
from models.config import InputSpec
from models.imported import ImportedConfig
from models.onnx_check import CheckedOnnx, ImportRefused, OnnxSignature, check_onnx
from models.pt2_check import check_pt2, model_format
from models.pt2_program import Pt2Signature
from models.versions import is_model_name

PROG = "python -m models.package"
GRAPH_FILE = "model.onnx"
PROGRAM_FILE = "model.pt2"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ImportRefused(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[1], add_help=True)
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="the model file: ONNX, or a torch.export program (.pt2) that passes the pre-check; pickles refused",
    )
    parser.add_argument("--name", required=True, help="model name in the repository")
    parser.add_argument("--repository", required=True, type=Path, help="the model repository directory")
    parser.add_argument("--labels", default="", help="comma-separated class labels, one per output (default 0..K-1)")
    parser.add_argument("--feature-names", default="", help="comma-separated names of the input row's elements")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        manifest, sources = _checked(args)
    except ImportRefused as exc:
        print(f"{PROG}: refused: {exc}", file=sys.stderr)
        return 2
    try:
        version_dir = save_imported(args.repository, manifest, sources)
    except (CheckpointError, OSError) as exc:
        print(f"{PROG}: could not write the version: {exc}", file=sys.stderr)
        return 1
    print(version_dir)
    return 0


def _checked(args: argparse.Namespace) -> tuple[Manifest, dict[str, Path]]:
    """The manifest and the files to publish (version-directory name -> source), or ImportRefused."""
    if not is_model_name(args.name):
        raise ImportRefused(f"invalid model name {args.name!r}: use letters, digits, '_', '.', '-'")
    model_path: Path = args.model
    kind = model_format(model_path)
    sha_before = sha256_of(model_path)
    checked = check_onnx(model_path) if kind == "onnx" else check_pt2(model_path)
    if sha256_of(model_path) != sha_before:
        raise ImportRefused(f"{model_path.name} changed while it was checked")
    signature = checked.signature
    labels = _names(args.labels) or tuple(str(index) for index in range(signature.num_classes))
    if len(labels) != signature.num_classes or len(set(labels)) != len(labels):
        raise ImportRefused(
            f"--labels gives {len(labels)} distinct labels; the model has {signature.num_classes} outputs"
        )
    features = _names(args.feature_names)
    if features and len(features) != math.prod(signature.input_shape):
        raise ImportRefused(
            f"--feature-names gives {len(features)} names; one input row has {math.prod(signature.input_shape)} values"
        )
    if not isinstance(checked, CheckedOnnx):
        sources = {PROGRAM_FILE: model_path}
        return _manifest(args.name, checked.signature, "", labels, features, sources, model_path.name), sources
    sources = {GRAPH_FILE: model_path}
    if checked.data_file:
        if not is_model_name(checked.data_file) or checked.data_file in {GRAPH_FILE, "manifest.json"}:
            raise ImportRefused(f"external-data file name {checked.data_file!r} cannot be published")
        sources[checked.data_file] = model_path.parent / checked.data_file
    return _manifest(args.name, signature, checked.data_file, labels, features, sources, model_path.name), sources


def _manifest(
    name: str,
    signature: OnnxSignature | Pt2Signature,
    data_file: str,
    labels: tuple[str, ...],
    features: tuple[str, ...],
    sources: dict[str, Path],
    source_name: str,
) -> Manifest:
    pt2 = isinstance(signature, Pt2Signature)
    config = ImportedConfig(
        file=PROGRAM_FILE if pt2 else GRAPH_FILE,
        input_name=signature.input_name,
        input_shape=signature.input_shape,
        output_name=signature.output_name,
        num_classes=signature.num_classes,
        opset=signature.opset,
        data_file=data_file,
        data_sha256=sha256_of(sources[data_file]) if data_file else "",
        arch="pt2" if pt2 else "onnx",
    )
    return Manifest(
        name=name,
        version=0,
        architecture=config,
        input=InputSpec(shape=signature.input_shape, dtype="float32", feature_names=features),
        class_labels=labels,
        training={"imported_from": source_name, "format": "pytorch_torch_export" if pt2 else "onnx"},
    )


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


if __name__ == "__main__":
    sys.exit(main())
