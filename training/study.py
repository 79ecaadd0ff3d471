"""`python -m training.study --out DIR`: a small grid that checks the lecture notes' claims with this code.

Writes DIR/report.md (tables, figures, and per claim: what the notes predict, what was measured, whether
they agree), DIR/norms.png, DIR/regularization.png, and every trained checkpoint under DIR/runs (each with
its curves.png). Everything is seeded from --seed: the same command on the same machine gives the same
numbers. --quick runs a tiny grid in seconds (what `make test` runs); its numbers are not the study's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.study_figures import norms_figure, regularization_figure
from training.study_regression import (
    REGRESSION_GRID,
    regression_table,
    ridge_baseline,
    train_regression_run,
    write_diabetes,
)
from training.study_runs import (
    MinibatchCounts,
    NormSpread,
    Run,
    first_norm_layer_spread,
    minibatch_dependence,
    train_run,
    write_norm_task,
)

NORMS = ("batch", "layer", "none")
DROPOUTS = ("0", "0.2", "0.5")
WEIGHT_DECAYS = ("0", "5e-4")


@dataclass(frozen=True)
class Scale:
    epochs: int
    hidden: str
    norm_task_rows: int
    small_split_val_fraction: float  # of digits' 1797 rows: the rest is the small training split
    batch_sizes: tuple[int, ...]


FULL = Scale(
    epochs=30, hidden="128,128", norm_task_rows=3000, small_split_val_fraction=0.8, batch_sizes=(2, 8, 32, 128)
)
QUICK = Scale(epochs=2, hidden="16", norm_task_rows=300, small_split_val_fraction=0.8, batch_sizes=(2, 8, 64))


@dataclass(frozen=True)
class Claim:
    title: str
    notes: str  # what the notes predict
    measured: str
    verdict: str  # "agrees", "partly" or "disagrees"


def run_study(out: Path, scale: Scale, seed: int) -> list[Claim]:
    """Train the grid, write the report and figures into `out`; returns the claims with their verdicts."""
    out.mkdir(parents=True, exist_ok=True)
    repository = out / "runs"
    norm_task = write_norm_task(out / "data" / "norm_task.csv", scale.norm_task_rows, seed)
    common = ["--hidden", scale.hidden, "--epochs", str(scale.epochs)]
    norm_runs = {
        (task, norm): train_run(repository, f"{task}-{norm}", data, [*common, "--norm", norm, "--dropout", "0"], seed)
        for task, data in (("digits", "digits"), ("norm-task", str(norm_task)))
        for norm in NORMS
    }
    spreads = {norm: first_norm_layer_spread(norm_runs["norm-task", norm]) for norm in NORMS}
    small = ["--val-fraction", str(scale.small_split_val_fraction), "--norm", "batch"]
    reg_runs = {
        (dropout, decay): train_run(
            repository,
            f"reg-p{dropout}-wd{decay}",
            "digits",
            [*common, *small, "--dropout", dropout, "--weight-decay", decay],
            seed,
        )
        for decay in WEIGHT_DECAYS
        for dropout in DROPOUTS
    }
    diabetes = write_diabetes(out / "data" / "diabetes.csv")
    regression_runs = [
        train_regression_run(repository, diabetes, norm, loss, common, seed) for norm, loss in REGRESSION_GRID
    ]
    ridge = ridge_baseline(diabetes, seed)
    counts = minibatch_dependence(norm_runs["digits", "batch"], scale.batch_sizes, chunk_rows=32)
    (out / "norms.png").write_bytes(norms_figure(norm_runs, spreads, NORMS))
    (out / "regularization.png").write_bytes(regularization_figure(reg_runs, DROPOUTS, WEIGHT_DECAYS))
    claims = [
        *norm_claims(norm_runs, spreads),
        *regularization_claims(reg_runs),
        minibatch_claim(counts),
    ]
    tables = {
        "norms": norms_table(norm_runs, spreads),
        "regularization": regularization_table(reg_runs),
        "minibatch": minibatch_table(counts),
        "regression": regression_table(regression_runs, ridge),
    }
    (out / "report.md").write_text(report_markdown(scale, seed, tables, claims, norm_runs["digits", "batch"]))
    return claims


def norms_table(runs: dict[tuple[str, str], Run], spreads: dict[str, NormSpread]) -> str:
    lines = [
        "| task | norm | train acc | val acc | val loss | row-norm spread after the norm layer |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (task, norm), run in runs.items():
        spread = f"{spreads[norm].output_spread:.4f}" if task == "norm-task" else ""
        lines.append(
            f"| {task} | {norm} | {run.train_accuracy:.4f} | {run.val_accuracy:.4f} | {run.val_loss:.4f} | {spread} |"
        )
    input_spread = spreads["batch"].input_spread
    lines.append(f"\nRow-norm spread (std / mean of ||row||) of the norm task's validation inputs: {input_spread:.4f}.")
    return "\n".join(lines)


def norm_claims(runs: dict[tuple[str, str], Run], spreads: dict[str, NormSpread]) -> list[Claim]:
    layer, batch = spreads["layer"], spreads["batch"]
    # Removed: LayerNorm's rows keep under a tenth of BatchNorm's norm spread; compressed: under half.
    ratio = layer.output_spread / batch.output_spread
    removal = "agrees" if ratio < 0.1 else "partly" if ratio < 0.5 else "disagrees"
    task_layer, task_batch = runs["norm-task", "layer"], runs["norm-task", "batch"]
    worse = [task_layer.val_accuracy < task_batch.val_accuracy, task_layer.val_loss > task_batch.val_loss]
    digits_layer, digits_batch = runs["digits", "layer"], runs["digits", "batch"]
    digits_worse = [
        digits_layer.val_accuracy < digits_batch.val_accuracy,
        digits_layer.val_loss > digits_batch.val_loss,
    ]
    return [
        Claim(
            "LayerNorm removes each row's relative norm; BatchNorm keeps it",
            "LayerNorm standardizes each row, so rows that differ only in norm become alike; BatchNorm standardizes "
            "each column with statistics shared by all rows (running statistics in eval), so rows keep different norms",
            f"spread (std/mean) of row norms after the first norm layer on the norm task: layer "
            f"{layer.output_spread:.4f}, batch {batch.output_spread:.4f}, none {spreads['none'].output_spread:.4f} "
            f"(inputs {batch.input_spread:.4f}): LayerNorm keeps {ratio:.2f} of BatchNorm's spread. Correlation of "
            f"input and output row norms: layer {layer.correlation:.3f}, batch {batch.correlation:.3f}. The Linear "
            "before the norm has a bias, so LayerNorm(Wx + b) is not scale invariant and its learned scale and shift "
            "are per feature: what is left of the norm is compressed, not erased (verdict rule: below 0.1 of "
            "BatchNorm's spread agrees, below 0.5 partly)",
            removal,
        ),
        Claim(
            "So LayerNorm costs accuracy where the norm is the class (the generated norm task)",
            "the relative norm is a significant feature for classification; normalizing it away hurts",
            f"val acc layer {task_layer.val_accuracy:.4f} vs batch {task_batch.val_accuracy:.4f}; "
            f"val loss layer {task_layer.val_loss:.4f} vs batch {task_batch.val_loss:.4f} (one seed; verdict rule: "
            "both worse agrees, one partly)",
            _verdict(worse),
        ),
        Claim(
            "LayerNorm makes a fully-connected network hard to train to a low loss (digits)",
            "in practice an FCN with LayerNorm struggles to bring the loss down",
            f"digits val acc layer {digits_layer.val_accuracy:.4f} vs batch {digits_batch.val_accuracy:.4f}; "
            f"val loss layer {digits_layer.val_loss:.4f} vs batch {digits_batch.val_loss:.4f}; "
            f"train acc layer {digits_layer.train_accuracy:.4f} vs batch {digits_batch.train_accuracy:.4f} "
            "(one seed; verdict rule: both worse agrees, one partly)",
            _verdict(digits_worse),
        ),
    ]


def regularization_table(runs: dict[tuple[str, str], Run]) -> str:
    rows = len(next(iter(runs.values())).split.train)
    lines = [
        f"Training split: {rows} digits rows (BatchNorm MLP); accuracies in eval mode.\n",
        "| dropout p | weight decay | train acc | val acc | gap (train - val) | val loss |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for (dropout, decay), run in runs.items():
        accuracies = f"{run.train_accuracy:.4f} | {run.val_accuracy:.4f}"
        lines.append(f"| {dropout} | {decay} | {accuracies} | {run.gap:.4f} | {run.val_loss:.4f} |")
    return "\n".join(lines)


def regularization_claims(runs: dict[tuple[str, str], Run]) -> list[Claim]:
    plain_decay, decayed = WEIGHT_DECAYS
    decay_cases = [(p, runs[p, plain_decay], runs[p, decayed]) for p in DROPOUTS]
    dropout_cases = [(p, d, runs[DROPOUTS[0], d], runs[p, d]) for d in WEIGHT_DECAYS for p in DROPOUTS[1:]]
    decay_losses = ", ".join(f"{p}: {a.val_loss:.4f} -> {b.val_loss:.4f}" for p, a, b in decay_cases)
    decay_gaps = ", ".join(f"{a.gap:.4f} -> {b.gap:.4f}" for _, a, b in decay_cases)
    dropout_gaps = ", ".join(f"p={p} (decay {d}): {a.gap:.4f} -> {b.gap:.4f}" for p, d, a, b in dropout_cases)
    return [
        Claim(
            f"Weight decay ({decayed}) improves generalization on a small split",
            "penalizing ||W||^2 limits the function's complexity (eq. 5); the optimizer's update multiplies W by "
            "(1 - lr*lambda) (eq. 6)",
            f"val loss without -> with, at dropout {decay_losses}; gap {decay_gaps} "
            "(verdict rule: lower val loss at every dropout agrees, at some partly)",
            _verdict([b.val_loss < a.val_loss for _, a, b in decay_cases]),
        ),
        Claim(
            "Dropout shrinks the generalization gap on a small split",
            "dropout (kept activations scaled by 1/(1-p)) randomly drops units during training, a stochastic "
            "approximation that regularizes",
            f"gap without -> with dropout: {dropout_gaps} (verdict rule: smaller gap for every p agrees, some partly)",
            _verdict([b.gap < a.gap for _, _, a, b in dropout_cases]),
        ),
    ]


def minibatch_table(counts: MinibatchCounts) -> str:
    sizes = ", ".join(map(str, counts.batch_sizes))
    return "\n".join(
        [
            f"{counts.rows} validation rows of the digits BatchNorm model, sent in batches of {sizes} rows.\n",
            "| mode | rows whose label changes across batch sizes | rows whose logits bits change |",
            "|---|---:|---:|",
            f"| train mode, model(batch) (study only) | {counts.train_mode_changed} | |",
            f"| eval, service executor (fixed execution shape) | {counts.eval_changed} | {counts.eval_bits_changed} |",
            f"| eval, plain model(batch) (control) | | {counts.plain_eval_bits_changed} |",
        ]
    )


def minibatch_claim(counts: MinibatchCounts) -> Claim:
    return Claim(
        "BatchNorm in training mode makes a row's prediction depend on its minibatch; running statistics remove that",
        "with batch statistics a prediction depends on the other rows of the minibatch; at test time the running "
        "mean and variance (eq. 4) are used instead",
        f"train mode: {counts.train_mode_changed} of {counts.rows} rows change label across batch sizes; eval "
        f"through the service's executor: {counts.eval_changed} change label, {counts.eval_bits_changed} change "
        f"any bit (plain eval model(batch): {counts.plain_eval_bits_changed} rows change bits)",
        _verdict([counts.train_mode_changed > 0, counts.eval_changed == 0 and counts.eval_bits_changed == 0]),
    )


def _verdict(checks: Sequence[bool]) -> str:
    if all(checks):
        return "agrees"
    return "partly" if any(checks) else "disagrees"


def report_markdown(scale: Scale, seed: int, tables: dict[str, str], claims: list[Claim], digits: Run) -> str:
    verdicts = "\n".join(f"| {claim.title} | **{claim.verdict}** |" for claim in claims)
    details = "\n\n".join(
        f"### {claim.title}\n\n- Notes predict: {claim.notes}.\n- Measured: {claim.measured}.\n"
        f"- Verdict: **{claim.verdict}**."
        for claim in claims
    )
    return f"""# Study: the lecture notes' claims, measured with this code

Reproduce: `python -m training.study --out DIR --seed {seed}` (or `make study`). Grid: MLP hidden {scale.hidden},
{scale.epochs} epochs, SGD lr 0.05 momentum 0.9, batch 64, seed {seed}; every run is an ordinary checkpoint
under `runs/` with its `curves.png`. One thread, deterministic algorithms: the same numbers on the same machine.

## Verdicts

| claim | verdict |
|---|---|
{verdicts}

## Norm choice: digits and a task whose class is the norm of the row

The norm task: {scale.norm_task_rows} rows of 8 features, direction uniform on the sphere, norm uniform in
[1, 2), [2, 3) or [3, 4) by class (`data/norm_task.csv`). No dropout, weight decay 5e-4.

{tables["norms"]}

![norm choice](norms.png)

## Regularization: dropout x weight decay on a small training split

{tables["regularization"]}

![regularization](regularization.png)

## Regression: norm and loss on diabetes

A continuous target (`data/diabetes.csv`), trained as `--task regression`: one output, the target
standardized with the training split's mean and std, no dropout; `--loss huber` is delta 1.0 on that scale.

{tables["regression"]}

## Minibatch dependence

The checkpoint `{digits.version_dir.parent.name}/{digits.version_dir.name}` (digits, BatchNorm, no dropout).

{tables["minibatch"]}

## Claims

{details}
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.study", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where report.md and figures go")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="(default: 0)")
    parser.add_argument("--quick", action="store_true", help="a tiny grid in seconds (the test's)")
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    claims = run_study(arguments.out, QUICK if arguments.quick else FULL, arguments.seed)
    print((arguments.out / "report.md").read_text())
    agreeing = sum(claim.verdict == "agrees" for claim in claims)
    print(f"{len(claims)} claims, {agreeing} agree; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
