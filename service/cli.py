"""`python -m service` / `invariant-serve`, the composition root: flags override INVARIANT_* variables, which
override defaults, parsed once into one `Settings` value that is handed to the server (service/http/server.py).

Flags are generated from the fields of `Settings`; a bad value (flag or variable) is one line on stderr naming
the flag or variable and its allowed values, exit code 2, as the training CLI does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

import annotated_types
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from service.engine.numerics_env import apply_portable_numerics
from service.http.auth import startup_problem
from service.settings import Settings

PROG = "invariant-serve"
USAGE_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the usage and then the message; every error here is one line instead."""

    def error(self, message: str) -> NoReturn:
        usage_error(message)


def usage_error(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="Serve checkpoints so that every prediction is bitwise independent of the request batch. "
        "Every flag can also be set as an INVARIANT_<NAME> environment variable; flags win.",
    )
    for name, field in Settings.model_fields.items():
        choices = _choices(field)
        default = "unset" if field.default is None else field.default
        help_text = f"{field.description or ''} ({allowed_values(field)}; default: {default})"
        if field.annotation is bool:
            parser.add_argument(flag_of(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag_of(name), default=None, choices=choices, help=help_text)
    return parser


def _alternatives(field: FieldInfo) -> list[tuple[Any, list[Any]]]:
    """(type, constraints) for each non-None alternative of the field's annotation, e.g. `int | None` with
    bounds inside `Annotated[int, Field(ge=1)]` -> [(int, [Ge(1)])]."""
    annotation = field.annotation
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    found = []
    for member in members:
        if member is type(None):
            continue
        constraints = list(field.metadata)
        if hasattr(member, "__metadata__"):  # Annotated[...]: its own FieldInfo carries the bounds
            constraints += [c for info in member.__metadata__ for c in getattr(info, "metadata", [info])]
            found.append((get_args(member)[0], constraints))
        else:
            found.append((member, constraints))
    return found


def _choices(field: FieldInfo) -> list[str] | None:
    """argparse choices when every value the field takes is one of a fixed set (a Literal)."""
    members = [member for member, _ in _alternatives(field)]
    if not all(get_origin(member) is Literal for member in members):
        return None
    return [str(value) for member in members for value in get_args(member)]


def allowed_values(field: FieldInfo) -> str:
    """What a value of this field may be, in words: 'one of cpu, cuda, auto', 'an integer from 1 to 4096'."""
    words = [_describe(member, constraints) for member, constraints in _alternatives(field)]
    return " or ".join(words)


def _describe(kind: Any, constraints: list[Any]) -> str:
    if get_origin(kind) is Literal:
        values = [str(value) for value in get_args(kind)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    noun = {int: "an integer", float: "a number", Path: "a path", bool: "true or false"}.get(kind, "text")
    bounds = {type(c).__name__: getattr(c, type(c).__name__.lower()) for c in constraints if _is_bound(c)}
    if "Ge" in bounds and "Le" in bounds:
        return f"{noun} from {_number(bounds['Ge'])} to {_number(bounds['Le'])}"
    symbols = {"Ge": ">=", "Gt": ">", "Le": "<=", "Lt": "<"}
    limits = [f"{symbols[kind_]} {_number(value)}" for kind_, value in bounds.items()]
    return f"{noun} {' and '.join(limits)}" if limits else noun


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _is_bound(constraint: Any) -> bool:
    return isinstance(constraint, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt)


def _settings_error(exc: ValidationError, flags_given: set[str]) -> str:
    """One line for every invalid value, naming the flag (or the variable it came from) and what is allowed."""
    problems, named = [], set()
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = Settings.model_fields.get(name)
        if field is None:
            problems.append(error["msg"])
            continue
        if name in named:  # a union reports one error per alternative: one line per setting is enough
            continue
        named.add(name)
        where = flag_of(name) if name in flags_given else f"INVARIANT_{name.upper()}"
        if error["type"] == "value_error":  # a validator's own message says what is accepted
            reason = error.get("ctx", {}).get("error", error["msg"])
            problems.append(f"{where} {error['input']!r}: {reason}")
        else:
            problems.append(f"{where} must be {allowed_values(field)}, got {error['input']!r}")
    return "; ".join(problems)


def load_settings(argv: list[str] | None) -> Settings:
    """Settings from flags, then INVARIANT_* variables, then defaults; a bad value exits 2 with one line."""
    given = {key: value for key, value in vars(_parser().parse_args(argv)).items() if value is not None}
    try:
        settings = Settings.from_environment(**given)
    except ValidationError as exc:
        usage_error(_settings_error(exc, set(given)))
    _check_repository(settings.repository, "repository" in given)
    problem = startup_problem(settings) or _model_control_problem(settings)
    if problem:
        usage_error(problem)
    return settings


def _model_control_problem(settings: Settings) -> str | None:
    # Each worker process has its own registry, and a repository API call reaches whichever worker the
    # kernel hands the connection to: with several, workers would serve different models.
    if settings.model_control == "explicit" and settings.workers > 1:
        return (
            f"--model-control explicit needs --workers 1 (got {settings.workers}): a repository API call "
            "reaches one worker process only; use --model-control poll to serve with several workers"
        )
    return None


def _check_repository(repository: Path, from_flag: bool) -> None:
    """A missing folder is a typo, not an empty repository (which a training job may fill later)."""
    where = "--repository" if from_flag else "INVARIANT_REPOSITORY"
    if not repository.exists():
        usage_error(f"{where} {repository}: no such directory (create it, even empty, to serve models added later)")
    if not repository.is_dir():
        usage_error(f"{where} {repository}: not a directory")


def check_placement(settings: Settings) -> None:
    """A device/dtype this machine cannot honour (bfloat16 on CPU, cuda without a GPU) exits 2 with one line.

    Imports torch (for torch.cuda.is_available()), so it runs once the numerics environment is set; this
    module stays torch-free, which also keeps worker processes' start-up (they re-import it) light.
    """
    from service.engine.executor_factory import resolve_placement

    try:
        resolve_placement(settings.device, settings.dtype)
    except ValueError as exc:
        usage_error(str(exc))


@contextmanager
def metrics_folder(workers: int) -> Iterator[None]:
    """With several workers, prometheus-client sums their metrics through files in one folder: this process
    creates it for its workers and removes it when they have exited (one the user set is left alone)."""
    if workers == 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        yield
        return
    folder = tempfile.mkdtemp(prefix="invariant-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    try:
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]


def main(argv: list[str] | None = None, executor_factory: str | None = None) -> None:
    """`executor_factory`: bench only (bench/variable_shape.py): "module:function" of a ServingExecutorFactory."""
    settings = load_settings(argv)
    if settings.portable_numerics:
        # Read by ATen, MKL and oneDNN when they initialise: set here, before the app (and torch) is imported,
        # in this process and in the environment every worker process inherits.
        apply_portable_numerics(os.environ)
    check_placement(settings)
    from service.http.server import serve  # imports torch: only now that the numerics environment is set

    with metrics_folder(settings.workers):
        # With workers, uvicorn's supervisor returns here after SIGTERM/SIGINT and joining them, so the
        # folder is removed; a single worker never creates one.
        serve(settings, executor_factory)
