"""Command line of `python -m training` / `invariant-train`.

Exit codes: 0 trained and wrote a version; 2 bad input (one line on stderr, nothing written); 1 the run
could not finish (diverged, checkpoint not writable; one line on stderr, nothing written).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from models.config import ARCHITECTURES, NORM_KINDS
from training.errors import InputError, TrainingFailed
from training.options import (
    DEFAULT_BN_MOMENTUM,
    DEFAULT_LR,
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_MAX_DATA_MB,
    DEFAULT_MOMENTUM,
    WEIGHT_DECAY_KIND,
    resolve_options,
)

PROG = "invariant-train"


def _kind(optimizer: str) -> str:
    return textwrap.fill(
        f"{optimizer + ':':7}{WEIGHT_DECAY_KIND[optimizer]}", width=100, initial_indent="  ", subsequent_indent=" " * 9
    )


EPILOG = f"""\
weight decay (--weight-decay LAMBDA) is applied by the optimizer, never added to the loss, and only to
weight matrices and conv kernels (not biases or norm parameters):
{_kind("sgd")}
{_kind("adamw")}

same seed and data on the same machine give bitwise identical weights (1 thread, deterministic algorithms).
distributed: torchrun --standalone --nproc-per-node W -m training ARGS (gloo on CPU, nccl on GPU); every rank
trains on its share of each global batch, rank 0 alone writes the checkpoint (plain BatchNorm, same format).
exit codes: 0 version written; 2 bad input (nothing written); 1 run failed (nothing written).
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the message on two lines; we want the single line every error gets."""

    def error(self, message: str) -> NoReturn:
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Train an MLP or CNN and write it as the next version of <repository>/<name>/.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        default="digits",
        metavar="{digits,synthetic,PATH.csv}",
        help="digits: scikit-learn's bundled 8x8 digits (no download); synthetic: a small generated set for "
        "tests; or a CSV (or .tsv) with a header, feature columns (numbers or text) and a label column "
        "(default: digits)",
    )
    data.add_argument("--label-column", metavar="NAME", help="CSV label column (default: the last column)")
    data.add_argument(
        "--task",
        choices=["classification", "regression"],
        help="CSV only; default: regression when the label column holds numbers that look continuous (a "
        "fractional value, or more distinct values than 20 and than rows/5), else classification; a classifier "
        "with more classes than that bound trains only with --task classification",
    )
    add_csv_flags(data)
    data.add_argument(
        "--val-fraction", type=float, default=0.2, metavar="F", help="validation share, in (0, 1) (default: 0.2)"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--arch", choices=list(ARCHITECTURES), default="mlp", help="(default: mlp)")
    model.add_argument("--hidden", metavar="W1,W2,...", help=f"layer widths; {_widths_help()}")
    model.add_argument("--norm", choices=NORM_KINDS, default="batch", help="(default: batch)")
    model.add_argument("--dropout", type=float, default=0.2, metavar="P", help="in [0, 1) (default: 0.2)")
    model.add_argument(
        "--bn-momentum",
        type=float,
        metavar="M",
        help="BatchNorm running-statistics momentum: after every training batch, running_mean <- (1 - M) "
        "running_mean + M batch_mean, and the same for the variance; --norm batch only "
        f"(default: {DEFAULT_BN_MOMENTUM})",
    )
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="(default: sgd)")
    optim.add_argument(
        "--lr", type=float, metavar="ALPHA", help=f"(default: sgd {DEFAULT_LR['sgd']}, adamw {DEFAULT_LR['adamw']})"
    )
    optim.add_argument(
        "--momentum", type=float, metavar="M", help=f"SGD momentum in [0, 1) (default: {DEFAULT_MOMENTUM})"
    )
    optim.add_argument(
        "--weight-decay",
        type=float,
        default=5e-4,
        metavar="LAMBDA",
        help="weight decay of weight matrices and conv kernels; sgd: coupled (lambda*W added to the gradient), "
        "adamw: decoupled (W shrunk by lr*lambda each step); see below (default: 5e-4)",
    )
    optim.add_argument("--epochs", type=int, metavar="N", default=20, help="(default: 20)")
    optim.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        default=64,
        help="the global batch: rows per optimizer step over all processes together; under torchrun each "
        "of the W ranks takes N/W of them (N a multiple of W), so a run gives the same batches whatever W is "
        "(default: 64)",
    )
    optim.add_argument("--seed", type=int, metavar="N", default=0, help="(default: 0)")
    optim.add_argument(
        "--loss",
        dest="loss_function",
        choices=["mse", "huber"],
        help="regression only: mse, or huber (delta 1.0 on the standardized target: quadratic within one "
        "training-split std of the target, linear beyond, so outliers pull less) (default: mse)",
    )
    optim.add_argument(
        "--keep",
        choices=["best", "last"],
        default="last",
        help="which epoch's weights are saved: the last one, or the one with the lowest validation loss "
        "(the manifest's training.kept_epoch says which) (default: last)",
    )
    optim.add_argument(
        "--early-stopping",
        type=int,
        metavar="PATIENCE",
        help="stop once PATIENCE epochs in a row have not lowered the validation loss (default: run every epoch)",
    )
    dist = parser.add_argument_group("distributed (torchrun --nproc-per-node W -m training ...)")
    dist.add_argument(
        "--sync-bn",
        action=argparse.BooleanOptionalAction,
        help="BatchNorm normalizes with, and keeps running statistics of, the global batch of all ranks "
        "(SyncBatchNorm); the checkpoint holds plain BatchNorm either way (default: on when W > 1 and --norm "
        "batch)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--name", help="model name (default: digits, synthetic or the CSV file's stem)")
    output.add_argument(
        "--repository",
        default="./model-repository",
        metavar="DIR",
        help="model repository (default: ./model-repository)",
    )
    output.add_argument(
        "--promote-if-better",
        choices=["val_accuracy", "val_loss"],
        metavar="{val_accuracy,val_loss}",
        help="publish the new version, and label it stable (labels.json: unversioned traffic) only if it beats "
        "the version labelled stable (else the highest) on this run's validation split; otherwise it is "
        "served by number only (default: no labels.json is written, so the highest version serves)",
    )
    return parser


def add_csv_flags(data: argparse._ArgumentGroup) -> None:
    """The CSV reading and preprocessing flags (docs/training-data.md describes them)."""
    data.add_argument(
        "--delimiter", metavar="CHAR", help="CSV cell separator, or 'tab' (default: sniffed; tab for .tsv)"
    )
    data.add_argument("--decimal", metavar="{.,,}", help="decimal mark (default: sniffed, ',' only for ';'/tab files)")
    data.add_argument(
        "--thousands",
        metavar="{none,',',.,space,',_}",
        help="thousands separator inside numbers (default: sniffed from cells such as 1,234.5)",
    )
    data.add_argument("--drop-columns", metavar="A,B", help="CSV columns to ignore (ids, free text)")
    data.add_argument(
        "--categorical",
        metavar="A,B",
        help="columns read as text categories even when they look numeric (zip codes, ids); columns with no "
        "numeric cell are categorical anyway; each category becomes one 0/1 input (one-hot)",
    )
    data.add_argument(
        "--max-categories",
        type=int,
        metavar="N",
        help=f"most distinct values of a categorical column (default: {DEFAULT_MAX_CATEGORIES}, at most 1000)",
    )
    data.add_argument(
        "--missing",
        choices=["refuse", "mean", "median", "constant"],
        help="blank or NA feature cells: refuse (list them all and exit 2), or fill numeric ones with the "
        "training split's mean / median / --fill-value, with a 0/1 is-missing input beside each column that "
        "has blanks (default: refuse)",
    )
    data.add_argument("--fill-value", type=float, metavar="V", help="the fill of --missing constant (default: 0)")
    data.add_argument(
        "--max-data-mb",
        type=int,
        metavar="MB",
        help=f"refuse a CSV larger than this (default: {DEFAULT_MAX_DATA_MB}); it must be a regular file",
    )


def _widths_help() -> str:
    """'mlp: hidden layer widths (default 256,256); cnn: ...', one entry per row of the table."""
    return "; ".join(
        f"{row.name}: {row.widths_meaning} (default {','.join(map(str, row.default_widths))})"
        for row in ARCHITECTURES.values()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (the console script passes it to sys.exit)."""
    try:
        namespace = build_parser().parse_args(argv)
        options = resolve_options(vars(namespace))
        # Imported only now: torch takes seconds to import, and a bad flag should not wait for it.
        from training.report import summary
        from training.run import run_training

        result = run_training(options)
    except InputError as exc:
        return _fail(exc, 2)
    except TrainingFailed as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        # Ctrl-C: one line and the shell's 128 + SIGINT, no traceback. The checkpoint write removes its staging
        # directory (and any directory it created) on the way out, so no version or partial file is left.
        print(f"{PROG}: interrupted; no version was written", file=sys.stderr)
        return 130
    if result is not None:  # None: a torchrun rank other than 0, which writes nothing
        print(summary(result.history, result.kept_epoch))
        print(f"checkpoint: {result.version_dir}")
        if result.promotion is not None:
            print(f"promotion: {result.promotion.summary()}")
    return 0


def _fail(exc: Exception, code: int) -> int:
    # One line, whatever the message held (a path or a value could carry a newline).
    message = " ".join(str(exc).split())
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code
